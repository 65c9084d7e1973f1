"""Attacks, one small class per module, registered in :data:`ATTACKS` by name.

An attack spec names a registered attack and, optionally, its keyword hyper-parameters:
``pgd``, ``pgd:steps=100``, ``square:queries=5000:p_init=0.3``. The audit builds each attack with
:func:`make_attack`; the CLI lists names, what each requires, norms and options from the registry
(:func:`describe`). The same grammar builds the audit's probes from their own registry
(:data:`dlforge.adversarial.probes.base.PROBES`, through :func:`from_spec`).
"""

from __future__ import annotations

import inspect

from dlforge.adversarial.attacks.base import (GRADIENTS, QUERIES, Attack, AttackResult, GradientAttack, QueryAttack,
                                              Target, describe_requires)
from dlforge.errors import InputError
from dlforge.options import parse_key_values
from dlforge.registry import Registry

# every module of this package is discovered (a new attack is a new module, no list to edit)
ATTACKS: Registry[type[Attack]] = Registry("attack", packages=["dlforge.adversarial.attacks"])


def attack_options(cls: type) -> dict:
    """An attack's (or probe's) keyword hyper-parameters and their defaults, read from its ``__init__``."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"pgd:steps=100:seed=1"`` -> ``("pgd", {"steps": 100, "seed": 1})``; values parse as JSON where they can."""
    name, *pairs = [part.strip() for part in spec.split(":")]
    return name, parse_key_values(pairs, f"attack spec {spec!r}")


# Where an option's generic range (ints >= 1, floats > 0) does not fit: (low, high, low inclusive[, high inclusive]).
ZERO_OK = (0, None, True)
GENERIC_RANGES = {"seed": ZERO_OK, "target": ZERO_OK}


def check_option(spec: str, cls: type, name: str, value, kind: str = "attack"):
    """``value`` for option ``name`` of ``cls`` (an attack, a probe, a detector), of the type its signature declares
    and within its range (the generic ranges, or the class's ``option_ranges``)."""
    import math

    param = inspect.signature(cls.__init__).parameters[name]
    annotation = param.annotation  # a string under postponed annotations, else a type
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = {part.strip() for part in text.split("|")}
    if not kinds & {"bool", "int", "float", "str"}:  # no annotation dlforge can check: the value as given
        return value
    if value is None and "None" in kinds:
        return value
    wrong = InputError(f"{kind} {spec!r}: {name}={value!r} is not {' or '.join(sorted(kinds - {'None'}))} "
                       f"(default {param.default!r})")
    if "bool" in kinds:
        if not isinstance(value, bool):
            raise wrong
        return value
    if "int" in kinds:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
    elif "float" in kinds:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise wrong
        value = float(value)
    elif "str" in kinds:
        if not isinstance(value, str):
            raise wrong
        return value
    low, high, inclusive, *rest = {**GENERIC_RANGES, **getattr(cls, "option_ranges", {})}.get(
        name, (1, None, True) if "int" in kinds else (0, None, False))
    high_inclusive = rest[0] if rest else True
    if (value < low if inclusive else value <= low) or (
            high is not None and (value > high if high_inclusive else value >= high)):
        bound = f"{'>=' if inclusive else '>'} {low:g}" + (
            f" and {'<=' if high_inclusive else '<'} {high:g}" if high is not None else "")
        raise InputError(f"{kind} {spec!r}: {name}={value!r} is out of range (must be {bound})")
    return value


def make_attack(spec: str, **defaults) -> Attack:
    """Build the attack a spec names, every option type- and range-checked.

    ``defaults`` (``steps``, ``queries``, ``seed`` from the audit's options) apply only where the attack lists
    the option in ``budget_options`` (``--pgd-steps`` is PGD's step count, not FAB's or CW's) or it is
    ``seed``, and the spec does not set it; every other option keeps the attack's own default. The attack's
    effective settings are kept as ``attack.settings`` for the report."""
    return from_spec(ATTACKS, spec, **defaults)


def from_spec(registry: Registry, spec: str, **defaults):
    """The entry of ``registry`` a spec ``name[:key=value...]`` names, built with its checked options
    (:func:`make_attack`'s rules; a probe's spec follows the same grammar)."""
    name, settings = parse_spec(spec)
    cls = registry.get(name)
    known = attack_options(cls)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise InputError(f"{registry.kind} {name!r} has no option {unknown[0]!r}; its options: "
                         f"{', '.join(f'{k}={v!r}' for k, v in known.items()) or 'none'}")
    takes = {"seed", *getattr(cls, "budget_options", ())}
    kwargs = {k: v for k, v in defaults.items() if k in known and k in takes and v is not None}
    kwargs.update({k: check_option(spec, cls, k, v, registry.kind) for k, v in settings.items()})
    try:
        made = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{registry.kind} {spec!r}: {exc}") from exc
    made.settings = {**known, **kwargs}
    return made


def describe(registry: Registry = ATTACKS) -> list[dict]:
    """Name, what it requires, norm, summary and options of every entry of ``registry`` (attacks, or probes)."""
    out = []
    for name, cls in registry.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": name, "kind": registry.kind, "requires": describe_requires(cls.requires),
                    "norm": cls.norm, "summary": doc[0] if doc else "", "options": attack_options(cls)})
    return out


__all__ = ["ATTACKS", "GRADIENTS", "QUERIES", "Attack", "AttackResult", "GradientAttack", "QueryAttack", "Target",
           "attack_options", "check_option", "describe", "from_spec", "make_attack", "parse_spec"]
