"""Registries: the extension points of dlforge (stdlib only).

Attacks, the audit's probes, input-filter detectors, dataset defences, backends, datasets, data formats
and artifact kinds each have one registry. Adding one is one module plus a registration::

    from dlforge.adversarial.attacks import ATTACKS

    @ATTACKS.register("my-attack")
    class MyAttack(GradientAttack):
        ...

The CLI's help, the audit and the reports read names, summaries and options from the registry.
Built-in entries are registered by importing the modules listed at construction, or every public
module of the packages named there (discovery: a new attack is a new module in the package, no list
to edit); lazily, on the first look-up, so ``import dlforge`` stays light. Third-party packages can
register through the entry-point group ``dlforge.<registry name>``.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata
from typing import Callable, Generic, Iterable, TypeVar

from dlforge.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to implementations, filled by ``@registry.register(name)``."""

    def __init__(self, kind: str, builtin_modules: Iterable[str] = (), *, packages: Iterable[str] = ()):
        self.kind = kind
        self._builtin_modules = tuple(builtin_modules)
        self._packages = tuple(packages)
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name can be registered once."""

        def decorate(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = obj
            if getattr(obj, "name", None) in (None, ""):
                try:
                    setattr(obj, "name", name)
                except (AttributeError, TypeError):
                    pass
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for package in self._packages:
            import_package_modules(package)
        for entry in metadata.entry_points(group=f"dlforge.{self.kind.replace(' ', '_')}s"):
            entry.load()

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(sorted(self._entries))

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an :class:`InputError` listing the names otherwise."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}") from None

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())


def import_package_modules(package: str) -> list[str]:
    """Import every public module (no leading underscore) of ``package``: discovery of what registers itself."""
    pkg = importlib.import_module(package)
    names = [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    for name in names:
        importlib.import_module(name)
    return names
