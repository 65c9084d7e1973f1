"""Audit reports: the terminal table, a self-contained HTML report with plots and a gallery."""

from __future__ import annotations

import html

import numpy as np

from dlforge.adversarial.records import WHITE_BOX, AuditReport
from dlforge.errors import InputError
from dlforge.reporting import Column, format_table, html_table, png_base64


_ROWS = [Column("attack"), Column("norm"), Column("eps", fmt="g", align=">"), Column("route"),
         Column("target", fmt=lambda t: t[:32]), Column("robust_accuracy", "robust acc", ".4f", ">"),
         Column("attack_success_rate", "success", ".3f", ">"),
         Column("queries_per_sample", "queries", ".0f", ">")]
_COMPARISONS = [Column("between"), Column("attack"), Column("eps", fmt="g", align=">"),
                Column("robust_accuracy_diff", "robust acc diff", lambda v: f"{v * 100:+.2f}%", ">"),
                Column("disagreement", "disagreement", lambda v: f"{v * 100:.2f}%", ">")]
_GAPS = [Column("engine", fmt=lambda t: t[:32]), Column("attack"), Column("eps", fmt="g", align=">"),
         Column("transfer", "transfer", ".4f", ">"), Column("engine_white_box", "engine white-box", ".4f", ">"),
         Column("gap", "gap", "+.4f", ">"), Column("large", "", lambda v: "LARGE" if v else ""),
         Column("suspect", "", lambda v: "SUSPECT" if v else "")]
_DETECTIONS = [Column("detector"), Column("engine", fmt=lambda t: t[:32]), Column("attack"), Column("route"),
               Column("eps", fmt="g", align=">"), Column("detection_rate", "detected", ".3f", ">"),
               Column("successful_examples", "of", "d", ">"), Column("false_positive_rate", "clean FPR", ".3f", ">"),
               Column("seen", "", lambda v: "(tuned on it)" if v else "")]


_ADAPTIVE = [Column("detector"), Column("engine", fmt=lambda t: t[:32]), Column("attack"), Column("route"),
             Column("eps", fmt="g", align=">"),
             Column("misclassified", "misclassified", ".3f", ">"), Column("evaded", "evaded", ".3f", ">"),
             Column("tpr", "TPR", ".3f", ">"), Column("auroc", "AUROC", ".3f", ">"),
             Column("false_positive_rate", "clean FPR", ".3f", ">"), Column("linf", "mean Linf", ".4f", ">"),
             Column("l2", "mean L2", ".3f", ">")]


_ARMS_RACE = [Column("detector"), Column("engine", fmt=lambda t: t[:32]), Column("round", align=">"),
              Column("eps", fmt="g", align=">"), Column("added", "trained on +", "d", ">"),
              Column("tpr_pgd", "TPR (pgd)", lambda v: "-" if v is None else f"{v:.3f}", ">"),
              Column("tpr_adaptive", "TPR (adaptive)", lambda v: "-" if v is None else f"{v:.3f}", ">"),
              Column("evaded", "evaded", ".3f", ">"), Column("robust_accuracy", "robust acc", ".3f", ">"),
              Column("false_positive_rate", "clean FPR", ".3f", ">")]


_TRAMER = [Column("detector"), Column("engine", fmt=lambda t: t[:32]), Column("eps", fmt="g", align=">"),
           Column("claimed", "robust acc (pgd)", ".3f", ">"),
           Column("claimed_adaptive", "(adaptive)", lambda v: "-" if v is None else f"{v:.3f}", ">"),
           Column("half_eps", "eps/2", "g", ">"),
           Column("best_measured_half", "best measured at eps/2", lambda v: "-" if v is None else f"{v:.3f}", ">"),
           Column("suspect", "pgd", lambda v: "OVERCLAIM" if v else ""),
           Column("suspect_adaptive", "adaptive", lambda v: "OVERCLAIM" if v else "")]


def check_line(c: dict) -> str:
    """``[pass]``, ``[FAIL]`` or ``[n/a]`` and the check's name and detail."""
    mark = {"pass": "pass", "fail": "FAIL"}.get(c["status"], c["status"])
    return f"[{mark}] {c['name']}: {c['detail']}"


def _probe_columns(name: str) -> list:
    from dlforge.adversarial.probes import PROBES

    columns = list(getattr(PROBES.get(name), "columns", ()))
    return columns or [Column("route"), Column("target")]


def probe_lines(report: dict) -> list[str]:
    """Each probe's section: its name, its table, its notes."""
    lines = []
    for name, section in report.get("probes", {}).items():
        lines += ["", f"{name}:", format_table(section["rows"], _probe_columns(section["probe"])) if section["rows"] else
                  "  (no rows: nothing this probe could run on)", *(f"  {n}" for n in section.get("notes", []))]
    return lines


def table(audit: AuditReport) -> str:
    """The report for the terminal: rows, settings, gaps, comparisons, invariance, detections, probes, checks."""
    report = audit.to_json()
    lines = [f"audit of {', '.join(e['label'] for e in report['engines'])} on {report['samples']} {report['data']} "
             f"test images (clean accuracy: "
             + ", ".join(f"{e['label']} {e['clean_accuracy']:.4f}" for e in report["engines"]) + ")"]
    if report["rows"]:
        columns = _ROWS if not any("db" in r for r in report["rows"]) else [*_ROWS[:3], Column("db", "dB_x", ".1f", ">"),
                                                                              *_ROWS[3:]]
        lines.append(format_table(report["rows"], columns))
        settings = {r["attack"]: r["settings"] for r in report["rows"] if r.get("settings")}
        lines += [f"settings: {name} " + " ".join(f"{k}={v}" for k, v in values.items())
                  for name, values in settings.items()]
    lines += probe_lines(report)
    if report.get("engine_graphs"):
        from dlforge.adversarial.engine_graph import describe_match

        lines += ["", *(f"engine gradients: {describe_match(g)}" for g in report["engine_graphs"])]
    if report.get("transfer_gaps"):
        lines += ["", "transfer gap (transfer minus white-box (engine) robust accuracy):",
                  format_table(report["transfer_gaps"], _GAPS)]
    if report["comparisons"]:
        rows = [{**c, "between": f"{c['a']} vs {c['b']}"} for c in report["comparisons"]]
        lines += ["", format_table(rows, _COMPARISONS)]
    for inv in report.get("invariance", []):
        if "single" in inv:
            lines.append(f"invariance: {inv['engine']}: batch 1 and mixed batches vs batch {inv['deployment_batch']}: "
                         f"max logit diff {max(inv['single']['max_abs_diff'], inv['mixed']['max_abs_diff']):.3g}, "
                         f"top-1 agreement {min(inv['single']['top1_agreement'], inv['mixed']['top1_agreement']):.4f}")
        elif "rebuilt_sha256" in inv:
            lines.append(f"invariance: {inv['engine']}: rebuilt from its ONNX ({'the same file' if inv['same_file'] else 'another file'}): "
                         f"max logit diff {inv['max_abs_diff']:.3g}, top-1 agreement {inv['top1_agreement']:.4f}")
    if report.get("detections"):
        lines += ["", format_table(report["detections"], _DETECTIONS)]
        if report.get("adaptive") is None:
            lines.append("note: detection rates against attacks that ignore the detector are not evidence of "
                         "robustness (Carlini & Wagner 2017); --adaptive attacks each detector")
    if report.get("adaptive"):
        ran = [r for r in report["adaptive"] if "skipped" not in r]
        lines += ["", "adaptive attacks on each detector (evaded: misclassified by the engine and not flagged, of the "
                      "points it got right; TPR at the detector's FPR on the misclassified examples)"]
        if ran:
            lines.append(format_table(ran, _ADAPTIVE))
        lines += [f"note: {r['detector']} on {r['engine']}: {r['skipped']}" for r in report["adaptive"]
                  if "skipped" in r]
    if report.get("tramer"):
        lines += ["", "Tramer's bound (ICML 2022): robust accuracy of engine + detector at eps implies a classifier "
                      "as robust at eps/2",
                  format_table(report["tramer"], _TRAMER)]
    if report.get("arms_race"):
        ran = [r for r in report["arms_race"] if "skipped" not in r]
        lines += ["", "arms race (each round: retrained on the adaptive examples crafted against it, attacked again)"]
        if ran:
            lines.append(format_table(ran, _ARMS_RACE))
        lines += [f"note: {r['detector']} on {r['engine']}: {r['skipped']}" for r in report["arms_race"]
                  if "skipped" in r]
    lines.append("")
    lines += [check_line(c) for c in report["checks"]]
    return "\n".join(lines)


def curves_png(report: dict) -> str:
    """Robust accuracy vs eps: one panel per attack, one line per (route, target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(r["attack"] for r in report["rows"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.6), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        rows = [r for r in report["rows"] if r["attack"] == attack]
        for key in dict.fromkeys((r["route"], r["target"]) for r in rows):
            pts = sorted((r["eps"], r["robust_accuracy"]) for r in rows if (r["route"], r["target"]) == key)
            ax.plot(*zip(*pts), "o-", label=f"{key[1]} ({key[0]})")
        ax.set_title(f"{attack} ({rows[0]['norm']})")
        ax.set_xlabel("eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_base64(fig)


def gallery_png(report: dict) -> str | None:
    items = report.get("gallery") or []
    if not items:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(items), figsize=(1.9 * len(items), 4.2), squeeze=False)
    for j, item in enumerate(items):
        for i, (key, pred, title) in enumerate((("clean", "clean_prediction", "clean"),
                                                ("adversarial", "adversarial_prediction", "adv"))):
            img = np.asarray(item[key])
            ax = axes[i][j]
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}: {item[pred]}", fontsize=8, color="black" if i == 0 else "crimson")
            ax.axis("off")
    fig.suptitle(f"{items[0]['attack']} eps {items[0]['eps']:g}: clean (top) vs adversarial (bottom)", fontsize=9)
    fig.tight_layout()
    return png_base64(fig)


def images_png(items: list[dict], title: str) -> str | None:
    """A grid of ``{"title", "image"}`` items (a probe's gallery), ten to a row."""
    if not items:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(10, len(items))
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        img = np.asarray(item["image"])
        ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(item["title"], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png_base64(fig)


def _probes_html(report: dict) -> str:
    from dlforge.adversarial.probes import PROBES

    out = []
    for name, section in report.get("probes", {}).items():
        doc = (PROBES.get(section["probe"]).__doc__ or "").strip().splitlines()
        out.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(doc[0] if doc else '')}</p>")
        out.append(html_table(section["rows"], _probe_columns(section["probe"])) if section["rows"] else
                   "<p>No rows.</p>")
        out += [f"<p>{html.escape(n)}</p>" for n in section.get("notes", [])]
        items = section.get("gallery") or []
        if items and "audio" in items[0]:
            from dlforge.adversarial.audio_report import gallery_html

            out.append(gallery_html(items, int(items[0]["sample_rate"]), clean="clean", adversarial="audio",
                                    caption=lambda i: i["title"]))
            continue
        groups = list(dict.fromkeys(i.get("group", "") for i in items))
        for group in groups:  # one grid per group (a probe that shows several things titles each)
            png = images_png([i for i in items if i.get("group", "") == group], f"{name}: {group}" if group else name)
            if png:
                out.append(f'<img alt="{html.escape(name)} gallery {html.escape(group)}" '
                           f'src="data:image/png;base64,{png}">')
    return "\n".join(out)


def _arms_race_png(rows: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in dict.fromkeys((r["detector"], r["engine"]) for r in rows):
        mine = [r for r in rows if (r["detector"], r["engine"]) == key]
        rounds = [r["round"] for r in mine]
        ax.plot(rounds, [np.nan if r["tpr_adaptive"] is None else r["tpr_adaptive"] for r in mine], "o-",
                label=f"{key[0]} on {key[1]}: TPR (adaptive)")
        ax.plot(rounds, [r["robust_accuracy"] for r in mine], "s--", label=f"{key[0]} on {key[1]}: robust accuracy")
    ax.set_xlabel("round")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_base64(fig)


def _detectors_html(report: dict) -> str:
    """Detections, the adaptive attacks, Tramer's bound, the arms race, and the adaptive attacks' evading examples."""
    out = []
    if report.get("detections"):
        out += ["<h2>Detectors</h2><p>Threshold at each detector's false-positive rate on held-out clean images; "
                "the share of successful adversarial examples it flags. Against attacks that ignore the detector "
                "this is not evidence of robustness (Carlini &amp; Wagner 2017).</p>",
                html_table(report["detections"], _DETECTIONS)]
    if report.get("adaptive"):
        ran = [r for r in report["adaptive"] if "skipped" not in r]
        out.append("<h2>Adaptive attacks on each detector</h2><p>Evaded: misclassified by the engine and not flagged, "
                   "of the points it got right; TPR at the detector's FPR on the misclassified examples. Read the "
                   "<i>any</i> row: the attacker's best per point.</p>")
        if ran:
            out.append(html_table(ran, _ADAPTIVE))
        out += [f"<p>{html.escape(r['detector'])} on {html.escape(r['engine'])}: {html.escape(r['skipped'])}</p>"
                for r in report["adaptive"] if "skipped" in r]
    if report.get("tramer"):
        out += ["<h2>Tramer's bound</h2><p>Robust accuracy of engine + detector at eps implies a classifier as "
                "robust at eps/2 (Tramer, ICML 2022); OVERCLAIM where it beats the best measured there.</p>",
                html_table(report["tramer"], _TRAMER)]
    ran = [r for r in report.get("arms_race") or [] if "skipped" not in r]
    if ran:
        out += ["<h2>Arms race</h2><p>Each round retrains the detector on adaptive examples crafted against it, then "
                "attacks it again.</p>", html_table(ran, _ARMS_RACE),
                f'<img alt="arms race" src="data:image/png;base64,{_arms_race_png(ran)}">']
    items = report.get("adaptive_gallery") or []
    for group in dict.fromkeys(i["group"] for i in items):
        png = images_png([i for i in items if i["group"] == group], f"adaptive attack evading {group}")
        if png:
            out.append(f'<img alt="evading examples: {html.escape(group)}" src="data:image/png;base64,{png}">')
    return "\n".join(out)


def to_html(audit: AuditReport) -> str:
    """One self-contained page: plots and gallery are embedded as data URIs."""
    report = audit.to_json()
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r['attack'])}</td><td>{r['norm']}</td><td>{r['eps']:g}</td><td>{r['route']}</td>"
        f"<td>{esc(r['target'])}</td><td>{r['robust_accuracy']:.4f}</td><td>{r['attack_success_rate']:.3f}</td>"
        f"<td>{r.get('queries_per_sample', '') and format(r['queries_per_sample'], '.0f')}</td></tr>"
        for r in report["rows"])
    checks = "".join(f"<li class={'fail' if c['status'] == 'fail' else 'pass' if c['status'] == 'pass' else 'na'}>"
                     f"<b>{esc(c['status'])}</b> {esc(c['name'])}: {esc(c['detail'])}</li>" for c in report["checks"])
    comps = "".join(f"<tr><td>{esc(c['a'])} vs {esc(c['b'])}</td><td>{esc(c['attack'])}</td><td>{c['eps']:g}</td>"
                    f"<td>{c['robust_accuracy_diff'] * 100:+.2f}%</td><td>{c['disagreement'] * 100:.2f}%</td></tr>"
                    for c in report["comparisons"])
    gaps = "".join(f"<tr><td>{esc(g['engine'])}</td><td>{esc(g['attack'])}</td><td>{g['eps']:g}</td>"
                   f"<td>{g['transfer']:.4f}</td><td>{g['engine_white_box']:.4f}</td>"
                   f"<td class={'fail' if g['large'] else 'pass'}>{g['gap']:+.4f}</td></tr>"
                   for g in report.get("transfer_gaps", []))
    from dlforge.adversarial.engine_graph import describe_match

    graphs = "".join(f"<li>{esc(describe_match(g))}</li>" for g in report.get("engine_graphs", []))
    sample_rate = (report.get("audio") or {}).get("sample_rate")
    items = report.get("gallery") or []
    if sample_rate and items:
        from dlforge.adversarial.audio_report import gallery_html

        gallery, audio_gallery = None, gallery_html(items, sample_rate, peak=report["audio"].get("peak"))
    else:
        gallery, audio_gallery = gallery_png(report), ""
    engines = ", ".join(f"{esc(e['label'])} ({esc(e['precision'])}, clean accuracy {e['clean_accuracy']:.4f})"
                        for e in report["engines"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dlforge robustness audit</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:nth-child(-n+5){{text-align:left}}
.pass{{color:#176f2c}} .fail{{color:#b00020}} .na{{color:#666}} img{{max-width:100%}}</style></head><body>
<h1>Robustness audit</h1>
<p>Engines: {engines}. Data: {report['samples']} {esc(report['data'])} test images, value range
{report['value_range']}. Gradient attacks crafted on: {esc(str(report.get('crafted_on')))} {esc(str(report.get('source')))}.
Every candidate is projected onto the eps-ball and the value range by the audit before it is judged.</p>
<h2>Checks</h2><ul>{checks}</ul>
{f'<h2>Robust accuracy vs eps</h2><img alt="robust accuracy curves" src="data:image/png;base64,{curves_png(report)}">' if rows else ""}
{"<h2>Results</h2><table><tr><th>attack</th><th>norm</th><th>eps</th><th>route</th><th>target</th><th>robust accuracy</th><th>attack success</th><th>queries/sample</th></tr>" + rows + "</table>" if rows else ""}
{_probes_html(report)}
{_detectors_html(report)}
{"<h2>Engine gradients (white-box (engine) route)</h2><ul>" + graphs + "</ul>" if graphs else ""}
{"<h2>Transfer gap</h2><p>Transfer minus white-box (engine) robust accuracy: how much a transfer-only audit overstates the engine's robustness.</p><table><tr><th>engine</th><th>attack</th><th>eps</th><th>transfer</th><th>engine white-box</th><th>gap</th></tr>" + gaps + "</table>" if gaps else ""}
{"<h2>Engines compared on the same adversarial inputs</h2><table><tr><th>engines</th><th>attack</th><th>eps</th><th>robust accuracy difference</th><th>top-1 disagreement</th></tr>" + comps + "</table>" if comps else ""}
{f'<h2>Gallery</h2><img alt="clean and adversarial examples" src="data:image/png;base64,{gallery}">' if gallery else ""}
{f'<h2>Gallery</h2><p>Clean and adversarial clips: listen to them.</p>{audio_gallery}' if audio_gallery else ""}
</body></html>
"""


GATE_NORMS = ("linf", "l2")
# Checks whose failure says the attacks under-report (broken or masked gradients): a gate on robust
# accuracy cannot pass on figures these call untrustworthy.
GATING_CHECKS = ("white-box accuracy at eps = full range is near 0",
                 "query attack is not stronger than the gradient attacks (no gradient masking)",
                 "engine-graph attacks are at least as strong as transfer (engine gradients are sound)",
                 "engine outputs do not depend on batch composition or rebuild (invariance)")


def parse_fail_under(specs: tuple[str, ...], audited_eps: dict[str, tuple[float, ...]] | None = None
                     ) -> list[tuple[str, float, float]]:
    """``[NORM:]EPS:ACC`` gates as ``(norm, eps, acc)``; NORM is linf (the default) or l2, and each EPS must be
    one the audit runs in that norm (else exit 2 before any work)."""
    import math

    out = []
    for spec in specs:
        parts = spec.split(":")
        norm = parts.pop(0).lower() if len(parts) == 3 else "linf"
        try:
            eps, acc = (float(v) for v in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            eps = acc = None
        if norm not in GATE_NORMS or eps is None or not math.isfinite(eps) or eps < 0 or not 0 <= acc <= 1:
            raise InputError(f"--fail-under expects [NORM:]EPS:ACC with NORM linf (default) or l2, EPS >= 0 and ACC "
                             f"in [0, 1], e.g. 0.1:0.5 or l2:0.5:0.5; got {spec!r}")
        if audited_eps is not None and not any(abs(eps - e) < 1e-9 for e in audited_eps.get(norm, ())):
            flag = "--eps" if norm == "linf" else "--eps-l2"
            raise InputError(f"--fail-under {spec}: {norm} eps {eps:g} is not among the audited {flag} "
                             f"({','.join(f'{e:g}' for e in audited_eps.get(norm, ()))}); add it")
        out.append((norm, eps, acc))
    return out


def gate(report: AuditReport, thresholds: list[tuple[str, float, float]]) -> list[str]:
    """Rows on the engines (not the white-box source rows) of the gate's norm whose robust accuracy at EPS is
    below ACC; and, when there is any gate, each failed check that says the attacks under-report."""
    failures = []
    for norm, eps, acc in thresholds:
        rows = [r for r in report.rows if r["route"] != WHITE_BOX and r["norm"] == norm
                and abs(r["eps"] - eps) < 1e-9]
        failures += [f"{r['attack']} on {r['target']} at {norm} eps {eps:g}: robust accuracy "
                     f"{r['robust_accuracy']:.4f} < {acc:g}" for r in rows if r["robust_accuracy"] < acc]
    if thresholds:
        failures += [f"check failed, the robust accuracy figures are not trustworthy: {c['name']}"
                     for c in report.checks if c["name"] in GATING_CHECKS and c["status"] == "fail"]
    return failures
