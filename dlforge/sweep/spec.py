"""A sweep's spec: the TOML file read and checked, and the grid of content-keyed cells it names."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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
    from dlforge.adversarial.audit_options import AuditOptions

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
    from dlforge.adversarial.probes import Probe

    if options.detectors or options.adaptive or options.arms_race:
        raise InputError(f"sweep spec {path}: detectors (and --adaptive, --arms-race) are judged on the whole audited "
                         "set at once (a threshold, AUROC, an arms race), not per eps and shard; the sweep would "
                         "lose them in its merge: run them with `dlforge audit --detectors ... --adaptive`")
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
    from dlforge.adversarial.audit_options import AuditOptions

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
