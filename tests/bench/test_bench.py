import json

import numpy as np
import pytest
from click.testing import CliRunner

from dlforge.bench.report import compare
from dlforge.bench.runner import run_bench
from dlforge.bench.stats import summarize, time_calls
from dlforge.cli import cli
from dlforge.errors import InputError
from tests.helpers import shared_path

QUICK = dict(iterations=5, duration=0.05, rounds=2, warmup=2, warmup_time=0.0)


def test_summarize_matches_numpy():
    a = np.random.default_rng(0).exponential(1.0, 1001)
    s = summarize(a)
    assert s["median"] == pytest.approx(np.median(a)) and s["p99"] == pytest.approx(np.percentile(a, 99))
    assert s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]


def test_time_calls_honours_iterations_and_duration():
    assert len(time_calls(lambda: None, iterations=37)) == 37
    import time

    start = time.perf_counter()
    lat = time_calls(lambda: None, iterations=1, duration_s=0.05)
    assert time.perf_counter() - start >= 0.05 and len(lat) > 1


def test_interleaved_engines_and_torch_with_accuracy(digits_engines, digits_lenet):
    report = run_bench([digits_engines["fp32"].path, digits_engines["int8"].path], torch_checkpoint=digits_lenet.path,
                       batch_sizes=(1, 8), accuracy=True, **QUICK)
    rows = report["results"]
    assert len(rows) == 6 and report["settings"]["interleaved"]
    assert report["settings"]["inputs"] == "digits test images"
    for r in rows:
        assert r["iterations"] >= QUICK["iterations"]
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p99"] <= lat["max"]
        assert r["throughput_per_s"] > 0 and r["load_ms"] > 0 and r["first_run_ms"] > 0
    by = {(r["backend"], r["precision"]): r for r in rows if r["batch_size"] == 1}
    # accuracy measured by bench equals what the build measured on the same held-out set
    assert by[("ort", "fp32")]["accuracy"] == pytest.approx(
        digits_engines["fp32"].card.sections["evaluation"]["accuracy"])
    assert by[("torch", "fp32 (eager)")]["accuracy"] == pytest.approx(
        digits_lenet.card.sections["metrics"]["test_accuracy"])


def test_third_party_model_without_card_gets_random_inputs_and_dynamic_batch():
    report = run_bench([shared_path("onnx-models", "mobilenetv2-12-int8.onnx")], batch_sizes=(1, 2), **QUICK)
    assert report["settings"]["inputs"].startswith("random")
    assert [r["batch_size"] for r in report["results"]] == [1, 2]
    assert report["results"][0]["model_bytes"] == 3655033


def test_batch_beyond_a_static_model_is_refused():
    with pytest.raises(InputError, match="static batch of 1; --batch-sizes 8"):
        run_bench([shared_path("onnx-models", "mnist-12.onnx")], batch_sizes=(8,), **QUICK)


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_sizes=(0,)), "must be positive"),
    (dict(iterations=0, duration=0.0), "both zero"),
])
def test_bad_settings(digits_engines, kwargs, message):
    with pytest.raises(InputError, match=message):
        run_bench([digits_engines["fp32"].path], **{**QUICK, **kwargs})


def test_not_an_artifact(tmp_path):
    with pytest.raises(InputError, match="neither an engine/onnx artifact directory nor an .onnx file"):
        run_bench([tmp_path], **QUICK)


def _report(median, cov):
    lat = {k: median for k in ("min", "mean", "median", "p90", "p95", "p99", "max")}
    return {"results": [{"artifact": "runs/x/engine", "backend": "ort", "precision": "fp32", "batch_size": 1,
                         "latency_ms": {**lat, "std": median * cov}, "cov": cov}]}


@pytest.mark.parametrize("new_median, cov, verdict", [
    (1.01, 0.01, "within noise"),
    (1.15, 0.10, "within noise"),   # 15% slower, but the runs vary by 10%: not a regression
    (1.50, 0.01, "regression"),
    (0.70, 0.01, "improvement"),
])
def test_compare_respects_spread(new_median, cov, verdict):
    assert compare(_report(1.0, cov), _report(new_median, cov))[0]["verdict"] == verdict


def test_cli_writes_report_json_markdown_and_plot(digits_engines, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(digits_engines["fp32"].path), str(digits_engines["int8"].path),
                                      "--batch-sizes", "1,4", "--iterations", "5", "--duration", "0.05",
                                      "--rounds", "2", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1 and "cpu" in report["env"]
    assert {p.name for p in out.iterdir()} == {"bench.json", "report.md", "latency.png", "card.json"}
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert "| artifact | backend | precision | batch |" in (out / "report.md").read_text()
    compared = CliRunner().invoke(cli, ["bench", "--compare", str(out / "bench.json"), str(out / "bench.json")])
    assert compared.exit_code == 0 and "within noise" in compared.stdout


def test_cli_batch_size_zero_is_one_line_error(digits_engines):
    result = CliRunner().invoke(cli, ["bench", str(digits_engines["fp32"].path), "--batch-sizes", "0"])
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
