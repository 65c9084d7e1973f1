"""Attacks, one small class per file. ``make_attack(name, **settings)`` builds one by name."""

from __future__ import annotations

from dlforge.adversarial.attacks.base import Attack, GradientAttack, QueryAttack, QueryResult
from dlforge.errors import InputError

ATTACK_NAMES = ("fgsm", "pgd", "pgd-l2", "square")


def make_attack(name: str, *, pgd_steps: int = 40, square_queries: int = 1000, seed: int = 0) -> Attack:
    if name == "fgsm":
        from dlforge.adversarial.attacks.fgsm import FGSM

        return FGSM()
    if name in ("pgd", "pgd-l2"):
        from dlforge.adversarial.attacks.pgd import PGD

        return PGD(norm="l2" if name == "pgd-l2" else "linf", steps=pgd_steps, seed=seed)
    if name == "square":
        from dlforge.adversarial.attacks.square import Square

        return Square(queries=square_queries, seed=seed)
    raise InputError(f"unknown attack {name!r}; expected one of {', '.join(ATTACK_NAMES)}")


__all__ = ["ATTACK_NAMES", "Attack", "GradientAttack", "QueryAttack", "QueryResult", "make_attack"]
