"""Poisoning reports: terminal table, HTML, artifact."""

from __future__ import annotations

import html
import json
import os

from dlforge.reporting import Column, format_table, write_report_artifact

_MODELS = [Column("model"), Column("clean_accuracy", "clean accuracy", ".4f", ">"),
           Column("attack_success_rate", "attack success", ".4f", ">")]
_DEFENCES = [Column("defence"), Column("true_positive_rate", "TPR", ".3f", ">"),
             Column("false_positive_rate", "FPR", ".3f", ">"), Column("asr_after", "ASR after", ".4f", ">"),
             Column("clean_accuracy_after", "clean after", ".4f", ">")]


def table(r: dict) -> str:
    lines = [f"{r['attack']} ({r['mode']}) on {r['data']}: {r['poisoned_samples']} poisoned training samples "
             f"(rate {r['rate']:g}, target class {r['target_class']})"]
    if "baseline_clean_accuracy" in r:
        lines.append(f"clean baseline model: clean accuracy {r['baseline_clean_accuracy']:.4f}")
    models = [{"model": "pytorch (poisoned)", **r}] + [{"model": f"engine ort {e['precision']}", **e} for e in r["engines"]]
    lines.append(format_table(models, _MODELS))
    if r["defences"]:
        rows = [{**d, "defence": d["name"] + (f" ({d['engine']})" if "engine" in d else "")} for d in r["defences"]]
        lines += ["", format_table(rows, _DEFENCES)]
    return "\n".join(lines)


def to_html(r: dict) -> str:
    esc = html.escape
    per_class = [{k: d[k] for k in ("name", "per_class") if k in d} for d in r["defences"] if "per_class" in d]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dlforge poisoning report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>"
            f"<body><h1>Data-poisoning report</h1><p>Attack success is measured on triggered test images of other "
            f"classes; defences are scored against the known poisoned indices.</p><pre>{esc(table(r))}</pre>"
            f"<h2>Per-class detection</h2><pre>{esc(json.dumps(per_class, indent=1))}</pre></body></html>")


def write_poison_artifact(report: dict, out_dir: str | os.PathLike, *, force: bool = False):
    return write_report_artifact(
        "poison", report, out_dir, payload="poison.json", files={"report.html": to_html(report)},
        parent=report["artifacts"]["checkpoint"], force=force,
        params={k: report[k] for k in ("model", "data", "attack", "mode", "rate", "target_class", "trigger_size")},
        sections={"attack_success_rate": report["attack_success_rate"], "clean_accuracy": report["clean_accuracy"]})
