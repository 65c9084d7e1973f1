"""Running the cells: in this process or on Ray actors, streamed to cells.jsonl, resumable."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from dlforge.artifact import check_output, write_json_atomic
from dlforge.errors import InputError
from dlforge.sweep.merge import merge, merge_bench
from dlforge.sweep.spec import EXECUTORS, MARKER, RESULTS, SweepSpec, _WARM, cells


def run_cell(cell: dict) -> dict:
    """One cell: an audit of one engine, attack, eps and shard (its rows, per-sample records and checks),
    or a bench of every engine at one batch size and thread count."""
    if cell["kind"] == "bench":
        from dlforge.bench import run_bench

        began = time.time()
        report = run_bench(cell["engines"], batch_sizes=(cell["batch"],), threads=cell["threads"], **cell["settings"])
        return {"key": cell["key"], "cell": cell, "report": report.to_json(), "began": began, "ended": time.time()}
    from dlforge.adversarial.audit import run_audit

    import torch

    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic wherever the cell runs (parallelism is across cells)
    budget = {"eps_l2": (cell["eps"],), "eps": (0.0,)} if cell["norm"] == "l2" else {"eps": (cell["eps"],)}
    try:
        report = run_audit([cell["engine"]], progress=False, attacks=(cell["attack"],), samples=cell["samples"],
                           start=cell["start"], per_sample=True, warm=_WARM, engine_threads=1, **budget,
                           **cell["settings"])
    finally:
        torch.set_num_threads(threads)
    label = {"attack": cell["attack"]}  # the spec: pgd and pgd:steps=200 stay apart in the merged report
    rows = [{**r, **label} for r in report.rows if r["eps"] == cell["eps"]]
    records = [{**r, **label} for r in report.per_sample["records"] if r["eps"] == cell["eps"]]
    return {"key": cell["key"], "cell": cell, "rows": rows, "records": records, "checks": report.checks,
            "engines": report.engines, "data": report.data, "value_range": report.value_range,
            "source": report.source, "crafted_on": report.crafted_on,
            "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------ results


def read_results(path: Path) -> dict[str, dict]:
    """Finished cells by key; a torn last line (a sweep killed while writing) is cut off the file."""
    if not path.is_file():
        return {}
    done, good_bytes = {}, 0
    lines = path.read_bytes().splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        try:
            result = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            result = None
        if result is None or "key" not in result:
            if number < len(lines):  # only the last line can be torn by a kill; anything else is damage
                raise InputError(f"{path} line {number} is not a finished cell; move the file away to start over")
            break
        done[result["key"]] = result
        good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return done


def _append(path: Path, result: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(result, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_sweep_output(out_dir: str | os.PathLike, kind: str) -> None:
    """Raise :class:`InputError` now unless ``out_dir`` can hold this sweep: absent, empty, or a sweep directory
    of the same kind (which the sweep resumes; its ``audit/`` or ``bench/`` report is the sweep's own to
    replace). Anything else (a file, a pipeline's run directory with an ``audit/`` of its own) is refused
    before any work; creates nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} exists and is not a directory; give a sweep directory")
    if not out.is_dir() or not any(out.iterdir()):
        check_output(out)  # a writable place
        return
    marker = out / MARKER
    if not marker.is_file() and (out / RESULTS).is_file():
        return  # a sweep written before the marker existed: resumable as it is
    if not marker.is_file():
        raise InputError(f"-o {out} exists and is not a sweep directory (no {MARKER}); a sweep writes cells.jsonl "
                         "and its report there and would replace what is in it: choose a new or empty -o")
    try:
        written = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{marker} is unreadable ({exc}); choose a new -o") from None
    if written.get("kind") != kind:
        raise InputError(f"-o {out} holds a {written.get('kind')} sweep, this spec is a {kind} sweep; choose "
                         "another -o")


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, *, executor: str = "local", workers: int | None = None,
              address: str | None = None, on_cell: Callable[[dict, bool], None] = lambda result, cached: None,
              grid: list[dict] | None = None) -> dict:
    """Run every cell not yet in ``out_dir/cells.jsonl``; returns the merged report. ``grid``: ``cells(spec)``
    when the caller already has it (opening every engine verifies its files' sha256). Every input and the
    output directory are checked before it is created (:func:`check_sweep_output`)."""
    if executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    check_sweep_output(out_dir, spec.kind)
    grid = cells(spec) if grid is None else grid
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        write_json_atomic(out / MARKER, {"kind": spec.kind, "schema_version": 1})
    results_path = out / RESULTS
    done = read_results(results_path)
    for cell in grid:
        if cell["key"] in done:
            on_cell(done[cell["key"]], True)
    pending = [c for c in grid if c["key"] not in done]
    run = _local if executor == "local" else _ray
    for result in run(pending, workers=workers, address=address, exclusive=spec.kind == "bench"):
        _append(results_path, result)
        done[result["key"]] = result
        on_cell(result, False)
    ordered = [done[c["key"]] for c in grid]
    return merge_bench(ordered) if spec.kind == "bench" else merge(ordered)


def _local(pending: list[dict], **_) -> Iterable[dict]:
    """Cells one after another in this process (bench cells never overlap)."""
    for cell in pending:
        yield run_cell(cell)


def _ray(pending: list[dict], *, workers: int | None, address: str | None, exclusive: bool) -> Iterable[dict]:
    """Cells on Ray actors. Audit actors take one CPU each. Bench actors (``exclusive``): one per node,
    pinned to it and holding all its CPUs, so no two bench cells, and no other task of the cluster's
    scheduler, share a node's cores while timing."""
    try:
        import ray
    except ImportError as exc:
        from dlforge.errors import MissingDependency

        raise MissingDependency("ray", "ray", "--executor ray") from exc
    if not pending:
        return
    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):  # join a cluster: its nodes say how many CPUs there are
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                     log_to_driver=False)
    worker_cls = ray.remote(max_restarts=-1, max_task_retries=3)(_CellWorker)
    if exclusive:  # one bench actor per node, holding every CPU of its node
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        nodes = nodes[:min(workers or len(nodes), len(pending))]
        if not nodes:
            raise InputError("the Ray cluster has no node with CPUs for a bench cell")
        actors = [worker_cls.options(num_cpus=int(n["Resources"]["CPU"]), scheduling_strategy=
                                     NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes]
    else:
        slots = int(ray.available_resources().get("CPU", 0))  # actors hold their CPU while they live
        if slots < 1:
            raise InputError("the Ray cluster has no free CPU for a worker; free some or add a node")
        actors = [worker_cls.options(num_cpus=1).remote() for _ in range(min(workers or slots, slots, len(pending)))]
    pool = ray.util.ActorPool(actors)
    try:
        yield from pool.map_unordered(lambda actor, cell: actor.run.remote(cell), pending)
    finally:
        for actor in actors:
            ray.kill(actor)


class _CellWorker:
    """A Ray actor: one process that imports dlforge once and runs cells one after another."""

    def __init__(self):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)

    def run(self, cell: dict) -> dict:
        return run_cell(cell)


# ------------------------------------------------------------------------------------------ merging
