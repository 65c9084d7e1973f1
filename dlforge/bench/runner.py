"""``run_bench``: latency and throughput of one or more artifacts, measured interleaved.

Inputs are prepared before any timing (real held-out images by default). For each batch size every
target is warmed up (by iterations *and* time), then the targets take turns in rounds — A B C A B C
— so that drift on a shared machine hits them all alike. Accuracy can be measured in the same call,
so a faster-but-worse engine shows in the same table.

Every artifact is opened with :func:`dlforge.runtime.open_deployed`: its batch range, lineage and
training data come from there, and accuracy is :meth:`DeployedModel.predict`, which batches within
the engine's range. Device-resident timing and CUDA graphs are used where the session's
``capabilities`` offer them; asked for elsewhere, they are ignored for that engine with a note in the
report (so a TensorRT engine can still be compared with an ONNX Runtime one in one interleaved run).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dlforge.artifact import DatasetSpec
from dlforge.bench.options import BenchOptions
from dlforge.bench.report import BenchReport, resolve_baseline
from dlforge.bench.stats import coefficient_of_variation, summarize, time_calls, warm_up
from dlforge.env import environment
from dlforge.errors import InputError
from dlforge.progress import Progress, ProgressLike, as_progress



@dataclass
class Runner:
    """A loaded target: ``run`` is what is timed, ``predict`` the first output over any number of samples."""

    run: Callable[[np.ndarray], object]
    predict: Callable[[np.ndarray], np.ndarray]
    close: Callable[[], None] = lambda: None


@dataclass
class Target:
    """Something to time: a name, how to open it, and facts for the report."""

    name: str
    backend: str
    precision: str
    open: Callable[[], Runner] = field(repr=False)
    input_shape: tuple
    value_range: tuple[float, float] = (0.0, 1.0)
    batch_range: tuple[int, int | None] = (1, None)
    model_bytes: int | None = None
    task: str | None = "classification"
    dataset: DatasetSpec | None = None  # the model's dataset (dlforge.artifact.dataset_spec)
    mode: str = "end-to-end"
    note: str | None = None  # a requested timing mode this target cannot honour
    runner: Runner | None = field(default=None, repr=False)
    load_ms: float = 0.0
    memory_mb: float = 0.0
    sample_rate: int | None = None  # a model of sound: each input is input_shape[-1] / sample_rate seconds of audio


# -- decisions (pure) ----------------------------------------------------------------------------
def timing_mode(capabilities: frozenset[str], trt_mode: str, cuda_graph: bool) -> tuple[str, bool, str | None]:
    """What is timed on a session with ``capabilities``: ``(mode, cuda_graph, note)``.

    ``note`` says which request was ignored and why (None when everything asked for is honoured).
    """
    ignored = []
    if trt_mode == "compute" and "device-resident" not in capabilities:
        ignored.append("--trt-mode compute")
        trt_mode = "end-to-end"
    if cuda_graph and not {"device-resident", "cuda-graph"} <= capabilities:
        ignored.append("--cuda-graph")
        cuda_graph = False
    if not ignored:
        return trt_mode, cuda_graph, None
    return trt_mode, cuda_graph, (f"{' and '.join(ignored)} ignored: its session has no device-resident/CUDA-graph "
                                  f"execution (a TensorRT engine has); timed {trt_mode}")


def check_batch_sizes(name: str, batch_range: tuple[int, int | None], batch_sizes: tuple[int, ...]) -> None:
    """Refuse batch sizes outside the ``(min, max)`` batch range an engine accepts."""
    lo, hi = batch_range
    bad = [b for b in batch_sizes if b < lo or (hi is not None and b > hi)]
    if not bad:
        return
    listed = ",".join(map(str, bad))
    if lo == hi:
        raise InputError(f"{name} has a static batch of {lo}; --batch-sizes {listed} cannot run on it "
                         f"(re-export with --dynamic-batch, or use --batch-sizes {lo})")
    span = f"{lo} to {hi}" if hi is not None else f"{lo} or more"
    raise InputError(f"{name} accepts batches {span} (its batch range); --batch-sizes {listed} is outside it: "
                     "choose batch sizes in that range, or rebuild the engine with a wider one "
                     "(dlforge build --min-batch/--max-batch)")


# -- targets -------------------------------------------------------------------------------------
def artifact_target(path: str | os.PathLike, options: BenchOptions) -> Target:
    """A Target for an engine/onnx artifact directory or a plain ``.onnx`` file.

    On a session with the ``device-resident`` capability, ``trt_mode="compute"`` times only the
    enqueue and synchronize with inputs already on the device (trtexec's GPU compute time);
    ``"end-to-end"`` includes the host copies. ``cuda_graph`` replays the captured enqueue.
    """
    from dlforge.runtime import open_deployed

    with open_deployed(path, threads=options.threads) as probe:
        spec = probe.session.inputs[0]
        if any(not isinstance(d, int) for d in spec.shape[1:]):
            raise InputError(f"{path} has dynamic dimensions beyond the batch ({spec}); bench needs fixed image shapes")
        mode, graph, note = timing_mode(probe.session.capabilities, options.trt_mode, options.cuda_graph)
        source = probe.artifact or probe.path
        payload = probe.artifact.payload_path if probe.artifact else probe.path
        return Target(
            name=str(path), backend=probe.backend, precision=probe.precision, input_shape=probe.input_shape,
            value_range=probe.value_range, batch_range=probe.batch_range, model_bytes=payload.stat().st_size,
            task=probe.task, dataset=probe.dataset_spec(), mode=mode + (" + cuda graph" if graph else ""),
            note=f"{path}: {note}" if note else None,
            sample_rate=(probe.info.audio or {}).get("sample_rate") if probe.info is not None else None,
            open=lambda: _deployed_runner(open_deployed(source, threads=options.threads), mode, graph))


def _deployed_runner(model, mode: str, cuda_graph: bool) -> Runner:
    session = model.session
    name = session.inputs[0].name
    if mode == "end-to-end" and not cuda_graph:
        run = lambda x: session.run({name: x})  # noqa: E731
    else:
        run = _device_resident(session, name, mode, cuda_graph)
    return Runner(run=run, predict=model.predict, close=model.close)


def _device_resident(session, name: str, mode: str, cuda_graph: bool) -> Callable[[np.ndarray], object]:
    """A run function over a device-resident session: inputs copied once per batch, outside the timed calls."""
    prepared = {"x": None}

    def run(x):
        if prepared["x"] is not x:
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
    return run


def torch_target(checkpoint: str | os.PathLike, options: BenchOptions) -> Target:
    """Eager PyTorch on a checkpoint, as a baseline row."""
    from dlforge.artifact import dataset_spec, open_artifact

    artifact = open_artifact(checkpoint, ["checkpoint"])
    _, _, note = timing_mode(frozenset(), options.trt_mode, options.cuda_graph)
    return Target(name=str(checkpoint), backend="torch", precision="fp32 (eager)",
                  open=lambda: _torch_runner(artifact, options.threads),
                  input_shape=tuple(artifact.card.model.inputs[0].shape[1:]),
                  value_range=tuple(artifact.card.model.value_range), model_bytes=artifact.payload_path.stat().st_size,
                  task=artifact.card.model.task, dataset=dataset_spec(artifact),
                  sample_rate=artifact.card.model.audio.get("sample_rate"),
                  note=f"{checkpoint} (torch): {note}" if note else None)


def _torch_runner(artifact, threads: int | None) -> Runner:
    from dlforge.errors import require
    from dlforge.runtime import batch_plan
    from dlforge.runtime.deployed import DEFAULT_BATCH
    from dlforge.train import load_checkpoint

    torch = require("torch", "toolkit", "the --torch baseline")
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(artifact)

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    def predict(x):
        return np.concatenate([run(np.ascontiguousarray(x[a:b])) for a, b, _ in batch_plan(len(x), DEFAULT_BATCH, (1, None))])
    return Runner(run=run, predict=predict)


def _targets(artifacts: list, options: BenchOptions) -> list[Target]:
    """Every target, checked against the options before anything is loaded or timed."""
    if not artifacts:
        raise InputError("give at least one artifact to benchmark")
    targets = [artifact_target(a, options) for a in artifacts]
    if options.torch_checkpoint:
        targets.append(torch_target(options.torch_checkpoint, options))
    shapes = {t.input_shape for t in targets}
    if len(shapes) > 1:
        raise InputError(f"the artifacts take different input shapes ({', '.join(map(str, shapes))}); "
                         "bench them in separate calls")
    for t in targets:
        check_batch_sizes(t.name, t.batch_range, options.batch_sizes)
    resolve_baseline([t.name for t in targets], options.baseline)
    return targets


# -- measuring -----------------------------------------------------------------------------------
def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(targets: list[Target]) -> None:
    """Open every target, recording its load time and resident-memory growth."""
    for t in targets:
        before = _rss_mb()
        start = time.perf_counter()
        t.runner = t.open()
        t.load_ms = (time.perf_counter() - start) * 1e3
        t.memory_mb = max(0.0, _rss_mb() - before)


def _dataset(source: DatasetSpec, cache: dict):
    if source not in cache:
        from dlforge.data import load_spec

        cache[source] = load_spec(source)
    return cache[source]


def _data_spec(t: Target, options: BenchOptions) -> DatasetSpec:
    """``--data`` read for ``t``'s model: its input shape, and its label space and preprocessing where known."""
    known = t.dataset or DatasetSpec(options.data)
    return known._replace(name=options.data, data_dir=options.data_dir, input_shape=t.input_shape, split_seed=None,
                          fingerprint=None)


def _inputs(targets: list[Target], batch: int, options: BenchOptions, cache: dict) -> tuple[np.ndarray, str]:
    """One input batch for everyone, prepared outside the timed loop."""
    shape = targets[0].input_shape
    source = None
    if not options.random_inputs:
        source = _data_spec(targets[0], options) if options.data else \
            next((t.dataset for t in targets if t.dataset), None)
    if source:
        x = _dataset(source, cache).x_test
        if tuple(x.shape[1:]) != shape:
            raise InputError(f"dataset {source[0]} has images {x.shape[1:]}, the model expects {shape}")
        return np.ascontiguousarray(np.resize(x, (batch, *shape))), f"{source[0]} test images"
    lo, hi = targets[0].value_range
    rng = np.random.default_rng(0)
    return (rng.random((batch, *shape), dtype=np.float32) * (hi - lo) + lo), "random (uniform over the value range)"


def _measure_batch(targets: list[Target], x: np.ndarray, options: BenchOptions, progress: Progress) -> list[dict]:
    """Warm every target up on ``x``, then time them in interleaved rounds; one result row each."""
    first = {}
    for t in targets:
        start = time.perf_counter()
        t.runner.run(x)
        first[t.name] = (time.perf_counter() - start) * 1e3
        warm_up(lambda t=t: t.runner.run(x), iterations=options.warmup, duration_s=options.warmup_time)
    samples: dict[str, list] = {t.name: [] for t in targets}
    per_round_iters = -(-options.iterations // options.rounds)
    for r in range(options.rounds):
        for t in targets:
            samples[t.name].append(time_calls(lambda t=t: t.runner.run(x), iterations=per_round_iters,
                                              duration_s=options.duration / options.rounds))
        progress.message(f"batch {len(x)}: round {r + 1}/{options.rounds}")
    rows = []
    for t in targets:
        lat = np.concatenate(samples[t.name])
        rows.append({
            "artifact": t.name, "backend": t.backend, "precision": t.precision, "batch_size": len(x), "mode": t.mode,
            "latency_ms": summarize(lat), "cov": coefficient_of_variation(lat),
            "round_medians_ms": [float(np.median(r)) for r in samples[t.name]],
            "throughput_per_s": len(x) * len(lat) / (lat.sum() / 1e3), "iterations": int(len(lat)),
            "first_run_ms": first[t.name], "load_ms": t.load_ms, "memory_mb": t.memory_mb,
            "model_bytes": t.model_bytes,
        })
    return rows


def _accuracy(t: Target, options: BenchOptions, cache: dict) -> tuple[float | None, str | None]:
    """Top-1 accuracy of a classifier on its held-out test split, or None and why not."""
    source = _data_spec(t, options) if options.data else t.dataset
    if t.task != "classification":
        return None, f"{t.name}: no accuracy (a {t.task or 'model of unknown task'}, not a classifier)"
    if not source:
        return None, f"{t.name}: no accuracy (nothing says which dataset it was trained on; pass --data)"
    ds = _dataset(source, cache)
    logits = t.runner.predict(ds.x_test)
    return float((logits.argmax(1) == ds.y_test).mean()), None


def _add_accuracy(targets: list[Target], results: list[dict], options: BenchOptions, cache: dict) -> list[str]:
    """Set each row's ``accuracy`` beside its speed; returns notes for targets that have none."""
    notes = []
    for t in targets:
        acc, why_not = _accuracy(t, options, cache)
        if why_not:
            notes.append(why_not)
        for row in results:
            if row["artifact"] == t.name:
                row["accuracy"] = acc
    return notes


def _add_audio_time(targets: list[Target], results: list[dict]) -> None:
    """Audio models: the median latency per second of audio processed (a batch of B clips of T seconds holds B * T
    seconds), and the real-time factor, compute time over audio time (below 1: faster than real time)."""
    for t in targets:
        if not t.sample_rate:
            continue
        seconds = t.input_shape[-1] / t.sample_rate
        for row in results:
            if row["artifact"] == t.name:
                audio_s = row["batch_size"] * seconds
                row["ms_per_audio_s"] = row["latency_ms"]["median"] / audio_s
                row["real_time_factor"] = row["latency_ms"]["median"] / 1000 / audio_s


def run_bench(artifacts: list[str | os.PathLike], options: BenchOptions | None = None, *,
              progress: ProgressLike = None, **overrides) -> BenchReport:
    """Benchmark ``artifacts`` (and optionally eager PyTorch) and return its :class:`BenchReport`.

    ``options`` (a :class:`BenchOptions`) with ``overrides`` applied, or options from the keyword
    arguments alone (``run_bench(paths, batch_sizes=(1, 8), accuracy=True)``). Each (target, batch
    size) gets at least ``iterations`` calls *and* ``duration`` seconds, split over ``rounds``
    interleaved rounds. Everything is checked (options, artifacts, batch ranges, baseline) before
    anything is timed. ``progress`` (:class:`~dlforge.progress.Progress`) hears each finished round.
    """
    options = BenchOptions.build(options, **overrides)
    progress = as_progress(progress)
    targets = _targets(list(artifacts), options)
    notes = [t.note for t in targets if t.note]
    rss0 = _rss_mb()
    cache: dict = {}
    results, input_note = [], ""
    try:
        _load(targets)
        for batch in options.batch_sizes:
            x, input_note = _inputs(targets, batch, options, cache)
            results += _measure_batch(targets, x, options, progress)
        if options.accuracy:
            notes += _add_accuracy(targets, results, options, cache)
        _add_audio_time(targets, results)
    finally:
        for t in targets:
            if t.runner is not None:
                t.runner.close()
    return _report(targets, options, results, input_note, notes, rss0)


def _report(targets, options: BenchOptions, results, input_note: str, notes: list[str], rss0: float) -> BenchReport:
    env = environment()
    env["threads"] = options.threads
    env["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    env["rss_before_load_mb"] = rss0
    return BenchReport(
        env=env,
        settings={"batch_sizes": list(options.batch_sizes), "warmup": options.warmup,
                  "warmup_time_s": options.warmup_time, "iterations": options.iterations,
                  "duration_s": options.duration, "rounds": options.rounds, "inputs": input_note,
                  "interleaved": len(targets) > 1,
                  "baseline": resolve_baseline([t.name for t in targets], options.baseline)},
        options=options.params(), notes=notes, results=results)
