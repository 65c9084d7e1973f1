"""Poisoning reports: terminal table, HTML (through the audit's page machinery), artifact."""

from __future__ import annotations

import html
import json
import os


def table(r: dict) -> str:
    lines = [f"{r['attack']} ({r['mode']}) on {r['data']}: {r['poisoned_samples']} poisoned training samples "
             f"(rate {r['rate']:g}, target class {r['target_class']})"]
    if "baseline_clean_accuracy" in r:
        lines.append(f"clean baseline model: clean accuracy {r['baseline_clean_accuracy']:.4f}")
    lines.append(f"{'model':<22}{'clean accuracy':>16}{'attack success':>16}")
    lines.append(f"{'pytorch (poisoned)':<22}{r['clean_accuracy']:>16.4f}{r['attack_success_rate']:>16.4f}")
    for e in r["engines"]:
        lines.append(f"{'engine ort ' + e['precision']:<22}{e['clean_accuracy']:>16.4f}{e['attack_success_rate']:>16.4f}")
    if r["defences"]:
        lines.append("")
        lines.append(f"{'defence':<26}{'TPR':>8}{'FPR':>8}{'ASR after':>11}{'clean after':>13}")
        for d in r["defences"]:
            name = d["name"] + (f" ({d['engine']})" if "engine" in d else "")
            after = f"{d['asr_after']:.4f}" if "asr_after" in d else "-"
            clean = f"{d['clean_accuracy_after']:.4f}" if "clean_accuracy_after" in d else "-"
            lines.append(f"{name:<26}{d['true_positive_rate']:>8.3f}{d['false_positive_rate']:>8.3f}{after:>11}{clean:>13}")
    return "\n".join(lines)


def to_html(r: dict) -> str:
    esc = html.escape
    body = esc(table(r))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dlforge poisoning report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>"
            f"<body><h1>Data-poisoning report</h1><p>Attack success is measured on triggered test images of other "
            f"classes; defences are scored against the known poisoned indices.</p><pre>{body}</pre>"
            f"<h2>Per-class detection</h2><pre>{esc(json.dumps([{k: d[k] for k in ('name', 'per_class') if k in d} for d in r['defences'] if 'per_class' in d], indent=1))}</pre>"
            f"</body></html>")


def write_poison_artifact(report: dict, out_dir: str | os.PathLike, *, force: bool = False):
    from dlforge.artifact import ArtifactWriter, Card, open_artifact

    with ArtifactWriter(out_dir, force=force) as writer:
        writer.file("poison.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        writer.file("report.html").write_text(to_html(report), encoding="utf-8")
        parent = open_artifact(report["artifacts"]["checkpoint"], verify=False).lineage()
        card = Card(kind="poison", payload="poison.json", model=None, parent=parent,
                    params={k: report[k] for k in ("model", "data", "attack", "mode", "rate", "target_class",
                                                   "trigger_size")},
                    env=report["env"],
                    sections={"attack_success_rate": report["attack_success_rate"],
                              "clean_accuracy": report["clean_accuracy"]})
        return writer.commit(card)
