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


def test_masking_check_judges_each_gradient_route_on_its_own():
    """The ResNet-20 INT8 case: Square 0.05 on the engine, transfer PGD 0.00 (sound), engine-graph PGD 0.50
    (broken gradients). The sound route must not vouch for the broken one."""
    rows = [_row("pgd", "transfer", 0.03, 0.0), _row("pgd", checks.ENGINE_ROUTE, 0.03, 0.5),
            _row("square", "query", 0.03, 0.05)]
    c = checks.masking_check(rows)
    assert c["status"] == "fail" and "white-box (engine) pgd 0.5000" in c["detail"]
    rows[1]["robust_accuracy"] = 0.0
    assert checks.masking_check(rows)["status"] == "pass"
    other = [*rows[:2], _row("square", "query", 0.03, 0.05, target="other")]  # another engine: nothing to compare
    assert checks.masking_check(other)["status"] == "n/a"


def test_negative_transfer_gap_flags_suspect_engine_gradients():
    rows = [_row("pgd", "transfer", 0.03, 0.0), _row("pgd", checks.ENGINE_ROUTE, 0.03, 0.5)]
    gaps = checks.transfer_gaps(rows, 0.05)
    assert gaps[0]["gap"] == -0.5 and gaps[0]["suspect"] and not gaps[0]["large"]
    assert checks.transfer_gap_check(gaps, 0.05)["status"] == "pass"  # transfer does not overstate here
    c = checks.engine_gradient_check(gaps, 0.05)
    assert c["status"] == "fail" and "suspect" in c["detail"]
    rows[1]["robust_accuracy"] = 0.03  # within the bar
    assert checks.engine_gradient_check(checks.transfer_gaps(rows, 0.05), 0.05)["status"] == "pass"
    assert checks.engine_gradient_check([], 0.05)["status"] == "n/a"


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


def _report(rows, found):
    from dlforge.adversarial.records import AuditReport

    return AuditReport(target=["e"], engines=[], source=None, crafted_on=None, data="digits", samples=1,
                       value_range=[0.0, 1.0], clean_accuracy=1.0, settings={}, rows=rows, checks=found)


def test_fail_under_gates_match_the_norm_as_well_as_eps():
    from dlforge.adversarial.report import gate, parse_fail_under
    from dlforge.errors import InputError

    report = _report([_row("pgd", "transfer", 0.5, 0.1), _row("pgd-l2", "transfer", 0.5, 0.9, norm="l2")], [])
    audited = {"linf": (0.5,), "l2": (0.5,)}
    assert gate(report, parse_fail_under(("l2:0.5:0.5",), audited)) == []  # the L-inf row at 0.5 is not an L2 row
    failed = gate(report, parse_fail_under(("0.5:0.5",), audited))
    assert len(failed) == 1 and "linf eps 0.5" in failed[0]
    try:
        parse_fail_under(("l2:0.3:0.5",), audited)
    except InputError as exc:
        assert "l2 eps 0.3 is not among the audited --eps-l2" in str(exc)
    else:
        raise AssertionError("an L2 gate at an eps the audit does not run must be refused")


def test_a_failed_check_that_says_the_attack_under_reports_fails_the_gate():
    from dlforge.adversarial.report import gate

    report = _report([_row("pgd", "transfer", 0.3, 0.96)],
                     [checks.full_range_check(("pgd", 1.0, 0.9))])  # a broken attack: 0.9 at the full range
    assert any("not trustworthy" in f for f in gate(report, [("linf", 0.3, 0.5)]))
    assert gate(report, []) == []  # no gate asked for: the report alone says FAIL


def test_held_out_images_never_overlap_the_audited_slice_whatever_the_start():
    from types import SimpleNamespace

    from dlforge.adversarial.audit import AuditOptions, AuditRun

    test = np.arange(40, dtype=np.float32)[:, None]
    for start in (0, 5, 30):
        options = AuditOptions(start=start, samples=10)
        audited = test[start:start + 10]
        run = AuditRun(options, [], audited, np.zeros(len(audited), np.int64), SimpleNamespace(x_test=test))
        held = run.held_out()
        assert not set(held[:, 0].tolist()) & set(audited[:, 0].tolist())
        assert len(held) == 40 - len(audited)
        assert len(run.held_out(7)) == 7


def test_checks_say_na_when_no_point_was_right_to_begin_with():
    """A model right on no audited point has robust accuracy 0 under any attack: nothing to compare, never pass."""
    rows = [{**_row("pgd", "transfer", 0.03, 0.0), "clean_accuracy": 0.0},
            {**_row("pgd", checks.ENGINE_ROUTE, 0.03, 0.0), "clean_accuracy": 0.0},
            {**_row("square", "query", 0.03, 0.0), "clean_accuracy": 0.0}]
    assert checks.masking_check(rows)["status"] == "n/a"
    gaps = checks.transfer_gaps(rows, 0.05)
    assert checks.transfer_gap_check(gaps, 0.05)["status"] == "n/a"
    assert checks.engine_gradient_check(gaps, 0.05)["status"] == "n/a"
    assert checks.full_range_check(("pgd", 1.0, None))["status"] == "n/a"
