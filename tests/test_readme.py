"""README.md's "A tour of the CLI" is generated from real runs (tools/readme_tour.py) and must not be stale.

Runs the tour once (about two minutes on two cores, digits only), then checks the README against it,
and checks that deliberately altered copies of the README are reported as stale while changed numbers
are not.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _load_tour():
    spec = importlib.util.spec_from_file_location("readme_tour", ROOT / "tools" / "readme_tour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tour = _load_tour()


@pytest.fixture(scope="module")
def fresh_block():
    transcript, seconds = tour.run_tour()
    return tour.render(transcript, seconds)


def _block(text: str) -> str:
    return tour.split_readme(text)[1]


def test_readme_tour_is_up_to_date(fresh_block):
    diff = tour.stale_diff(README.read_text(encoding="utf-8"), fresh_block)
    assert not diff, f"README.md's CLI tour is stale; run `python tools/readme_tour.py --write`:\n{diff}"


def _altered(pattern: str, repl: str) -> str:
    text = README.read_text(encoding="utf-8")
    head, block, tail = tour.split_readme(text)
    changed, n = re.subn(pattern, repl, block, count=1, flags=re.MULTILINE)
    assert n == 1, f"the README's tour has no line matching {pattern!r}"
    return head + changed + tail


@pytest.mark.parametrize("pattern, repl", [
    (r"^dbn .*\n", ""),                                             # a model fewer
    (r"^\[pass\] model outputs logits", "[ok] model outputs logits"),  # a check label changed
    (r"^Error: unknown model", "Error: no such model"),               # a message reworded
    (r"  verdict$", "  verdict  note"),                               # a new column
    (r"^\$ echo \$\?\n2$", "$ echo $?\n2\nextra line"),               # an extra line
])
def test_altered_readme_is_stale(fresh_block, pattern, repl):
    assert tour.stale_diff(_altered(pattern, repl), fresh_block)


def test_changed_numbers_and_widths_are_not_stale(fresh_block):
    text = _altered(r"test accuracy \d\.\d+", "test accuracy 0.123456")
    text = _altered(r"sha256 [0-9a-f]+", "sha256 0123abcdef99")
    text = text.replace("0.9", "0.1").replace("    ", "  ")
    # the unaltered README is current (test above); these changes only touch numbers and spacing
    assert not tour.stale_diff(text, fresh_block)


def test_check_and_write_on_a_readme_path(fresh_block, tmp_path, monkeypatch, capsys):
    """``--check --readme PATH`` exits 1 with a diff on a stale copy, 0 on a current one; ``--write`` fixes it."""
    transcript = fresh_block.split("```console\n", 1)[1].rsplit("```", 1)[0]
    monkeypatch.setattr(tour, "run_tour", lambda log=None: (transcript, 100.0))
    stale = tmp_path / "README.md"
    stale.write_text(_altered(r"^dbn .*\n", ""), encoding="utf-8")
    assert tour.main(["--check", "-q", "--readme", str(stale)]) == 1
    assert "\n+dbn " in capsys.readouterr().out  # the diff adds the missing model back
    assert tour.main(["--write", "-q", "--readme", str(stale)]) == 0
    assert tour.main(["--check", "-q", "--readme", str(stale)]) == 0
    assert _block(stale.read_text(encoding="utf-8")) == tour.render(transcript, 100.0)


def test_normalization():
    norm = tour.normalize
    assert norm("lenet/engine-ort-int8  ort  int8   64   1.0937   17.4671   15005  130.6%!   1.36x  0.9136") == \
        ["lenet/engine-ort-int<n> ort int<n> <n> <n> <n> <n> <n>% <n>x <n>"]
    assert norm("row sums -7.01..-2.17, max abs diff 6.68e-06") == ["row sums <n>..<n>, max abs diff <n>"]
    assert norm("payload    model.onnx (144.1 KiB, sha256 d3e710e642bc)") == ["payload model.onnx (<n> KiB, sha<n> <hex>)"]
    assert norm("warning: 2 row(s) marked ! moved by more than 10% against another engine") == []
    assert norm("note: round medians moved by up to 40% but together across the engines") == []
    assert norm("fp32  0.03  chosen") == norm("fp32  0.04  slower")
    assert norm("[pass] a check") != norm("[FAIL] a check")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set up (two commands)", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in section.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and "dlforge pipeline lenet --data digits" in commands[0], commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1] in ci_lines, f".ci/run does not run the README's test command {commands[1]!r}"
    assert commands[1].endswith('pytest -m "not slow"'), commands[1]  # the README's command is the fast tier
    assert ".venv/bin/python -m pytest -m slow" in ci_lines[ci_lines.index(commands[1]) + 1:]  # CI then runs the rest
