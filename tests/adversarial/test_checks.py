"""The audit's sanity checks: pass, fail and n/a are three different answers."""

from __future__ import annotations

import numpy as np

from dlforge.adversarial import checks


def _row(attack, route, eps, acc, target="e", norm="linf"):
    return {"attack": attack, "route": route, "eps": eps, "robust_accuracy": acc, "target": target, "norm": norm}


def test_masking_check_is_na_without_a_gradient_attack_to_compare():
    c = checks.masking_check([_row("square", "query", 0.3, 0.1)])
    assert c["status"] == "n/a" and c["passed"] is None


def test_masking_check_flags_a_query_attack_beating_gradients():
    rows = [_row("pgd", "transfer", 0.3, 0.8), _row("square", "query", 0.3, 0.1)]
    assert checks.masking_check(rows)["status"] == "fail"
    rows = [_row("pgd", "transfer", 0.3, 0.05), _row("square", "query", 0.3, 0.1)]
    assert checks.masking_check(rows)["status"] == "pass"


def test_monotone_check_is_na_on_single_eps_curves():
    assert checks.monotone_check([_row("pgd", "transfer", 0.3, 0.1)])["status"] == "n/a"
    rising = [_row("pgd", "transfer", 0.1, 0.2), _row("pgd", "transfer", 0.3, 0.5)]
    assert checks.monotone_check(rising)["status"] == "fail"


def test_full_range_and_gradient_checks_say_na_with_nothing_to_judge():
    assert checks.full_range_check(None)["status"] == "n/a"
    assert checks.gradient_check(None)["status"] == "n/a"
    assert checks.gradient_check(np.zeros((4, 1, 2, 2)))["status"] == "fail"
    assert checks.full_range_check(("pgd", 1.0, 0.5))["status"] == "fail"


def test_logits_check_fails_on_probabilities():
    p = np.full((3, 4), 0.25)
    assert checks.logits_check(p)["status"] == "fail"
    assert checks.logits_check(np.log(p))["status"] == "pass"
