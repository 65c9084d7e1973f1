import json

import numpy as np
import pytest
from click.testing import CliRunner

from dlforge.bench import BenchOptions
from dlforge.bench.report import BenchReport, compare, short
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
    rows = report.results
    assert len(rows) == 6 and report.settings["interleaved"]
    assert report.settings["inputs"] == "digits test images"
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
    assert report.settings["inputs"].startswith("random")
    assert [r["batch_size"] for r in report.results] == [1, 2]
    assert report.results[0]["model_bytes"] == 3655033


def test_batch_beyond_a_static_model_is_refused():
    with pytest.raises(InputError, match="static batch of 1; --batch-sizes 8"):
        run_bench([shared_path("onnx-models", "mnist-12.onnx")], batch_sizes=(8,), **QUICK)


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_sizes=(0,)), "--batch-sizes must be a finite number >= 1"),
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
    assert BenchReport.from_json(report).to_json() == report  # --json prints the typed report, and it reads back
    assert BenchReport.from_json(json.loads((out / "bench.json").read_text())).artifacts == [
        str(digits_engines["fp32"].path), str(digits_engines["int8"].path)]
    from dlforge.artifact import open_artifact
    from dlforge.cli.pipeline_cmd import full_reports

    (text,) = full_reports({"bench": open_artifact(out)})  # the pipeline renders the stored report in full
    assert "speedup: median latency of" in text and short(str(digits_engines["int8"].path)) in text
    assert {p.name for p in out.iterdir()} == {"bench.json", "report.md", "latency.png", "card.json"}
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "bench" and card["parent"]["path"] == str(digits_engines["fp32"].path)
    assert card["params"] == BenchOptions(batch_sizes=(1, 4), iterations=5, duration=0.05, rounds=2).params()
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert "| artifact | backend | precision | batch |" in (out / "report.md").read_text()
    compared = CliRunner().invoke(cli, ["bench", "--compare", str(out / "bench.json"), str(out / "bench.json")])
    assert compared.exit_code == 0 and "within noise" in compared.stdout


# -- engines with a restricted batch: bench batches accuracy within their range ------------------
@pytest.fixture(scope="module")
def static_engine(digits_lenet, tmp_path_factory):
    """An ORT engine of an ONNX exported with --static-batch (batch 1)."""
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint

    root = tmp_path_factory.mktemp("static")
    onnx = onnx_from_checkpoint(digits_lenet.path, root / "onnx", dynamic_batch=False)
    return engine_from_onnx(onnx.path, root / "engine", precision="fp32")


@pytest.fixture(scope="module")
def narrow_engine(digits_engines, tmp_path_factory):
    """The fp32 engine with a card saying it accepts batches 1 to 64 (as `dlforge build --max-batch 64`)."""
    import shutil

    path = tmp_path_factory.mktemp("narrow") / "engine"
    shutil.copytree(digits_engines["fp32"].path, path)
    card = json.loads((path / "card.json").read_text())
    card["batch_range"] = [1, 64]
    (path / "card.json").write_text(json.dumps(card))
    return path


def direct_accuracy(onnx_path, x, y) -> float:
    """Top-1 accuracy computed with onnxruntime alone, one sample per call."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    return float((logits.argmax(1) == y).mean())


@pytest.mark.parametrize("which, batch_sizes", [("static", "1"), ("narrow", "1,64")])
def test_accuracy_of_batch_limited_engines_equals_direct(static_engine, narrow_engine, which, batch_sizes):
    from dlforge.data import load_dataset

    path = static_engine.path if which == "static" else narrow_engine
    ds = load_dataset("digits")
    assert len(ds.x_test) > 64  # so a single unbatched call would break the range
    result = CliRunner().invoke(cli, ["bench", str(path), "--accuracy", "--batch-sizes", batch_sizes, "--iterations",
                                      "3", "--duration", "0.02", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    expected = direct_accuracy(path / "model.onnx", ds.x_test, ds.y_test)
    assert expected > 0.8
    assert [r["accuracy"] for r in rows] == [pytest.approx(expected, abs=1e-12)] * len(rows)


@pytest.mark.parametrize("which, batch_sizes, message", [
    ("static", "1,8", "static batch of 1; --batch-sizes 8 cannot run"),
    ("narrow", "8,128", "accepts batches 1 to 64 (its batch range); --batch-sizes 128 is outside it"),
])
def test_batch_size_outside_an_engines_range_exits_2(static_engine, narrow_engine, tmp_path, which, batch_sizes,
                                                      message):
    path = static_engine.path if which == "static" else narrow_engine
    result = CliRunner().invoke(cli, ["bench", str(path), "--batch-sizes", batch_sizes, "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "b").exists()


def test_device_modes_on_an_engine_without_them_are_noted(digits_engines):
    result = CliRunner().invoke(cli, ["bench", str(digits_engines["fp32"].path), "--trt-mode", "compute",
                                      "--cuda-graph", "--batch-sizes", "1", "--iterations", "3", "--duration", "0.02"])
    assert result.exit_code == 0, result.output
    assert "--trt-mode compute and --cuda-graph ignored" in result.stdout
    report = run_bench([digits_engines["fp32"].path], trt_mode="compute", batch_sizes=(1,), **QUICK)
    assert [r["mode"] for r in report.results] == ["end-to-end"]
    assert len(report.notes) == 1 and str(digits_engines["fp32"].path) in report.notes[0]


def test_baseline_must_name_a_target_and_is_checked_before_timing(digits_engines, tmp_path):
    result = CliRunner().invoke(cli, ["bench", str(digits_engines["fp32"].path), "--baseline", "nope",
                                      "--duration", "3600", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--baseline nope is not one of" in result.stderr


def _timed(rounds_a, rounds_b):
    def row(name, rounds):
        lat = {k: float(np.median(rounds)) for k in ("min", "mean", "median", "p90", "p95", "p99", "max")}
        return {"artifact": name, "backend": "ort", "precision": "fp32", "batch_size": 1, "mode": "end-to-end",
                "latency_ms": {**lat, "std": 0.0}, "cov": 4.0, "round_medians_ms": list(rounds),
                "throughput_per_s": 1.0, "iterations": 10}
    return BenchReport(results=[row("a", rounds_a), row("b", rounds_b)], settings={"inputs": "x", "baseline": None})


def test_spread_tells_a_noisy_machine_from_an_unstable_engine():
    """A per-call CoV of 400% (every row on a shared machine) is no verdict. A machine that slows every engine of a
    round alike cancels in the paired ratio; an engine whose own speed moves does not."""
    from dlforge.bench.report import stability_lines, with_ratios

    machine = with_ratios(_timed([1.0, 3.0, 1.1, 1.0], [2.0, 6.0, 2.2, 2.0]))  # round 2: everything 3x slower
    assert all(r["stability"] < 0.01 for r in machine)
    lines = stability_lines(machine)
    assert not any(line.startswith("warning") for line in lines) and "machine is noisy" in lines[0]
    unstable = with_ratios(_timed([1.0, 1.0, 1.0, 1.0], [2.0, 4.0, 2.0, 2.6]))  # b alone moves
    assert all(r["stability"] > 0.4 for r in unstable)  # each judged against the other: both marked
    assert stability_lines(unstable)[0].startswith("warning: 2 row(s) marked !")
    assert "pairing cannot tell these apart" in stability_lines(unstable)[0]  # two engines: either may be at fault
    three = _timed([1.0, 1.0, 1.0, 1.0], [2.0, 4.0, 2.0, 2.6])
    three.results.append({**three.results[0], "artifact": "c", "round_medians_ms": [3.0, 3.0, 3.0, 3.0]})
    rows = with_ratios(three)  # a and c hold still against each other; only b moves
    assert [r["artifact"] for r in rows if r["stability"] > 0.1] == ["a", "b"] or \
        [r["artifact"] for r in rows if r["stability"] > 0.1] == ["b"]
    single = with_ratios(BenchReport(results=_timed([1.0, 3.0], [1.0, 1.0]).results[:1], settings={"inputs": "x"}))
    assert single[0]["stability"] is None and "cannot be told apart" in stability_lines(single)[-1]


def test_force_never_replaces_a_benched_engine(digits_engines, tmp_path):
    """``-o`` naming one of the benched engines (or the artifact holding a benched .onnx file) is refused before
    anything is timed, even with --force, and the engine is left as it was (both were replaced before)."""
    import shutil

    engine = tmp_path / "engine"
    shutil.copytree(digits_engines["fp32"].path, engine)
    before = {p.name: p.read_bytes() for p in engine.iterdir()}
    for benched, out in ((engine, engine), (engine / "model.onnx", engine)):  # the engine, a folder holding one
        result = CliRunner().invoke(cli, ["bench", str(benched), "--iterations", "2", "--duration", "0.01",
                                          "-o", str(out), "--force"])
        assert result.exit_code == 2 and "never replaces an input" in result.output, result.output
        assert {p.name: p.read_bytes() for p in engine.iterdir()} == before
