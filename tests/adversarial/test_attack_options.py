"""Attack options: each attack keeps its own budget unless told otherwise, and every option is type- and
range-checked before any work (exit 2), so a typo cannot turn an attack off and still pass a gate."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dlforge.adversarial.audit import AuditOptions
from dlforge.cli import cli
from dlforge.errors import InputError


def test_pgd_steps_is_pgds_budget_and_other_attacks_keep_their_own():
    options = AuditOptions(pgd_steps=7, square_queries=33)
    assert options.attack("pgd").steps == 7 and options.attack("pgd-l2").steps == 7
    assert options.attack("square").queries == 33
    fab_t, cw = options.attack("fab-t"), options.attack("cw-l2")
    assert fab_t.steps == 100 and fab_t.settings["steps"] == 100  # AutoAttack's FAB-T, not FAB-T-7
    assert cw.steps == 1000 and cw.settings["steps"] == 1000
    assert options.attack("fab-t:steps=5").steps == 5  # the spec still sets it
    assert options.attack("apgd-ce").settings["iterations"] == 100


@pytest.mark.parametrize("spec, message", [
    ("pgd:rel_stepsize=-1", "rel_stepsize=-1.0 is out of range (must be > 0)"),
    ("pgd:rel_stepsize=0", "rel_stepsize=0.0 is out of range"),
    ("pgd:random_start=banana", "random_start='banana' is not bool"),
    ("pgd:steps=2.5", "steps=2.5 is not int"),
    ("pgd:steps=0", "steps=0 is out of range (must be >= 1)"),
    ("square:p_init=1.5", "p_init=1.5 is out of range (must be > 0 and <= 1)"),
    ("fooling:confidence=1.5", "confidence=1.5 is out of range"),
    ("cw-l2:confidence=-1", "confidence=-1.0 is out of range (must be >= 0)"),
])
def test_bad_attack_options_are_refused_with_the_option_named(spec, message):
    with pytest.raises(InputError) as info:
        AuditOptions().attack(spec)
    assert message in str(info.value)


def test_cli_refuses_a_broken_attack_before_any_work_and_rows_carry_the_settings(digits_engines, tmp_path):
    engine = str(digits_engines["fp32"].path)
    bad = CliRunner().invoke(cli, ["audit", engine, "--attacks", "pgd:rel_stepsize=-1", "--eps", "0.2",
                                   "--fail-under", "0.2:0.5", "-o", str(tmp_path / "audit")])
    assert bad.exit_code == 2 and "rel_stepsize=-1.0 is out of range" in bad.output
    assert not (tmp_path / "audit").exists()
    ok = CliRunner().invoke(cli, ["audit", engine, "--attacks", "fgsm,pgd:steps=3", "--eps", "0.2", "--samples", "20",
                                  "--json"])
    assert ok.exit_code == 0, ok.output
    rows = json.loads(ok.stdout)["rows"]
    pgd = next(r for r in rows if r["attack"] == "pgd")
    assert pgd["settings"]["steps"] == 3 and pgd["settings"]["random_start"] is True
