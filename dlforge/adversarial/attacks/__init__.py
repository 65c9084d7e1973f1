"""Attacks, one small class per module, registered in :data:`ATTACKS` by name.

An attack spec names a registered attack and, optionally, its keyword hyper-parameters:
``pgd``, ``pgd:steps=100``, ``square:queries=5000:p_init=0.3``. The audit builds each attack with
:func:`make_attack`; the CLI lists names, kinds, norms and options from the registry
(:func:`describe_attacks`).
"""

from __future__ import annotations

import inspect

from dlforge.adversarial.attacks.base import Attack, GradientAttack, Probe, QueryAttack, QueryResult
from dlforge.errors import InputError
from dlforge.options import parse_key_values
from dlforge.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack", [
    "dlforge.adversarial.attacks.fgsm",
    "dlforge.adversarial.attacks.pgd",
    "dlforge.adversarial.attacks.square",
    "dlforge.adversarial.attacks.apgd",
    "dlforge.adversarial.attacks.autoattack",
    "dlforge.adversarial.attacks.cw",
    "dlforge.adversarial.attacks.fab",
    "dlforge.adversarial.probes.fooling",
    "dlforge.adversarial.probes.ood",
    "dlforge.adversarial.probes.substitute",
    "dlforge.adversarial.probes.patch",
    "dlforge.adversarial.probes.physical",
])


def attack_options(cls: type[Attack]) -> dict:
    """An attack's keyword hyper-parameters and their defaults, read from its ``__init__``."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"pgd:steps=100:seed=1"`` -> ``("pgd", {"steps": 100, "seed": 1})``; values parse as JSON where they can."""
    name, *pairs = [part.strip() for part in spec.split(":")]
    return name, parse_key_values(pairs, f"attack spec {spec!r}")


def make_attack(spec: str, **defaults) -> Attack:
    """Build the attack a spec names. ``defaults`` (e.g. ``steps``, ``queries``, ``seed`` from the
    audit's options) apply where the attack takes them and the spec does not set them."""
    name, settings = parse_spec(spec)
    cls = ATTACKS.get(name)
    known = attack_options(cls)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise InputError(f"attack {name!r} has no option {unknown[0]!r}; its options: "
                         f"{', '.join(f'{k}={v!r}' for k, v in known.items()) or 'none'}")
    if cls.kind == "probe":  # the audit's --pgd-steps and --square-queries are attack budgets, not a probe's
        defaults = {k: v for k, v in defaults.items() if k == "seed"}
    kwargs = {k: v for k, v in defaults.items() if k in known and v is not None}
    kwargs.update(settings)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"attack {spec!r}: {exc}") from exc


def describe_attacks() -> list[dict]:
    """Name, kind, norm, summary and options of every registered attack (for help and reports)."""
    out = []
    for name, cls in ATTACKS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": name, "kind": cls.kind, "norm": cls.norm, "summary": doc[0] if doc else "",
                    "options": attack_options(cls)})
    return out


__all__ = ["ATTACKS", "Attack", "GradientAttack", "Probe", "QueryAttack", "QueryResult", "attack_options", "describe_attacks",
           "make_attack", "parse_spec"]
