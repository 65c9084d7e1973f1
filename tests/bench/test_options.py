"""BenchOptions: one validation for the CLI and the Python API, before anything is opened or written."""

import math

import pytest
from click.testing import CliRunner

from dlforge.bench import BenchOptions, run_bench
from dlforge.bench.runner import check_batch_sizes, timing_mode
from dlforge.cli import cli
from dlforge.errors import InputError
from tests.helpers import shared_path

BAD = [
    (["--duration", "inf"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--warmup-time", "inf"], "--warmup-time"),
    (["--iterations", "-1"], "--iterations"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--batch-sizes", "1,-8"], "--batch-sizes"),
    (["--threads", "0"], "--threads"),
    (["--rounds", "0"], "--rounds"),
    (["--iterations", "0", "--duration", "0"], "both zero"),
]


@pytest.mark.parametrize("args, names", BAD)
def test_cli_bad_setting_is_one_line_exit_2_and_writes_nothing(tmp_path, args, names):
    out = tmp_path / "new" / "bench"
    model = shared_path("onnx-models", "mnist-12.onnx")
    result = CliRunner().invoke(cli, ["bench", str(model), *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and names in result.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(duration=math.inf), "--duration must be a finite number"),
    (dict(warmup_time=math.nan), "--warmup-time must be a finite number"),
    (dict(duration=1e6), "--duration must be a finite number >= 0 and <= 3600"),
    (dict(batch_sizes=(1, 2.5)), "--batch-sizes must be a whole number"),
    (dict(batch_sizes=()), "--batch-sizes must not be empty"),
    (dict(trt_mode="gpu"), "--trt-mode: unknown value 'gpu'"),
])
def test_python_api_rejects_what_the_cli_rejects(overrides, message):
    with pytest.raises(InputError, match=message):
        BenchOptions(**overrides)
    with pytest.raises(InputError, match=message):  # run_bench validates before opening anything
        run_bench(["does-not-exist.onnx"], **overrides)


def test_overrides_apply_to_given_options_and_are_validated_again():
    base = BenchOptions(batch_sizes=(1, 4), iterations=7)
    assert BenchOptions.build(base, duration=0.5).iterations == 7
    with pytest.raises(InputError, match="--duration"):
        BenchOptions.build(base, duration=-1.0)
    with pytest.raises(TypeError, match="no option 'iteration'"):
        run_bench(["x.onnx"], iteration=3)


@pytest.mark.parametrize("capabilities, mode, graph, expected", [
    (frozenset(), "end-to-end", False, ("end-to-end", False, None)),
    (frozenset(), "compute", False, ("end-to-end", False, "--trt-mode compute ignored")),
    (frozenset(), "compute", True, ("end-to-end", False, "--trt-mode compute and --cuda-graph ignored")),
    (frozenset({"device-resident"}), "compute", True, ("compute", False, "--cuda-graph ignored")),
    (frozenset({"device-resident", "cuda-graph"}), "compute", True, ("compute", True, None)),
    (frozenset({"device-resident", "cuda-graph"}), "end-to-end", True, ("end-to-end", True, None)),
])
def test_timing_mode_follows_capabilities(capabilities, mode, graph, expected):
    got = timing_mode(capabilities, mode, graph)
    assert got[:2] == expected[:2]
    assert (got[2] is None) if expected[2] is None else got[2].startswith(expected[2])


@pytest.mark.parametrize("batch_range, accepted, refused, message", [
    ((1, 1), (1,), (8,), "static batch of 1; --batch-sizes 8 cannot run"),
    ((1, 64), (1, 64), (65, 256), "accepts batches 1 to 64 \\(its batch range\\); --batch-sizes 65,256 is outside"),
    ((8, None), (8, 1024), (4,), "accepts batches 8 or more .*--batch-sizes 4 is outside"),
])
def test_batch_sizes_outside_the_range_are_named(batch_range, accepted, refused, message):
    check_batch_sizes("engine", batch_range, accepted)
    with pytest.raises(InputError, match=message):
        check_batch_sizes("engine", batch_range, accepted + refused)
