"""The per-hop drift report: where along PyTorch -> ONNX -> engines accuracy or robustness was lost.

Every hop runs on the same test images. For each hop after the first, against the hop before it:
max abs logit difference, mean cosine similarity of the logit vectors, top-1 disagreement. For every
hop: accuracy on the whole test split (the figure each stage's own card records) and robust
accuracy under PGD at one eps on the first ``samples`` test images, attacked through the hop's own
differentiable graph (the checkpoint; the ONNX graph; the engine's graph, verified to compute what
the engine computes, as the audit's white-box engine route) and judged by the hop itself. PGD's
settings are the audit's (same images, steps, seed and batch), so an engine's robust accuracy here is
the audit's white-box (engine) figure at that eps.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np

from dlforge.errors import InputError
from dlforge.options import Options, option
from dlforge.progress import ProgressLike, as_progress
from dlforge.reporting import Column, Report, format_table, html_table

COLUMNS = [Column("hop"), Column("artifact", fmt=lambda v: Path(v).name),
           Column("max_abs_diff", "max |diff|", ".2e", ">"), Column("cosine", "cosine", ".6f", ">"),
           Column("top1_disagreement", "top-1 disagree", ".4f", ">"), Column("accuracy", "accuracy", ".4f", ">"),
           Column("robust_accuracy", "robust acc", ".4f", ">")]


def _hop_label(artifact) -> str:
    if artifact.kind == "engine":
        return f"{artifact.card.sections.get('backend')} {artifact.card.sections.get('precision')}"
    return {"checkpoint": "pytorch"}.get(artifact.kind, artifact.kind)


@dataclass
class DriftReport(Report):
    """Each hop's accuracy on the test split, its change from the hop before (max logit difference, cosine, top-1
    disagreement) and its robust accuracy under the one PGD (``attack``) from its own gradients: ``drift.json``."""

    dataset: str
    test_samples: int
    robust_samples: int
    attack: dict
    hops: list[dict]

    SCHEMA_VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "a drift"


@dataclass
class DriftOptions(Options):
    samples: int = option(200, "Test images PGD attacks for the robust-accuracy column.", min=1)
    eps: float = option(0.1, "L-inf eps of that PGD.", min=0)
    pgd_steps: int = option(20, "PGD steps.", min=1)
    seed: int = option(0, "Seed of PGD's random start.", min=0)
    batch_size: int = option(256, "Batch size of the attack and the predictions.", min=1)
    data_dir: str | None = option(None, "Directory of the dataset's files.")


def run_drift(paths: list[str | os.PathLike], options: DriftOptions | None = None, *, progress: ProgressLike = None,
              **overrides) -> DriftReport:
    """Compare the artifacts at ``paths`` hop by hop (in the order given, e.g. checkpoint, onnx, engines).

    ``options`` (:class:`DriftOptions`) or keyword ``overrides`` (``samples=60``) set PGD's budget and the data;
    ``progress`` (:class:`~dlforge.progress.Progress`) counts the hops."""
    o = DriftOptions.build(options, **overrides)
    samples, eps, pgd_steps, seed, data_dir = o.samples, o.eps, o.pgd_steps, o.seed, o.data_dir
    from dlforge.adversarial.attacks.pgd import PGD
    from dlforge.artifact import dataset_spec, open_artifact
    from dlforge.data import load_spec

    if len(paths) < 2:
        raise InputError("drift compares at least two artifacts of one model (e.g. checkpoint, onnx, engines)")
    artifacts = [open_artifact(p, ["checkpoint", "onnx", "engine"]) for p in paths]
    spec = dataset_spec(artifacts[-1]) or dataset_spec(artifacts[0])
    if spec is None:
        raise InputError(f"{artifacts[0].path} does not say which dataset its model was trained on")
    if any(a.card.model is None or a.card.model.task != "classification" for a in artifacts):
        raise InputError("drift measures accuracy and robust accuracy: every artifact must be a classifier")
    _check_one_model(artifacts)
    dataset = load_spec(spec._replace(data_dir=data_dir or spec.data_dir))
    x_all, y_all = dataset.x_test.astype(np.float32), dataset.y_test
    x, y = x_all[:samples], y_all[:samples]
    value_range = tuple(artifacts[0].card.model.value_range)
    attack = PGD(steps=pgd_steps, seed=seed)
    hops, previous = [], None
    with as_progress(progress).bar(len(artifacts), "drift", unit="hop") as bar:
        for artifact in artifacts:
            bar.set_postfix_str(_hop_label(artifact))
            logits, hop = _hop(artifact, previous, x, y, x_all, y_all, attack, o, value_range)
            hops.append(hop)
            previous = logits
            bar.update(1)
    return DriftReport(dataset=dataset.name, test_samples=int(len(y_all)), robust_samples=int(len(y)),
                       attack={"name": "pgd", "eps": eps, "steps": pgd_steps, "seed": seed, "norm": "linf"}, hops=hops)


def _hop(artifact, previous, x, y, x_all, y_all, attack, o: DriftOptions, value_range) -> tuple[np.ndarray, dict]:
    """One hop: its logits on the whole test split and its row (accuracy, change from ``previous``, robust
    accuracy from its own gradients)."""
    from dlforge.adversarial.attacks.robust import robust_accuracy
    from dlforge.adversarial.engine_graph import engine_graph
    from dlforge.runtime import open_deployed
    from dlforge.train.checkpoint import attack_model

    eps = o.eps
    deployed = None if artifact.kind == "checkpoint" else open_deployed(artifact)
    try:
        if deployed is None:
            model, reason = attack_model(artifact), None
            predict = model.predict
        else:  # the engine's own graph, verified to compute what the engine computes
            graph = engine_graph(deployed, x, noise=eps, value_range=value_range)
            model, reason = graph.model, graph.reason
            predict = deployed.predict
        logits = predict(x_all).astype(np.float64)
        hop = {"hop": _hop_label(artifact), "artifact": str(artifact.path), "kind": artifact.kind,
               "accuracy": float((logits.argmax(1) == y_all).mean())}
        if previous is not None:
            norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(previous, axis=1)
            hop.update(max_abs_diff=float(np.abs(logits - previous).max()),
                       cosine=float(((logits * previous).sum(1) / np.maximum(norms, 1e-30)).mean()),
                       top1_disagreement=float((logits.argmax(1) != previous.argmax(1)).mean()))
        if model is None:
            hop.update(robust_accuracy=None, robust_note=f"no differentiable graph: {reason}")
        else:
            clean_pred = logits[:len(x)].argmax(1)  # x is the head of x_all
            hop["robust_accuracy"] = robust_accuracy(model, attack, x, y, eps=eps, value_range=value_range,
                                                     predict=predict, clean_pred=clean_pred,
                                                     batch_size=o.batch_size)
    finally:
        if deployed is not None:
            deployed.close()
    return logits, hop


def _check_one_model(artifacts) -> None:
    """Every artifact must descend from one origin: the furthest verified ancestor of each (the checkpoint, or
    an imported ONNX) is the same file. Matching input and output shapes alone would let a LeNet and an MLP
    trained on the same data pass as hops of one model."""
    from dlforge.artifact import lineage

    first = artifacts[0]
    origin = lineage(first)[-1]
    for a in artifacts[1:]:
        root = lineage(a)[-1]
        if root.card.sha256 != origin.card.sha256:
            raise InputError(f"{a.path} is not a stage of the same model as {first.path}: they descend from "
                             f"{root.path} ({a.card.model.name}) and {origin.path} ({first.card.model.name}); drift "
                             "compares the stages of one model (its checkpoint, onnx and engines)")


def table(report: DriftReport) -> str:
    a = report.attack
    return (f"drift per hop: accuracy on {report.test_samples} {report.dataset} test images; robust accuracy: "
            f"PGD-{a['steps']} L-inf eps {a['eps']:g} on the first {report.robust_samples}, each hop's own gradients\n"
            + format_table(report.hops, COLUMNS))


def to_html(report: DriftReport) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dlforge drift</title></head><body>"
            f"<h1>Drift per hop</h1><pre>{html.escape(table(report).splitlines()[0])}</pre>"
            f"{html_table(report.hops, COLUMNS)}</body></html>")


def write_drift_artifact(drift: DriftReport, out_dir: str | os.PathLike, *, force: bool = False):
    from dlforge.reporting import write_report_artifact

    report = drift.to_json()
    hops = [h["artifact"] for h in drift.hops]
    return write_report_artifact("drift", report, out_dir, payload="drift.json", files={"report.html": to_html(drift)},
                                 parent=hops[-1], params=drift.attack, force=force, protect=hops)
