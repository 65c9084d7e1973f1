"""``dlforge sweep``: an audit grid (engines x attacks x eps x sample shards) or a bench grid (batch
sizes x threads) run cell by cell, locally or on a Ray cluster, resumable, merged into one report.

A spec is a TOML file::

    kind = "audit"
    engines = ["runs/mnist/engine-ort-fp32", "runs/mnist/engine-ort-int8"]   # relative to the spec
    attacks = ["fgsm", "pgd", "square"]
    eps = [0.05, 0.1, 0.2]            # L-inf budgets (eps_l2 = [...] for L2 attacks)
    samples = 500                     # test images, from `start` (default 0)
    shards = 4                        # the samples split into this many contiguous shards
    [settings]                        # any other `dlforge audit` option: pgd_steps, square_queries, seed, ...
    seed = 0

A bench spec sweeps batch sizes and thread counts; each cell times every engine in interleaved
rounds (``dlforge bench``'s rule: ratios are measured side by side), into ``OUT/bench``::

    kind = "bench"
    engines = ["runs/mnist/engine-ort-fp32", "runs/mnist/engine-ort-int8"]
    batch_sizes = [1, 8, 64]
    threads = [1, 2]
    [settings]                        # any other `dlforge bench` option: rounds, duration, ...
    rounds = 5

Each audit cell is one ``run_audit`` of one engine, one attack, one eps and one shard, with per-sample
records. Its key is the sha256 of everything that determines its result: the engine's payload
sha256 (from its verified card), the attack spec, eps, the shard's range, every audit setting and
the dlforge version. Results stream to ``OUT/cells.jsonl`` (one line per finished cell, flushed and
fsynced); a restarted sweep reads it, drops a torn last line, and computes only the cells whose key
is not there. The report (``OUT/audit``: ``audit.json``, ``samples.jsonl``, ``report.html``) is
built from the per-sample records of the spec's cells, so a row's robust accuracy over four shards
is exactly the one over their union.

Executors: ``local`` runs the cells in this process, in order; ``ray`` runs them on Ray actors
(``--workers`` of them, one CPU each; ``--address`` joins an existing cluster), each actor a
process that keeps its imports, open engine sessions, source models and datasets warm across cells
(opened once per engine and process, not per cell). A worker that dies mid-cell is restarted and the
cell retried (``max_restarts``/``max_task_retries``); a cell's result does not depend on where it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from dlforge.artifact import check_output, write_json_atomic
from dlforge.errors import InputError

SPEC_KEYS = {"audit": {"kind", "engines", "attacks", "eps", "eps_l2", "samples", "start", "shards", "settings"},
             "bench": {"kind", "engines", "batch_sizes", "threads", "settings"}}
RESULTS = "cells.jsonl"
MARKER = "dlforge-sweep.json"  # says a directory is a sweep's: -o may resume it
_WARM: dict = {}  # this process's open engines, source models and datasets, kept across cells
EXECUTORS = ("local", "ray")


@dataclass
class SweepSpec:
    engines: list[str]
    attacks: list[str] = field(default_factory=list)
    eps: list[float] = field(default_factory=list)
    eps_l2: list[float] = field(default_factory=list)
    samples: int = 500
    start: int = 0
    shards: int = 1
    settings: dict = field(default_factory=dict)
    kind: str = "audit"
    batch_sizes: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep spec; engine paths are relative to the spec's folder."""
    from dlforge.adversarial.audit import AuditOptions

    path = Path(path)
    if not path.is_file():
        raise InputError(f"sweep spec {path} does not exist; write a TOML file (see `dlforge sweep --help`)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"sweep spec {path} is not valid TOML: {exc}")
    kind = raw.get("kind", "audit")
    if kind not in SPEC_KEYS:
        raise InputError(f"sweep spec {path}: kind {kind!r} is not supported; kind = \"audit\" or \"bench\"")
    unknown = sorted(set(raw) - SPEC_KEYS[kind])
    if unknown:
        raise InputError(f"sweep spec {path}: unknown key(s) {', '.join(unknown)} for kind {kind!r}; expected "
                         f"{', '.join(sorted(SPEC_KEYS[kind]))}")
    if kind == "bench":
        return _bench_spec(path, raw)
    _strings(path, raw, "engines")
    _strings(path, raw, "attacks")
    if not raw.get("eps") and not raw.get("eps_l2"):
        raise InputError(f"sweep spec {path}: give eps = [...] (and/or eps_l2 = [...])")
    settings = _settings(path, raw, "audit", {"attacks", "eps", "eps_l2", "samples", "start", "per_sample"})
    spec = SweepSpec(engines=_engine_paths(path, raw["engines"]),
                     attacks=raw["attacks"], eps=[float(e) for e in raw.get("eps", [])],
                     eps_l2=[float(e) for e in raw.get("eps_l2", [])], samples=raw.get("samples", 500),
                     start=raw.get("start", 0), shards=raw.get("shards", 1), settings=settings)
    for key in ("samples", "shards"):
        value = getattr(spec, key)
        if not isinstance(value, int) or value < 1:
            raise InputError(f"sweep spec {path}: {key} must be a positive integer, got {value!r}")
    if spec.shards > spec.samples:
        raise InputError(f"sweep spec {path}: {spec.shards} shards of {spec.samples} samples leave some empty")
    try:
        options = AuditOptions.build(None, attacks=tuple(spec.attacks), eps=tuple(spec.eps) or (0.0,),
                                     eps_l2=tuple(spec.eps_l2) or (0.0,), samples=spec.samples, start=spec.start,
                                     **settings)
    except TypeError as exc:
        raise InputError(f"sweep spec {path}: [settings] has an option `dlforge audit` does not know ({exc})")
    from dlforge.adversarial.attacks import Probe

    probes = [a for a in spec.attacks if isinstance(options.attack(a), Probe)]
    if probes:
        raise InputError(f"sweep spec {path}: {', '.join(probes)} is a probe (one experiment per audit, not per eps "
                         "and shard); run it with `dlforge audit --attacks ...`")
    return spec


def _bench_spec(path: Path, raw: dict) -> SweepSpec:
    from dlforge.bench import BenchOptions

    _strings(path, raw, "engines")
    for key in ("batch_sizes", "threads"):
        values = raw.get(key)
        if not isinstance(values, list) or not values or not all(isinstance(v, int) and v >= 1 for v in values):
            raise InputError(f"sweep spec {path}: {key} must be a non-empty list of positive integers")
    settings = _settings(path, raw, "bench", {"batch_sizes", "threads"})
    try:
        BenchOptions.build(None, batch_sizes=tuple(raw["batch_sizes"]), threads=raw["threads"][0], **settings)
    except TypeError as exc:
        raise InputError(f"sweep spec {path}: [settings] has an option `dlforge bench` does not know ({exc})")
    return SweepSpec(kind="bench", engines=_engine_paths(path, raw["engines"]), batch_sizes=raw["batch_sizes"],
                     threads=raw["threads"], settings=settings)


def _strings(path: Path, raw: dict, key: str) -> None:
    if not isinstance(raw.get(key), list) or not raw[key] or not all(isinstance(v, str) for v in raw[key]):
        raise InputError(f"sweep spec {path}: {key} must be a non-empty list of strings")


def _settings(path: Path, raw: dict, command: str, reserved: set[str]) -> dict:
    """The spec's ``[settings]`` table (options of ``dlforge COMMAND``), with its paths made absolute."""
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise InputError(f"sweep spec {path}: [settings] must be a table of {command} options")
    clash = sorted(set(settings) & reserved)
    if clash:
        raise InputError(f"sweep spec {path}: set {', '.join(clash)} at the top level, not in [settings]")
    return _resolve_paths(path, settings)


PATH_SETTINGS = ("source", "surrogate", "data_dir", "data", "torch_checkpoint")


def _resolve_paths(spec_path: Path, settings: dict) -> dict:
    """Path settings relative to the spec's folder, absolute (workers may run elsewhere); ``data`` only
    when it names an existing file or folder there (else it is a dataset name such as mnist)."""
    out = dict(settings)
    for key in PATH_SETTINGS:
        value = out.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = (spec_path.parent / value).resolve()
            if key != "data" or candidate.exists():
                out[key] = str(candidate)
    return out


def _engine_paths(spec_path: Path, engines: list[str]) -> list[str]:
    return [e if Path(e).is_absolute() else str((spec_path.parent / e).resolve()) for e in engines]


def _keyed(cell: dict) -> dict:
    from dlforge import __version__

    cell["dlforge"] = __version__
    cell["key"] = hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()
    return cell


def _engines(spec: SweepSpec) -> list[tuple[str, str]]:
    """(path, payload sha256) of each engine, from its verified card; labels must be distinct."""
    from dlforge.artifact import open_artifact

    engines, models = [], set()
    for e in spec.engines:
        artifact = open_artifact(e, ["engine"])
        engines.append((str(artifact.path), artifact.card.sha256))
        info = artifact.card.model
        models.add((info.name, info.dataset) if info else None)
    if spec.kind == "audit" and len(models) > 1:
        raise InputError("the sweep's engines are of different models or datasets "
                         f"({', '.join(sorted(map(str, models)))}); an audit compares engines of one model: "
                         "sweep them separately")
    names = [Path(p).name for p, _ in engines]
    if len(set(names)) < len(names):
        raise InputError("two engines of the sweep share a folder name (their label in the report); rename one")
    return engines


def cells(spec: SweepSpec) -> list[dict]:
    """Every cell of the grid, each with its content key.

    Audit: one cell per engine, attack, eps and shard. Bench: one cell per batch size and thread
    count, holding every engine: engines are timed in interleaved rounds within a cell, so their
    ratios are measured side by side (dlforge bench's rule), never across cells or machines.
    """
    if spec.kind == "bench":
        engines = _engines(spec)
        return [_keyed({"kind": "bench", "engines": [p for p, _ in engines], "engine_sha256": [s for _, s in engines],
                        "batch": b, "threads": t, "settings": spec.settings})
                for t in spec.threads for b in spec.batch_sizes]
    from dlforge.adversarial.audit import AuditOptions

    options = AuditOptions.build(None, **spec.settings)
    engines = _engines(spec)
    bounds = [spec.start + spec.samples * i // spec.shards for i in range(spec.shards + 1)]
    out = []
    for path, sha in engines:
        for attack_spec in spec.attacks:
            attack = options.attack(attack_spec)
            budgets = spec.eps_l2 if attack.norm == "l2" else spec.eps
            if not budgets:
                raise InputError(f"attack {attack_spec} is an {attack.norm} attack: give eps_l2 = [...] in the spec")
            for eps in budgets:
                for lo, hi in zip(bounds, bounds[1:]):
                    out.append(_keyed({"kind": "audit", "engine": path, "engine_sha256": sha, "attack": attack_spec,
                                       "eps": eps, "norm": attack.norm, "start": lo, "samples": hi - lo,
                                       "settings": spec.settings}))
    return out


def run_cell(cell: dict) -> dict:
    """One cell: an audit of one engine, attack, eps and shard (its rows, per-sample records and checks),
    or a bench of every engine at one batch size and thread count."""
    if cell["kind"] == "bench":
        from dlforge.bench import run_bench

        began = time.time()
        report = run_bench(cell["engines"], batch_sizes=(cell["batch"],), threads=cell["threads"], **cell["settings"])
        return {"key": cell["key"], "cell": cell, "report": report, "began": began, "ended": time.time()}
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
    rows = [{**r, **label} for r in report["rows"] if r["eps"] == cell["eps"]]
    records = [{**r, **label} for r in report["per_sample"]["records"] if r["eps"] == cell["eps"]]
    return {"key": cell["key"], "cell": cell, "rows": rows, "records": records, "checks": report["checks"],
            "engines": report["engines"], "data": report["data"], "value_range": report["value_range"],
            "source": report["source"], "crafted_on": report["crafted_on"],
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


def merge(results: list[dict]) -> dict:
    """One audit report from the cells: rows recomputed from the per-sample records of all shards."""
    import numpy as np

    from dlforge.adversarial import checks
    from dlforge.adversarial.audit import SAMPLES_FILE, SAMPLES_VERSION, SCHEMA_VERSION, outcome_rates
    from dlforge.env import environment

    unique: dict = {}  # the source's white-box rows come from every engine's cells: the same records
    for res in results:
        for r in res["records"]:
            unique.setdefault((r["attack"], r["eps"], r["route"], r["engine"], r["sample"]), r)
    records = list(unique.values())
    first = results[0]
    groups: dict = {}
    meta: dict = {}
    shards: dict = {}  # row key -> {shard start: (that shard's row, its sample count)}
    for res in results:
        for row in res["rows"]:
            key = (row["attack"], row["eps"], row["route"], row["target"])
            meta.setdefault(key, row)
            shards.setdefault(key, {}).setdefault(res["cell"]["start"], (row, res["cell"]["samples"]))
    for r in records:
        groups.setdefault((r["attack"], r["eps"], r["route"], r["engine"]), []).append(r)
    rows = []
    for key, group in groups.items():
        template = meta[key]
        row = {k: template[k] for k in ("attack", "norm", "eps", "route", "target", "path")}
        row.update(outcome_rates(*(np.array([r[k] for r in group]) for k in ("prediction", "label", "clean_prediction"))),
                   samples=len(group))
        queries = [r["queries"] for r in group if r["queries"] is not None]
        if queries:
            row["queries_per_sample"] = sum(queries) / len(queries)
        if "crafted_on" in template:
            row["crafted_on"] = template["crafted_on"]
        if "stages" in template:
            row["stages"] = _merge_stages(list(shards[key].values()))
        rows.append(row)
    rows.sort(key=lambda r: (r["attack"], r["route"], r["target"], r["eps"]))
    engines = {}
    for res in results:
        for e in res["engines"]:
            engines.setdefault(e["label"], {**e, "correct": {}})
    for r in records:
        if r["engine"] in engines:
            engines[r["engine"]]["correct"][r["sample"]] = r["clean_prediction"] == r["label"]
    engine_rows = [{k: v for k, v in e.items() if k != "correct"} | {
        "clean_accuracy": sum(e["correct"].values()) / max(len(e["correct"]), 1)} for e in engines.values()]
    samples = len({r["sample"] for r in records})
    gap_bar = first["cell"]["settings"].get("gap_bar", 0.05)
    gaps = checks.transfer_gaps(rows, gap_bar)
    recomputed = [checks.monotone_check(rows), checks.masking_check(rows), checks.transfer_gap_check(gaps, gap_bar),
                  checks.engine_gradient_check(gaps, gap_bar)]
    per_cell: dict = {}  # the checks of one model (logits, gradients, full range): combined over the cells
    for res in results:
        for c in res["checks"]:
            if c["name"] not in {r["name"] for r in recomputed}:
                per_cell.setdefault(c["name"], []).append(c)
    full_range = checks.full_range_check(None)["name"]
    cell_checks = [_combine(name, found, any_pass=name == full_range) for name, found in per_cell.items()]
    report = {
        "schema_version": SCHEMA_VERSION, "env": environment(), "target": [e["path"] for e in engine_rows],
        "engines": engine_rows, "source": first["source"], "crafted_on": first["crafted_on"], "data": first["data"],
        "samples": samples, "value_range": first["value_range"], "clean_accuracy": engine_rows[0]["clean_accuracy"],
        "settings": {**first["cell"]["settings"], "sweep_cells": len(results)}, "rows": rows, "comparisons": [],
        "transfer_gaps": gaps, "gallery": [],
        "checks": cell_checks + recomputed,
        "per_sample": {"file": SAMPLES_FILE, "version": SAMPLES_VERSION, "count": len(records),
                       "records": sorted(records, key=lambda r: (r["attack"], r["eps"], r["route"], r["engine"],
                                                                r["sample"]))},
    }
    return report


def merge_bench(results: list[dict]) -> dict:
    """One bench report from the cells: every cell's rows, each tagged with its thread count."""
    first = results[0]["report"]
    rows = [{**row, "threads": res["cell"]["threads"]} for res in results for row in res["report"]["results"]]
    hosts = sorted({f"{res['report']['env'].get('platform')} ({res['report']['env'].get('cpu')})" for res in results})
    notes = list(dict.fromkeys(n for res in results for n in res["report"].get("notes", [])))
    if len(hosts) > 1:
        notes.append("cells ran on different machines: compare rows within a cell (same batch and threads) only")
    settings = {**first["settings"], "batch_sizes": sorted({r["batch_size"] for r in rows}),
                "threads": sorted({res["cell"]["threads"] for res in results}), "sweep_cells": len(results),
                "hosts": hosts}
    return {**first, "settings": settings, "results": rows, "notes": notes,
            "options": {**first["options"], "batch_sizes": settings["batch_sizes"], "threads": settings["threads"]}}


def _merge_stages(parts: list[tuple[dict, int]]) -> list[dict]:
    """AutoAttack's per-stage robust accuracy over shards: sample-weighted means; points fooled summed."""
    total = sum(n for _, n in parts)
    out = []
    for i, stage in enumerate(parts[0][0]["stages"]):
        merged = {**stage, "robust_accuracy": sum(row["stages"][i]["robust_accuracy"] * n for row, n in parts) / total,
                  "fooled": sum(row["stages"][i].get("fooled", 0) for row, _ in parts)}
        if not all("skipped" in row["stages"][i] for row, _ in parts):
            merged.pop("skipped", None)
        out.append(merged)
    return out


def _combine(name: str, found: list[dict], any_pass: bool = False) -> dict:
    """A per-cell check over all cells: fail if any failed, pass if any passed and none failed, else n/a.
    ``any_pass`` (the full-range check, which each cell runs with its own attack, e.g. FGSM): pass if any
    cell's attack reached ~0 at the full range, as one audit judges it with its strongest gradient attack."""
    from dlforge.adversarial.checks import FAIL, NA, PASS, check

    statuses = [c["status"] for c in found]
    if any_pass:
        status = PASS if PASS in statuses else FAIL if FAIL in statuses else NA
    else:
        status = FAIL if FAIL in statuses else PASS if PASS in statuses else NA
    judged = sum(s != NA for s in statuses)
    example = next((c for c in found if c["status"] == status), found[0])
    return check(name, status, f"{judged} of {len(found)} cells judged; e.g. {example['detail']}")
