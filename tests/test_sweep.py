"""``dlforge sweep``: cells are content-keyed, resumable, and the same on Ray as in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from dlforge.cli import cli
from dlforge.errors import InputError
from dlforge.sweep import cells, load_spec, read_results, run_sweep
from tests.helpers import import_or_skip


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with 2 CPUs, started once per test session."""
    ray = import_or_skip("ray", "Ray is the ray extra")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def spec(digits_engines, tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(f"""kind = "audit"
engines = ["{digits_engines['fp32'].path}", "{digits_engines['int8'].path}"]
attacks = ["fgsm", "square"]
eps = [0.1, 0.3]
samples = 60
shards = 3
[settings]
square_queries = 30
seed = 1
""")
    return path


def _by_key(out) -> dict:
    return {k: (r["rows"], r["records"]) for k, r in read_results(out / "cells.jsonl").items()}


def _sweep(spec_path, out, **kwargs):
    seen = []
    report = run_sweep(load_spec(spec_path), out, on_cell=lambda result, cached: seen.append(cached), **kwargs)
    return report, seen


def test_cells_are_keyed_by_content(spec, digits_engines, tmp_path):
    grid = cells(load_spec(spec))
    assert len(grid) == 2 * 2 * 2 * 3 and len({c["key"] for c in grid}) == len(grid)
    assert sorted((c["start"], c["samples"]) for c in grid if c["attack"] == "fgsm" and c["eps"] == 0.1
                  and c["engine"].endswith("fp32")) == [(0, 20), (20, 20), (40, 20)]
    changed = tmp_path / "changed.toml"
    changed.write_text(spec.read_text().replace("seed = 1", "seed = 2"))
    assert not {c["key"] for c in grid} & {c["key"] for c in cells(load_spec(changed))}


def test_local_sweep_resumes_without_recomputing_and_matches_one_audit(spec, digits_engines, tmp_path):
    out = tmp_path / "local"
    report, seen = _sweep(spec, out)
    assert seen == [False] * 24
    lines = (out / "cells.jsonl").read_bytes().splitlines(keepends=True)
    (out / "cells.jsonl").write_bytes(b"".join(lines[:-3]) + lines[-3][:40])  # killed while writing a line
    again, seen = _sweep(spec, out)
    assert seen.count(True) == 21 and seen.count(False) == 3  # only the lost cells ran again
    assert again.rows == report.rows
    assert len(read_results(out / "cells.jsonl")) == 24
    # FGSM is deterministic: its rows equal those of one unsharded audit of the same points and engines
    from dlforge.adversarial.audit import run_audit

    single = run_audit([digits_engines["fp32"].path, digits_engines["int8"].path], progress=False,
                       attacks=("fgsm",), eps=(0.1, 0.3), samples=60, seed=1)
    key = lambda r: (r["attack"], r["eps"], r["route"], r["target"])  # noqa: E731
    swept = {key(r): r["robust_accuracy"] for r in report.rows if r["attack"] == "fgsm"}
    assert swept == {key(r): r["robust_accuracy"] for r in single.rows}


def test_ray_gives_bit_identical_cells_and_survives_a_killed_worker(spec, tmp_path, ray_cluster):
    """Bit-identical for the spec's attacks: FGSM and a seeded 30-query Square (the seeded query attack is
    the case that could differ between a Ray worker and this process); other attacks are not covered here."""
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    _sweep(spec, local)
    killed = []

    def kill_a_worker():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            found = subprocess.run(["pgrep", "-f", "ray::_CellWorker.run"], capture_output=True, text=True).stdout
            pids = [int(p) for p in found.split()]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    report, seen = _sweep(spec, ray_out, executor="ray", workers=2)
    killer.join(1)
    assert killed, "no worker was seen running a cell"
    assert seen == [False] * 24
    assert _by_key(ray_out) == _by_key(local)


@pytest.mark.parametrize("text, message", [
    ('kind = "train"\nengines=["a"]\nattacks=["fgsm"]\neps=[0.1]', "kind 'train' is not supported"),
    ('kind = "bench"\nengines=["a"]\nattacks=["fgsm"]\neps=[0.1]', "unknown key(s) attacks, eps for kind 'bench'"),
    ('kind = "bench"\nengines=["a"]\nbatch_sizes=[0]\nthreads=[1]', "batch_sizes must be a non-empty list"),
    ('engines=[]\nattacks=["fgsm"]\neps=[0.1]', "engines must be a non-empty list"),
    ('engines=["a"]\nattacks=["fgsm"]', "give eps"),
    ('engines=["a"]\nattacks=["fgsm"]\neps=[0.1]\nbatch=3', "unknown key(s) batch"),
    ('engines=["a"]\nattacks=["fgsm"]\neps=[0.1]\n[settings]\neps=[1]', "at the top level"),
    ('engines=["a"]\nattacks=["fgsm"]\neps=[0.1]\nshards=0', "shards must be a positive integer"),
    ('engines=["a"\n', "not valid TOML"),
    ('engines=["a"]\nattacks=["pgd"]\neps=[0.1]\n[settings]\ndetectors=["lid"]\nadaptive=true',
     "the sweep would lose them in its merge"),
])
def test_bad_specs(tmp_path, text, message):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(path)


def test_cli_sweep(spec, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["sweep", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "24 cells: 24 computed, 0 already" in result.stderr
    report = json.loads((out / "audit" / "audit.json").read_text())
    assert report["samples"] == 60 and report["per_sample"]["count"] == len(
        (out / "audit" / "samples.jsonl").read_text().splitlines())
    again = CliRunner().invoke(cli, ["sweep", str(spec), "-o", str(out)])
    assert again.exit_code == 0 and "24 cells: 0 computed, 24 already" in again.stderr
    bad = CliRunner().invoke(cli, ["sweep", str(tmp_path / "missing.toml"), "-o", str(out)])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_sweep_refuses_an_output_that_is_not_a_sweep_before_any_work(spec, digits_engines, tmp_path):
    """A pipeline's run directory (with an audit/ of its own), a regular file and a bad executor: exit 2, nothing
    replaced or added, no directory created."""
    from dlforge.adversarial.audit import run_audit
    from dlforge.adversarial import write_audit_artifact
    from dlforge.artifact import open_artifact

    run_dir = tmp_path / "run"
    report = run_audit([digits_engines["fp32"].path], attacks=("fgsm",), eps=(0.1,), samples=10, progress=False)
    write_audit_artifact(report, run_dir / "audit")
    before = sorted(p.name for p in run_dir.iterdir())
    result = CliRunner().invoke(cli, ["sweep", str(spec), "-o", str(run_dir)])
    assert result.exit_code == 2 and "is not a sweep directory" in result.stderr, result.output
    assert sorted(p.name for p in run_dir.iterdir()) == before
    open_artifact(run_dir / "audit")  # its sha256 still verifies: nothing was replaced
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(cli, ["sweep", str(spec), "-o", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is not a directory" in result.stderr
    result = CliRunner().invoke(cli, ["sweep", str(spec), "-o", str(tmp_path / "new"), "--executor", "local",
                                      "--workers", "0"])
    assert result.exit_code == 2 and not (tmp_path / "new").exists()


@pytest.fixture
def bench_spec(digits_engines, tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(f"""kind = "bench"
engines = ["{digits_engines['fp32'].path}", "{digits_engines['int8'].path}"]
batch_sizes = [1, 16]
threads = [1, 2]
[settings]
rounds = 2
duration = 0.05
iterations = 4
warmup = 1
warmup_time = 0
""")
    return path


def test_bench_sweep_cells_never_overlap_and_ratios_stay_within_a_cell(bench_spec, tmp_path, ray_cluster):
    grid = cells(load_spec(bench_spec))
    assert sorted((c["batch"], c["threads"]) for c in grid) == [(1, 1), (1, 2), (16, 1), (16, 2)]
    assert all(len(c["engines"]) == 2 for c in grid)  # engines interleaved within each cell
    report, seen = _sweep(bench_spec, tmp_path / "ray", executor="ray", workers=2)
    assert seen == [False] * 4
    spans = sorted((r["began"], r["ended"]) for r in read_results(tmp_path / "ray" / "cells.jsonl").values())
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))  # one bench cell at a time
    assert len(report.results) == 8 and {r["threads"] for r in report.results} == {1, 2}
    from dlforge.bench.report import table, with_ratios

    rows = with_ratios(report)
    assert all(r["speedup"] == 1.0 for r in rows if r["artifact"] == rows[0]["baseline"])
    assert "threads" in table(report).splitlines()[0]
    result = CliRunner().invoke(cli, ["sweep", str(bench_spec), "-o", str(tmp_path / "ray")])
    assert result.exit_code == 0 and "4 cells: 0 computed, 4 already" in result.stderr
    assert (tmp_path / "ray" / "bench" / "bench.json").is_file()


def test_two_specs_of_one_attack_stay_apart_and_a_damaged_results_file_is_refused(digits_engines, tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(f"""engines = ["{digits_engines['fp32'].path}"]
attacks = ["pgd:steps=1", "pgd:steps=5"]
eps = [0.3]
samples = 20
shards = 2
""")
    report, _ = _sweep(path, tmp_path / "out")
    white = {r["attack"]: r["robust_accuracy"] for r in report.rows if r["route"] == "white-box"}
    assert set(white) == {"pgd:steps=1", "pgd:steps=5"} and white["pgd:steps=5"] <= white["pgd:steps=1"]
    results = tmp_path / "out" / "cells.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text(lines[0] + "{damaged\n" + "".join(lines[1:]))
    with pytest.raises(InputError, match="line 2 is not a finished cell"):
        read_results(results)
    probe = tmp_path / "probe.toml"
    probe.write_text(path.read_text().replace('"pgd:steps=1", ', '"ood", '))
    with pytest.raises(InputError, match="ood is a probe"):
        load_spec(probe)
