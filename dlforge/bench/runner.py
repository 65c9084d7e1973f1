"""``run_bench``: latency and throughput of one or more artifacts, measured interleaved.

Inputs are prepared before any timing (real held-out images by default). For each batch size every
target is warmed up (by iterations *and* time), then the targets take turns in rounds — A B C A B C
— so that drift on a shared machine hits them all alike. Accuracy can be measured in the same call,
so a faster-but-worse engine shows in the same table.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dlforge.bench.stats import coefficient_of_variation, summarize, time_calls, warm_up
from dlforge.env import environment
from dlforge.errors import InputError

SCHEMA_VERSION = 1
# trtexec-style stability flag: a coefficient of variation above this marks a noisy measurement.
COV_WARNING = 0.025


@dataclass
class Target:
    """Something to time: a name, how to load it, and facts for the report."""

    name: str
    backend: str
    precision: str
    load: Callable[[], Callable[[np.ndarray], np.ndarray]]
    input_shape: tuple
    value_range: tuple[float, float] = (0.0, 1.0)
    static_batch: int | None = None
    model_bytes: int | None = None
    task: str | None = "classification"
    dataset: tuple[str, str | None] | None = None  # (name, data_dir) of the model's dataset
    run: Callable | None = field(default=None, repr=False)
    mode: str = "end-to-end"
    load_ms: float = 0.0
    memory_mb: float = 0.0


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def artifact_target(path: str | os.PathLike, threads: int | None, *, mode: str = "end-to-end",
                    cuda_graph: bool = False) -> Target:
    """A Target for an engine/onnx artifact directory or a plain ``.onnx`` file.

    For TensorRT engines, ``mode="compute"`` times only the enqueue and synchronize with inputs
    already on the device (trtexec's GPU compute time); ``"end-to-end"`` includes the host copies.
    ``cuda_graph`` replays the captured enqueue as a CUDA graph.
    """
    from dlforge.artifact import is_artifact, open_artifact
    from dlforge.runtime import open_session

    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        artifact, payload = None, path
    elif path.is_dir() and is_artifact(path):
        artifact = open_artifact(path, ["engine", "onnx"])
        payload = artifact.payload_path
    else:
        raise InputError(f"{path} is neither an engine/onnx artifact directory nor an .onnx file; "
                         "pass the output of `dlforge build` or `dlforge export`")
    probe = open_session(artifact or path, threads=threads)
    spec = probe.inputs[0]
    if len(probe.inputs) != 1:
        raise InputError(f"{path} has {len(probe.inputs)} inputs; dlforge bench times single-input models")
    probe.close()
    static = spec.shape[0] if isinstance(spec.shape[0], int) else None
    if any(not isinstance(d, int) for d in spec.shape[1:]):
        raise InputError(f"{path} has dynamic dimensions beyond the batch ({spec}); bench needs fixed image shapes")
    card = artifact.card if artifact else None
    dataset = None
    if card and card.model and card.model.dataset:
        dataset = _dataset_of(artifact)

    backend = card.sections.get("backend", "ort") if card else "ort"
    if backend != "tensorrt" and (mode != "end-to-end" or cuda_graph):
        mode, cuda_graph = "end-to-end", False  # host-side backends have no device-resident mode

    def load():
        session = open_session(artifact or path, threads=threads)
        name = session.inputs[0].name
        if mode == "end-to-end" and not cuda_graph:
            return lambda x: session.run({name: x})
        prepared = {"x": None}

        def run_on_device(x):
            if prepared["x"] is not x:  # inputs copied once per batch, outside the timed calls
                session.prepare(session.check_feeds({name: x}))
                if cuda_graph:
                    session.capture_graph()
                prepared["x"] = x
            if mode == "end-to-end":  # host copies in and out around the replayed graph
                session.prepare(session.check_feeds({name: x}))
                session.launch_graph()
                return session.fetch()
            session.launch_graph() if cuda_graph else session.execute()
            return None
        run_on_device.predict = lambda x: session.run({name: x})
        return run_on_device

    return Target(
        name=str(path), backend=backend, mode=mode + (" + cuda graph" if cuda_graph else ""),
        precision=card.sections.get("precision", "fp32" if card.kind == "onnx" else "?") if card else "as-is",
        load=load, input_shape=tuple(spec.shape[1:]), static_batch=static,
        value_range=tuple(card.model.value_range) if card and card.model else (0.0, 1.0),
        model_bytes=payload.stat().st_size, task=card.model.task if card and card.model else None,
        dataset=dataset,
    )


def _dataset_of(artifact) -> tuple[str, str | None] | None:
    """The (dataset, data_dir) a model was trained on, read up its lineage."""
    from dlforge.artifact import source_checkpoint

    ckpt = source_checkpoint(artifact)
    if ckpt is not None:
        return ckpt.card.params.get("data"), ckpt.card.params.get("data_dir")
    return (artifact.card.model.dataset, None) if artifact.card.model.dataset else None


def torch_target(checkpoint: str | os.PathLike, threads: int | None) -> Target:
    """Eager PyTorch on a checkpoint, as a baseline row."""
    from dlforge.errors import require
    from dlforge.train import load_checkpoint

    torch = require("torch", "toolkit", "the --torch baseline")
    model, artifact = load_checkpoint(checkpoint)
    if threads:
        torch.set_num_threads(threads)

    def load():
        m, _ = load_checkpoint(artifact)

        def run(x):
            with torch.inference_mode():
                return m(torch.from_numpy(x)).numpy()
        return run

    return Target(name=str(checkpoint), backend="torch", precision="fp32 (eager)", load=load,
                  input_shape=tuple(artifact.card.model.inputs[0].shape[1:]),
                  value_range=tuple(artifact.card.model.value_range), model_bytes=artifact.payload_path.stat().st_size,
                  task=artifact.card.model.task,
                  dataset=(artifact.card.params.get("data"), artifact.card.params.get("data_dir")))


def _inputs(targets: list[Target], batch: int, random_inputs: bool, data, data_dir, cache: dict) -> tuple[np.ndarray, str]:
    """One input batch for everyone, prepared outside the timed loop."""
    shape = targets[0].input_shape
    source = None if random_inputs else (data, data_dir) if data else next((t.dataset for t in targets if t.dataset), None)
    if source and source[0]:
        if source not in cache:
            from dlforge.data import load_dataset

            cache[source] = load_dataset(source[0], source[1])
        x = cache[source].x_test
        if tuple(x.shape[1:]) != shape:
            raise InputError(f"dataset {source[0]} has images {x.shape[1:]}, the model expects {shape}")
        return np.ascontiguousarray(np.resize(x, (batch, *shape))), f"{source[0]} test images"
    lo, hi = targets[0].value_range
    rng = np.random.default_rng(0)
    return (rng.random((batch, *shape), dtype=np.float32) * (hi - lo) + lo), "random (uniform over the value range)"


def run_bench(
    artifacts: list[str | os.PathLike],
    *,
    batch_sizes: tuple[int, ...] = (1, 8, 64),
    warmup: int = 10,
    warmup_time: float = 0.2,
    iterations: int = 50,
    duration: float = 1.0,
    rounds: int = 5,
    threads: int | None = None,
    random_inputs: bool = False,
    trt_mode: str = "end-to-end",
    cuda_graph: bool = False,
    torch_checkpoint: str | os.PathLike | None = None,
    accuracy: bool = False,
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> dict:
    """Benchmark ``artifacts`` (and optionally eager PyTorch) and return the JSON report.

    Each (target, batch size) gets at least ``iterations`` calls *and* ``duration`` seconds, split
    over ``rounds`` interleaved rounds. ``trt_mode`` and ``cuda_graph`` apply to TensorRT engines
    (see :func:`artifact_target`).
    """
    if not artifacts:
        raise InputError("give at least one artifact to benchmark")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InputError(f"--batch-sizes must be positive integers, got {','.join(map(str, batch_sizes))}")
    if iterations <= 0 and duration <= 0:
        raise InputError("--iterations and --duration are both zero: nothing would be timed; set one of them")
    if iterations < 0 or duration < 0 or warmup < 0 or warmup_time < 0 or rounds < 1:
        raise InputError("--iterations, --duration, --warmup and --warmup-time must be >= 0, --rounds >= 1")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    if trt_mode not in ("end-to-end", "compute"):
        raise InputError(f"--trt-mode must be end-to-end or compute, got {trt_mode!r}")
    targets = [artifact_target(a, threads, mode=trt_mode, cuda_graph=cuda_graph) for a in artifacts]
    if torch_checkpoint:
        targets.append(torch_target(torch_checkpoint, threads))
    shapes = {t.input_shape for t in targets}
    if len(shapes) > 1:
        raise InputError(f"the artifacts take different input shapes ({', '.join(map(str, shapes))}); "
                         "bench them in separate calls")
    for t in targets:
        for b in batch_sizes:
            if t.static_batch is not None and b != t.static_batch:
                raise InputError(f"{t.name} has a static batch of {t.static_batch}; --batch-sizes {b} cannot run "
                                 f"on it (re-export with --dynamic-batch, or use --batch-sizes {t.static_batch})")
    rss0 = _rss_mb()
    for t in targets:
        before = _rss_mb()
        start = time.perf_counter()
        t.run = t.load()
        t.load_ms = (time.perf_counter() - start) * 1e3
        t.memory_mb = max(0.0, _rss_mb() - before)
    cache: dict = {}
    results = []
    input_note = ""
    for batch in batch_sizes:
        x, input_note = _inputs(targets, batch, random_inputs, data, data_dir, cache)
        first = {}
        for t in targets:
            start = time.perf_counter()
            t.run(x)
            first[t.name] = (time.perf_counter() - start) * 1e3
            warm_up(lambda t=t: t.run(x), iterations=warmup, duration_s=warmup_time)
        samples: dict[str, list] = {t.name: [] for t in targets}
        per_round_iters = -(-iterations // rounds) if iterations else 0
        for r in range(rounds):
            for t in targets:
                samples[t.name].append(time_calls(lambda t=t: t.run(x), iterations=per_round_iters,
                                                  duration_s=duration / rounds))
            progress(f"batch {batch}: round {r + 1}/{rounds}")
        for t in targets:
            lat = np.concatenate(samples[t.name])
            results.append({
                "artifact": t.name, "backend": t.backend, "precision": t.precision, "batch_size": batch, "mode": t.mode,
                "latency_ms": summarize(lat), "cov": coefficient_of_variation(lat),
                "throughput_per_s": batch * len(lat) / (lat.sum() / 1e3), "iterations": int(len(lat)),
                "first_run_ms": first[t.name], "load_ms": t.load_ms, "memory_mb": t.memory_mb,
                "model_bytes": t.model_bytes,
            })
    if accuracy:
        _add_accuracy(targets, results, data, data_dir, cache)
    env = environment()
    env["threads"] = threads
    env["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    env["rss_before_load_mb"] = rss0
    return {
        "schema_version": SCHEMA_VERSION,
        "env": env,
        "settings": {"batch_sizes": list(batch_sizes), "warmup": warmup, "warmup_time_s": warmup_time,
                     "iterations": iterations, "duration_s": duration, "rounds": rounds, "inputs": input_note,
                     "interleaved": len(targets) > 1},
        "results": results,
    }


def _add_accuracy(targets, results, data, data_dir, cache) -> None:
    """Top-1 accuracy of each classifier on its held-out test split, beside its speed."""
    from dlforge.data import load_dataset

    for t in targets:
        source = (data, data_dir) if data else t.dataset
        acc = None
        if t.task == "classification" and source and source[0]:
            if source not in cache:
                cache[source] = load_dataset(source[0], source[1])
            ds = cache[source]
            step = t.static_batch or 256
            predict = getattr(t.run, "predict", t.run)
            logits = np.concatenate([_first(predict(ds.x_test[i:i + step])) for i in range(0, len(ds.x_test), step)])
            acc = float((logits.argmax(1) == ds.y_test).mean())
        for row in results:
            if row["artifact"] == t.name:
                row["accuracy"] = acc


def _first(out):
    return next(iter(out.values())) if isinstance(out, dict) else out
