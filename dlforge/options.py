"""One options object per stage: defaults and validation in one place (stdlib only).

A stage's options are a dataclass deriving from :class:`Options` whose fields are declared with
:func:`option`: the default, the help text, and the checks (finite, bounds, choices, non-empty).
The Python API and the CLI build the same object, so a bad value gets the same one-line
:class:`~dlforge.errors.InputError` from both, and ``params()`` is what the card records::

    @dataclass
    class TrainOptions(Options):
        epochs: int | None = option(None, "Training epochs (default: the model's).", min=1)
        lr: float | None = option(None, "Learning rate.", min=0, min_open=True)

The CLI reads defaults, choices and help from these fields (:func:`dlforge.cli.common.option_for`),
so nothing is declared twice.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Iterable

from dlforge.errors import InputError


def option(default: Any = MISSING, help: str = "", *, choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
           min: float | None = None, max: float | None = None, min_open: bool = False, max_open: bool = False,
           nonempty: bool = False, flag: str | None = None, cli: bool = True) -> Any:
    """A dataclass field carrying its help text and checks.

    Args:
        default: the default value; lists and dicts are copied per instance.
        help: the CLI help text.
        choices: allowed values (for a tuple field: of each element), or a callable returning them
            (a registry's names, read when validating).
        min, max: numeric bounds, inclusive unless ``min_open`` / ``max_open``. Every number is
            also checked to be finite.
        nonempty: a string or tuple field must not be empty.
        flag: the CLI flag named in errors (default ``--field-name``).
        cli: False for options only the Python API sets.
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_open": min_open, "max_open": max_open,
            "nonempty": nonempty, "flag": flag, "cli": cli}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def option_like(options_cls: type, name: str, **changes: Any) -> Any:
    """A field declared as ``options_cls``'s field ``name`` is (default, help, checks), with ``changes``: one
    declaration for an option two stages share (the pipeline's ``--data`` is training's)."""
    f = next(f for f in fields(options_cls) if f.name == name)
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
    return option(changes.pop("default", default), **{**dict(f.metadata), **changes})


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _describe(f: dataclasses.Field) -> str:
    m = f.metadata
    parts = []
    if m.get("min") is not None:
        parts.append(f"{'>' if m['min_open'] else '>='} {m['min']:g}")
    if m.get("max") is not None:
        parts.append(f"{'<' if m['max_open'] else '<='} {m['max']:g}")
    return "a finite number " + " and ".join(parts) if parts else "a finite number"


def _check_number(f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{flag_of(f)} must be a number, got {value!r}")
    bad = not math.isfinite(value)
    if not bad and m.get("min") is not None:
        bad = value <= m["min"] if m["min_open"] else value < m["min"]
    if not bad and m.get("max") is not None:
        bad = value >= m["max"] if m["max_open"] else value > m["max"]
    if bad:
        raise InputError(f"{flag_of(f)} must be {_describe(f)}, got {value!r}")


def _check_value(f: dataclasses.Field, value: Any) -> None:
    choices = choices_of(f)
    if choices is not None and isinstance(value, str) and value not in choices:
        raise InputError(f"{flag_of(f)}: unknown value {value!r}; expected one of {', '.join(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(f, value)


def parse_key_values(pairs: Iterable[str], what: str) -> dict:
    """``KEY=VALUE`` strings as a dict; values parse as JSON where they can (``3``, ``0.5``, ``[32,64]``),
    else stay strings. ``what`` names the flag or spec in the error."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


class Options:
    """Base of every stage's options dataclass: validates on construction."""

    def __post_init__(self) -> None:
        # every subclass is a dataclass: mypy cannot see it on the base class, hence the ignores below
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(value)
                setattr(self, f.name, value)
            if value is None:
                continue
            if f.metadata.get("nonempty") and isinstance(value, (str, tuple)) and not value:
                raise InputError(f"{flag_of(f)} must not be empty")
            for item in value if isinstance(value, tuple) else (value,):
                if item is not None and not isinstance(item, tuple):
                    _check_value(f, item)
        self.check()

    def check(self) -> None:
        """Checks across fields; subclasses override and raise :class:`InputError`."""

    def params(self) -> dict:
        """The options as JSON-ready values: what the card records."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            out[f.name] = value
        return out

    @classmethod
    def build(cls, options: Options | None = None, **overrides):
        """``options`` with ``overrides`` applied (validated again), or new options from ``overrides``."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        if options is None:
            return cls(**overrides)
        return dataclasses.replace(options, **overrides) if overrides else options  # type: ignore[type-var]


__all__ = ["Options", "choices_of", "dataclass", "flag_of", "option", "option_like", "parse_key_values"]
