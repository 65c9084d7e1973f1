"""Poisoning reports: terminal table, HTML, artifact."""

from __future__ import annotations

import html
import json
import os

from dlforge.reporting import Column, format_table, write_report_artifact

_MODELS = [Column("model"), Column("clean_accuracy", "C-Acc", ".4f", ">"),
           Column("attack_success_rate", "ASR", ".4f", ">"), Column("robust_accuracy", "R-Acc", ".4f", ">")]
_TRAINING_SET = [Column("defence"), Column("engine"), Column("true_positive_rate", "TPR", ".3f", ">"),
                 Column("false_positive_rate", "FPR", ".3f", ">"), Column("flagged", "flagged", "d", ">"),
                 Column("clean_accuracy_after", "C-Acc after", ".4f", ">"),
                 Column("attack_success_rate_after", "ASR after", ".4f", ">"),
                 Column("robust_accuracy_after", "R-Acc after", ".4f", ">")]
_STRIP = [Column("engine"), Column("false_rejection_rate", "FRR", ".4f", ">"),
          Column("false_acceptance_rate", "FAR", ".4f", ">"), Column("boundary", "boundary", ".4f", ">"),
          Column("clean_entropy_mean", "clean H", ".3f", ">"),
          Column("triggered_entropy_mean", "triggered H", ".3f", ">")]
_DIFFERENTIAL = [Column("defence"), Column("metric"), Column("fp32", "fp32", ".3f", ">"),
                 Column("int8", "int8", ".3f", ">"), Column("change", "change", "+.3f", ">"),
                 Column("flag_agreement", "flag agreement", ".3f", ">"),
                 Column("survives", "survives", lambda v: "yes" if v else "no", ">", missing="n/a")]


def _training_set_rows(defences: list[dict]) -> list[dict]:
    """One row per defence and engine; activation clustering gets one per analysis, the removed one
    carrying the after-retraining metrics."""
    rows = []
    for d in defences:
        if d["name"] == "strip":
            continue
        if "by_analysis" not in d:
            rows.append({**d, "defence": d["name"]})
            continue
        removed = d["settings"]["analysis"]
        for analysis, rates in d["by_analysis"].items():
            base = d if analysis == removed else {"engine": d["engine"]}
            label = f"{d['name']} ({analysis}{', removed' if analysis == removed else ''})"
            rows.append({**base, **rates, "defence": label})
    return rows


def table(r: dict) -> str:
    lines = [f"{r['attack']} ({r['mode']}) on {r['data']}: {r['poisoned_samples']} poisoned training samples "
             f"(rate {r['rate']:g}, target class {r['target_class']})"]
    if "baseline_clean_accuracy" in r:
        lines.append(f"clean baseline model: C-Acc {r['baseline_clean_accuracy']:.4f}")
    models = [{**r, "model": "pytorch (poisoned)"}]
    models += [{**e, "model": f"engine ort {e['precision']}"} for e in r["engines"]]
    lines.append(format_table(models, _MODELS))
    training_set = _training_set_rows(r["defences"])
    if training_set:
        lines += ["", "training-set defences on each engine's last-hidden-layer activations (TPR, FPR against the "
                      "true poisoned indices; after: retrained without the fp32 engine's flags)",
                  format_table(training_set, _TRAINING_SET)]
    strip = [d for d in r["defences"] if d["name"] == "strip"]
    if strip:
        s = strip[0]
        sizes = s["set_sizes"]
        lines += ["", f"STRIP on each engine's outputs: boundary at a preset FRR of "
                      f"{s['preset_false_rejection_rate']:g} on {sizes['threshold']} held-out clean images; FRR on "
                      f"{sizes['clean']} other clean images, FAR on {sizes['triggered']} triggered ones; "
                      f"N={s['copies']} blends from a pool of {sizes['overlays']}",
                  format_table(strip, _STRIP)]
    if r.get("differential"):
        lines += ["", f"differential audit, fp32 -> INT8 (survives: {r['survival_criterion']})",
                  format_table(r["differential"], _DIFFERENTIAL)]
    if r.get("published"):
        lines += ["", "reported by the papers:"] + [f"  {name}: {p['reported']}" for name, p in r["published"].items()]
    return "\n".join(lines)


def to_html(r: dict) -> str:
    esc = html.escape
    per_class = [{k: d[k] for k in ("name", "engine", "per_class", "details") if k in d}
                 for d in r["defences"] if "per_class" in d]
    papers = "".join(f"<li><b>{esc(name)}</b>: {esc(p['paper'])} Method: {esc(p['method'])}. "
                     f"Reported: {esc(p['reported'])}</li>" for name, p in r.get("published", {}).items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dlforge poisoning report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>"
            f"<body><h1>Data-poisoning report</h1><p>C-Acc, ASR and R-Acc as BackdoorBench defines them: ASR and "
            f"R-Acc on triggered test images of other classes (classified as the target; as their true label). "
            f"Training-set defences are scored against the known poisoned indices; STRIP's FRR and FAR are measured "
            f"on test images disjoint from those that set its boundary.</p><pre>{esc(table(r))}</pre>"
            f"<h2>Papers</h2><ul>{papers}</ul>"
            f"<h2>Per-class detection</h2><pre>{esc(json.dumps(per_class, indent=1))}</pre></body></html>")


def write_poison_artifact(report: dict, out_dir: str | os.PathLike, *, force: bool = False):
    return write_report_artifact(
        "poison", report, out_dir, payload="poison.json", files={"report.html": to_html(report)},
        parent=report["artifacts"]["checkpoint"], force=force,
        params={k: report[k] for k in ("model", "data", "attack", "mode", "rate", "target_class", "trigger_size")},
        sections={k: report[k] for k in ("attack_success_rate", "clean_accuracy", "robust_accuracy")})
