"""``dlforge audit --per-sample``: samples.jsonl agrees with the report's rows, record by record."""

import json
from collections import defaultdict

import numpy as np
from click.testing import CliRunner

from dlforge.cli import cli


def test_per_sample_records_add_up_to_the_rows(digits_engines, tmp_path):
    out = tmp_path / "audit"
    args = ["audit", str(digits_engines["fp32"].path), str(digits_engines["int8"].path), "--attacks", "fgsm,square",
            "--eps", "0,0.2", "--samples", "40", "--start", "10", "--square-queries", "50", "--per-sample",
            "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "audit.json").read_text())
    lines = (out / "samples.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert report["per_sample"] == {"file": "samples.jsonl", "version": 1, "count": len(records)}
    assert len(records) == 40 * len(report["rows"])
    groups = defaultdict(list)
    for r in records:
        assert r["v"] == 1 and 10 <= r["sample"] < 50
        groups[r["attack"], r["eps"], r["route"], r["engine"]].append(r)
    for row in report["rows"]:
        group = groups[row["attack"], row["eps"], row["route"], row["target"]]
        assert sorted(r["sample"] for r in group) == list(range(10, 50))
        assert np.mean([r["robust"] for r in group]) == row["robust_accuracy"]
        assert max(r["linf"] for r in group) <= row["eps"] + 1e-6
        assert all(r["robust"] == (r["prediction"] == r["label"] == r["clean_prediction"]) for r in group)
        if row["route"] == "query":
            assert np.mean([r["queries"] for r in group]) == row["queries_per_sample"]
        else:
            assert all(r["queries"] is None for r in group)
    moved = [r for r in records if r["eps"] == 0.2 and r["attack"] == "fgsm"]
    assert all(abs(r["linf"] - 0.2) < 1e-5 for r in moved if r["l2"] > 0)  # FGSM steps every pixel it can


def test_per_sample_needs_an_output_and_start_must_be_inside_the_test_split(digits_engines, tmp_path):
    base = ["audit", str(digits_engines["fp32"].path), "--attacks", "fgsm", "--eps", "0.1", "--samples", "5"]
    result = CliRunner().invoke(cli, base + ["--per-sample"])
    assert result.exit_code == 2 and "give -o DIR" in result.stderr
    result = CliRunner().invoke(cli, base + ["--start", "100000", "-o", str(tmp_path / "a")])
    assert result.exit_code == 2 and "none from --start 100000" in result.stderr
    assert not (tmp_path / "a").exists()
