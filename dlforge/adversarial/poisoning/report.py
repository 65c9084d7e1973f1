"""Poisoning reports: terminal table, HTML, artifact. Each renders a typed report
(:mod:`dlforge.adversarial.poisoning.records`) through its JSON payload, the form ``poison.json`` keeps."""

from __future__ import annotations

import html
import json
import os

from dlforge.adversarial.poisoning.records import PoisonReport
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


_CURVE = [Column("attack"), Column("rate", "rate", "g", ">"), Column("injected_samples", "injected", "d", ">"),
          Column("poisoned_share", "share", ".3f", ">"), Column("pytorch", "PyTorch", ".4f", ">"),
          Column("fp32", "fp32", ".4f", ">"), Column("int8", "INT8", ".4f", ">"),
          Column("drop", "fp32 drop (pts)", "+.2f", ">")]
_FILTER = [Column("attack"), Column("rate", "rate", "g", ">"), Column("share", "removed", ".3f", ">"),
           Column("tpr_fp32", "TPR fp32", ".3f", ">"), Column("fpr_fp32", "FPR fp32", ".3f", ">"),
           Column("tpr_int8", "TPR INT8", ".3f", ">"), Column("fpr_int8", "FPR INT8", ".3f", ">"),
           Column("flag_agreement", "flag agreement", ".3f", ">"), Column("before", "acc before", ".4f", ">"),
           Column("accuracy_after", "acc after", ".4f", ">", missing="-"),
           Column("recovered", "recovered (pts)", "+.2f", ">", missing="-")]


def availability_table(r: dict) -> str:
    """The accuracy-vs-rate curve, the comparison with random labels and the loss filter."""
    clean = r["curve"][0]["fp32"]
    lines = [f"availability poisoning of {r['model']} on {r['data']}: mislabelled copies of training images injected "
             f"at each rate (added samples per clean one; {r['clean_samples']} clean); clean test accuracy",
             format_table([{**row, "drop": (clean - row["fp32"]) * 100} for row in r["curve"]], _CURVE)]
    compared = r["summary"]["compared"]
    if compared:
        verdict = "below" if r["summary"]["below_random_at_every_rate"] else "NOT below"
        lines += ["", f"{r['attack']} is {verdict} random labels at every rate (fp32 engine): " + ", ".join(
            f"{c['rate']:g}: {c['attack']:.4f} vs {c['random_label']:.4f}" for c in compared)]
    filtered = [{**row, **row["loss_filter"], "before": row["pytorch"],
                 **{f"{k}_{precision}": row["loss_filter"]["engines"][precision][f"{name}_rate"]
                    for precision in ("fp32", "int8") for k, name in (("tpr", "true_positive"),
                                                                       ("fpr", "false_positive"))},
                 **({"recovered": (row["loss_filter"]["accuracy_after"] - row["pytorch"]) * 100}
                    if "accuracy_after" in row["loss_filter"] else {})}
                for row in r["curve"] if "loss_filter" in row]
    if filtered:
        first = filtered[0]
        rule = (f"removes a fixed share {first['share']:g} of the poisoned training set" if first["rule"] == "fixed share"
                else f"removes training samples with {first['rule']} (removed: the fp32 engine's share)")
        lines += ["", f"loss filter (Koh et al. 2018): {rule}, under each engine (TPR, FPR against the injected samples); "
                      "acc after: PyTorch, retrained without the fp32 engine's flags", format_table(filtered, _FILTER)]
        lines += [f"note: rate {row['rate']:g}: {row['oracle']}" for row in filtered if "oracle" in row]
    return "\n".join(lines)


def table(report: PoisonReport) -> str:
    """The terminal report."""
    return _table(report.to_json())


def _table(r: dict) -> str:
    if r.get("kind") == "availability":
        return availability_table(r)
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
        lines += sorted({f"note: {d['name']}: {d['oracle']}" for d in r["defences"] if "oracle" in d})
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
        lines += ["", "reported by the papers:"] + [f"  {name}: {p['reported'] if p else 'not recorded'}"
                                                     for name, p in r["published"].items()]
    return "\n".join(lines)


def _page(heading: str, body: str) -> str:
    """A self-contained poisoning report page."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dlforge poisoning report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>"
            f"<body><h1>{heading}</h1>{body}</body></html>")


def to_html(report: PoisonReport) -> str:
    r = report.to_json()
    esc = html.escape
    if r.get("kind") == "availability":
        return _page("Availability-poisoning report",
                     "<p>Clean test accuracy of the model trained on the clean data (rate 0) and on data with injected "
                     "mislabelled samples, on PyTorch and on the fp32 and INT8 engines. The loss filter is scored "
                     f"against the known injected samples.</p>{_curve_svg(r)}<pre>{esc(_table(r))}</pre>")
    per_class = [{k: d[k] for k in ("name", "engine", "per_class", "details") if k in d}
                 for d in r["defences"] if "per_class" in d]
    papers = "".join(f"<li><b>{esc(name)}</b>: {esc(p['paper'])} Method: {esc(p['method'])}. "
                     f"Reported: {esc(p['reported'])}</li>" if p else f"<li><b>{esc(name)}</b>: not recorded</li>"
                     for name, p in r.get("published", {}).items())
    return _page("Data-poisoning report",
                 "<p>C-Acc, ASR and R-Acc as BackdoorBench defines them: ASR and R-Acc on triggered test images of "
                 "other classes (classified as the target; as their true label). Training-set defences are scored "
                 "against the known poisoned indices; STRIP's FRR and FAR are measured on test images disjoint from "
                 f"those that set its boundary.</p><pre>{esc(_table(r))}</pre><h2>Papers</h2><ul>{papers}</ul>"
                 f"<h2>Per-class detection</h2><pre>{esc(json.dumps(per_class, indent=1))}</pre>")


def _curve_svg(r: dict, width: int = 520, height: int = 300) -> str:
    """Clean accuracy against the injection rate, one line per attack and engine precision (inline SVG)."""
    pad, rows = 48, r["curve"]
    rates = [row["rate"] for row in rows]
    accs = [row[p] for row in rows for p in ("fp32", "int8")]
    x_max, y_lo, y_hi = max(rates) or 1.0, min(accs) - 0.01, max(accs) + 0.005

    def xy(rate, acc):
        return (pad + rate / x_max * (width - 2 * pad),
                height - pad - (acc - y_lo) / max(y_hi - y_lo, 1e-9) * (height - 2 * pad))

    colours = ["#c0392b", "#2471a3", "#27ae60", "#8e44ad"]
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11'>",
             f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='black'/>",
             f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='black'/>",
             f"<text x='{width / 2}' y='{height - 12}' text-anchor='middle'>injection rate</text>",
             f"<text x='{pad - 4}' y='{pad - 8}'>accuracy ({y_lo:.3f}..{y_hi:.3f})</text>"]
    for rate in sorted(set(rates)):
        x, _ = xy(rate, y_lo)
        parts.append(f"<text x='{x:.1f}' y='{height - pad + 14}' text-anchor='middle'>{rate:g}</text>")
    clean = rows[0]
    for i, (attack, precision) in enumerate((a, p) for a in r["attacks"] for p in ("fp32", "int8")):
        points = [xy(0.0, clean[precision])] + [xy(row["rate"], row[precision]) for row in rows
                                                 if row["attack"] == attack]
        dash = "" if precision == "fp32" else " stroke-dasharray='4 3'"
        colour = colours[(i // 2) % len(colours)]
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2'{dash} points='"
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + "'/>")
        parts.append(f"<text x='{width - pad - 150}' y='{pad + 14 * i}' fill='{colour}'>{html.escape(attack)} "
                     f"{precision}</text>")
    return "".join(parts) + "</svg>"


def write_poison_artifact(poison: PoisonReport, out_dir: str | os.PathLike, *, force: bool = False):
    report = poison.to_json()
    if report.get("kind") == "availability":
        params, sections = ("model", "data", "attack", "rates"), ("clean_accuracy", "lowest_accuracy")
    else:
        params = ("model", "data", "attack", "mode", "rate", "target_class", "trigger_size")
        sections = ("attack_success_rate", "clean_accuracy", "robust_accuracy")
    return write_report_artifact(
        "poison", report, out_dir, payload="poison.json", files={"report.html": to_html(poison)},
        parent=report["artifacts"]["checkpoint"], force=force,
        params={k: report[k] for k in params}, sections={k: report[k] for k in sections})
