"""Validation of ``card.json`` values (stdlib only): kinds, dtypes, shapes, value ranges, labels.

Which kinds exist and what each needs beyond the common fields come from the kinds' registry
(:mod:`dlforge.kinds`): each kind may name a ``check_card``.

A card's keys are not enough: a hand-edited or corrupt card with ``value_range [1, 0]``, a dtype
that does not exist or a precision of ``"banana"`` must be refused with a message naming the field,
before any stage trusts it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from dlforge.errors import ArtifactError
from dlforge.kinds import ARTIFACT_KINDS

TASKS = ("classification", "reconstruction")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
ENGINE_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "mixed")
# How a checkpoint of the user's own model is rebuilt (section ``architecture``; absent: from the zoo).
ROUTES = ("program", "factory")
DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
FACTORY = re.compile(f"{DOTTED}:{DOTTED}")  # package.module:callable


def _expect(ok: bool, card_path: Path, what: str) -> None:
    if not ok:
        raise ArtifactError(f"{card_path}: {what}; the card is corrupt or was edited by hand: rebuild the artifact")


def _check_tensor(t: Any, card_path: Path, where: str) -> None:
    _expect(isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] != "", card_path,
            f"{where} must be an object with a non-empty 'name'")
    shape = t.get("shape")
    _expect(isinstance(shape, list) and all(isinstance(d, str) or (type(d) is int and d > 0) for d in shape),
            card_path, f"{where} {t['name']!r} has shape {shape!r}; expected a list of positive ints or names")
    _expect(t.get("dtype") in DTYPES, card_path,
            f"{where} {t['name']!r} has dtype {t.get('dtype')!r}; expected one of {', '.join(DTYPES)}")


def _check_model(m: Any, card_path: Path) -> None:
    _expect(isinstance(m, dict), card_path, "'model' must be an object")
    _expect(isinstance(m.get("name"), str), card_path, "model.name must be a string")
    _expect(m.get("task", "classification") in TASKS, card_path,
            f"model.task is {m.get('task')!r}; expected one of {', '.join(TASKS)}")
    for key in ("inputs", "outputs"):
        _expect(isinstance(m.get(key), list) and len(m[key]) > 0, card_path, f"model.{key} must be a non-empty list")
        for t in m[key]:
            _check_tensor(t, card_path, f"model.{key[:-1]}")
    vr = m.get("value_range", [0.0, 1.0])
    _expect(isinstance(vr, list) and len(vr) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vr)
            and vr[0] < vr[1], card_path, f"model.value_range is {vr!r}; expected [low, high] with low < high")
    labels = m.get("labels", [])
    _expect(isinstance(labels, list) and all(isinstance(x, str) for x in labels), card_path,
            "model.labels must be a list of strings")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_architecture(a: Any, card_path: Path) -> None:
    route = a.get("route") if isinstance(a, dict) else a
    _expect(route in ROUTES, card_path, f"architecture.route is {route!r}; expected one of {', '.join(ROUTES)}")
    if a["route"] == "program":
        _expect(isinstance(a.get("dynamic_batch"), bool), card_path, "architecture.dynamic_batch must be true or false")
        _expect(a["dynamic_batch"] or (type(a.get("batch")) is int and a["batch"] > 0), card_path,
                "architecture.batch must be a positive integer for a program with a fixed batch")
    else:
        _expect(isinstance(a.get("factory"), str) and FACTORY.fullmatch(a["factory"]) is not None, card_path,
                f"architecture.factory is {a.get('factory')!r}; expected package.module:callable")
        _expect(isinstance(a.get("kwargs", {}), dict), card_path, "architecture.kwargs must be an object")


def _check_normalization(n: Any, card_path: Path, model: dict) -> None:
    _expect(isinstance(n, dict) and isinstance(n.get("mean"), list) and isinstance(n.get("std"), list)
            and len(n["mean"]) == len(n["std"]) > 0 and all(_finite(v) for v in n["mean"] + n["std"])
            and min(n["std"]) > 0, card_path,
            "normalization must be {mean, std}: lists of finite numbers of one length, std positive")
    shape = model["inputs"][0]["shape"]
    channels = shape[1] if len(shape) > 1 else None
    _expect(type(channels) is not int or len(n["mean"]) == channels, card_path,
            f"normalization has {len(n['mean'])} values per list, but the input has {channels} channels")


def check_engine_card(d: dict, card_path: Path) -> None:
    """An engine card names its backend and one of the engine precisions."""
    _expect(d.get("precision") in ENGINE_PRECISIONS, card_path,
            f"precision is {d.get('precision')!r}; expected one of {', '.join(ENGINE_PRECISIONS)}")
    _expect(isinstance(d.get("backend"), str) and d["backend"] != "", card_path, "backend must be a name")


def check_checkpoint_card(d: dict, card_path: Path) -> None:
    """An imported checkpoint's architecture route and its normalization, when the card has them."""
    if "architecture" in d:
        _check_architecture(d["architecture"], card_path)
    if d.get("normalization") is not None:
        _check_normalization(d["normalization"], card_path, d["model"])


def validate_card(d: Any, card_path: Path) -> None:
    """Check a card's values, not only its keys; raise :class:`ArtifactError` naming the bad field."""
    _expect(isinstance(d, dict), card_path, "the card is not a JSON object")
    _expect(type(d.get("schema_version")) is int, card_path, "schema_version must be an integer")
    kinds = ARTIFACT_KINDS.names()
    _expect(d.get("kind") in kinds, card_path, f"kind is {d.get('kind')!r}; expected one of {', '.join(kinds)}")
    _expect(isinstance(d.get("payload"), str) and d["payload"] not in ("", ".", ".."), card_path,
            "payload must be a file name")
    _expect(d.get("sha256") is None or (isinstance(d["sha256"], str) and len(d["sha256"]) == 64), card_path,
            "sha256 must be a 64-character hex digest")
    parent = d.get("parent")
    _expect(parent is None or (isinstance(parent, dict) and isinstance(parent.get("path"), str)
                               and (parent.get("sha256") is None or isinstance(parent["sha256"], str))),
            card_path, "parent must be null or {path, sha256}")
    for key in ("params", "env"):
        _expect(isinstance(d.get(key, {}), dict), card_path, f"{key} must be an object")
    if d.get("model") is not None:
        _check_model(d["model"], card_path)
    kind = ARTIFACT_KINDS.get(d["kind"])
    _expect(not kind.holds_model or d.get("model") is not None, card_path, f"a {d['kind']} card needs a 'model' section")
    if kind.check_card is not None:
        kind.check_card(d, card_path)
    external = d.get("external_data", {})
    _expect(isinstance(external, dict) and all(isinstance(v, str) for v in external.values()), card_path,
            "external_data must map file names to sha256 digests")
