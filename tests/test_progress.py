"""One progress protocol for every stage: a Progress given to train, build, bench, audit and the pipeline hears
their stages, lines, epochs and bars; True/False/None keep meaning bars always/never/on a terminal."""

from __future__ import annotations

import contextlib

import pytest

from dlforge.progress import LineProgress, Progress, as_progress


class Recorder(Progress):
    def __init__(self):
        super().__init__(bars=False)
        self.calls: list[tuple[str, object]] = []

    def stage(self, name):
        self.calls.append(("stage", name))

    def message(self, line):
        self.calls.append(("message", line))

    def epoch(self, record):
        self.calls.append(("epoch", record.epoch))

    @contextlib.contextmanager
    def bar(self, total, desc, unit="it", leave=True):
        self.calls.append(("bar", desc))
        with super().bar(total, desc, unit, leave) as bar:
            yield bar

    def of(self, kind):
        return [v for k, v in self.calls if k == kind]


def test_every_stage_reports_through_one_progress(digits_onnx, digits_engines, tmp_path):
    from dlforge.adversarial.audit import run_audit
    from dlforge.bench import run_bench
    from dlforge.build import engine_from_onnx
    from dlforge.train import checkpoint_from_training

    p = Recorder()
    checkpoint_from_training("mlp", tmp_path / "ckpt", data="digits", epochs=2, progress=p)
    assert p.of("epoch") == [1, 2] and p.of("bar") == ["epoch 1/2", "epoch 2/2"]
    p = Recorder()
    engine_from_onnx(digits_onnx.path, tmp_path / "auto", precision="auto", progress=p)
    assert any(line.startswith("precision auto: batch") for line in p.of("message"))
    p = Recorder()
    run_bench([digits_engines["fp32"].path], batch_sizes=(1,), iterations=5, duration=0.05, rounds=2, progress=p)
    assert p.of("message") == ["batch 1: round 1/2", "batch 1: round 2/2"]
    p = Recorder()
    run_audit([digits_engines["fp32"].path], attacks=("fgsm",), eps=(0.1,), samples=20, progress=p)
    assert p.of("bar") == ["audit"]
    from dlforge.drift import run_drift

    p = Recorder()
    run_drift([digits_onnx.path, digits_engines["fp32"].path], samples=20, pgd_steps=2, progress=p)
    assert p.of("bar") == ["drift"]


def test_the_pipeline_names_its_stages_to_the_progress(tmp_path):
    from dlforge.pipeline import run_pipeline

    p = Recorder()
    run_pipeline("mlp", tmp_path / "run", epochs=1, bench=False, audit=False, progress=p)
    assert p.of("stage") == ["train", "export", "build ort fp32", "build ort int8", "drift"]
    assert p.of("epoch") == [1] and p.of("bar")[-1] == "drift"


def test_line_progress_writes_what_the_cli_prints_and_flags_mean_bars():
    lines = []
    p = LineProgress(lines.append)
    p.stage("train")
    p.message("a note")
    assert lines == ["== train", "a note"]
    assert as_progress(p) is p and as_progress(False).bars is False and as_progress(None).bars is None
    with pytest.raises(TypeError, match="progress must be a Progress"):
        as_progress(lambda line: None)
