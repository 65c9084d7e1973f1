"""Audit reports: the terminal table, a self-contained HTML report with plots and a gallery."""

from __future__ import annotations

import base64
import html
import io

import numpy as np


def table(report: dict) -> str:
    lines = [f"audit of {', '.join(e['label'] for e in report['engines'])} on {report['samples']} {report['data']} "
             f"test images (clean accuracy: "
             + ", ".join(f"{e['label']} {e['clean_accuracy']:.4f}" for e in report["engines"]) + ")"]
    head = f"{'attack':<8}{'norm':<6}{'eps':>6}  {'route':<10}{'target':<24}{'robust acc':>11}{'success':>9}{'queries':>9}"
    lines.append(head)
    for r in report["rows"]:
        q = f"{r['queries_per_sample']:.0f}" if "queries_per_sample" in r else "-"
        lines.append(f"{r['attack']:<8}{r['norm']:<6}{r['eps']:>6g}  {r['route']:<10}{r['target'][:23]:<24}"
                     f"{r['robust_accuracy']:>11.4f}{r['attack_success_rate']:>9.3f}{q:>9}")
    if report["comparisons"]:
        lines.append("")
        lines.append(f"{'between':<40}{'attack':<8}{'eps':>6}{'robust acc diff':>17}{'disagreement':>14}")
        for c in report["comparisons"]:
            lines.append(f"{c['a'] + ' vs ' + c['b']:<40}{c['attack']:<8}{c['eps']:>6g}"
                         f"{c['robust_accuracy_diff'] * 100:>+16.2f}%{c['disagreement'] * 100:>13.2f}%")
    if report.get("detections"):
        lines.append("")
        lines.append(f"{'detector':<20}{'engine':<24}{'attack':<8}{'eps':>6}{'detected':>10}{'of':>6}{'clean FPR':>11}")
        for d in report["detections"]:
            lines.append(f"{d['detector']:<20}{d['engine'][:23]:<24}{d['attack']:<8}{d['eps']:>6g}"
                         f"{d['detection_rate']:>10.3f}{d['successful_examples']:>6}{d['false_positive_rate']:>11.3f}")
    lines.append("")
    for c in report["checks"]:
        lines.append(f"[{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


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
    return _png(fig)


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
    return _png(fig)


def to_html(report: dict) -> str:
    """One self-contained page: plots and gallery are embedded as data URIs."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r['attack'])}</td><td>{r['norm']}</td><td>{r['eps']:g}</td><td>{r['route']}</td>"
        f"<td>{esc(r['target'])}</td><td>{r['robust_accuracy']:.4f}</td><td>{r['attack_success_rate']:.3f}</td>"
        f"<td>{r.get('queries_per_sample', '') and format(r['queries_per_sample'], '.0f')}</td></tr>"
        for r in report["rows"])
    checks = "".join(f"<li class={'pass' if c['passed'] else 'fail'}><b>{'pass' if c['passed'] else 'FAIL'}</b> "
                     f"{esc(c['name'])}: {esc(c['detail'])}</li>" for c in report["checks"])
    comps = "".join(f"<tr><td>{esc(c['a'])} vs {esc(c['b'])}</td><td>{esc(c['attack'])}</td><td>{c['eps']:g}</td>"
                    f"<td>{c['robust_accuracy_diff'] * 100:+.2f}%</td><td>{c['disagreement'] * 100:.2f}%</td></tr>"
                    for c in report["comparisons"])
    gallery = gallery_png(report)
    engines = ", ".join(f"{esc(e['label'])} ({esc(e['precision'])}, clean accuracy {e['clean_accuracy']:.4f})"
                        for e in report["engines"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dlforge robustness audit</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:nth-child(-n+5){{text-align:left}}
.pass{{color:#176f2c}} .fail{{color:#b00020}} img{{max-width:100%}}</style></head><body>
<h1>Robustness audit</h1>
<p>Engines: {engines}. Data: {report['samples']} {esc(report['data'])} test images, value range
{report['value_range']}. Gradient attacks crafted on: {esc(str(report.get('crafted_on')))} {esc(str(report.get('source')))}.
Every candidate is projected onto the eps-ball and the value range by the audit before it is judged.</p>
<h2>Checks</h2><ul>{checks}</ul>
<h2>Robust accuracy vs eps</h2><img alt="robust accuracy curves" src="data:image/png;base64,{curves_png(report)}">
<h2>Results</h2><table><tr><th>attack</th><th>norm</th><th>eps</th><th>route</th><th>target</th>
<th>robust accuracy</th><th>attack success</th><th>queries/sample</th></tr>{rows}</table>
{"<h2>Engines compared on the same adversarial inputs</h2><table><tr><th>engines</th><th>attack</th><th>eps</th><th>robust accuracy difference</th><th>top-1 disagreement</th></tr>" + comps + "</table>" if comps else ""}
{f'<h2>Gallery</h2><img alt="clean and adversarial examples" src="data:image/png;base64,{gallery}">' if gallery else ""}
</body></html>
"""


def parse_fail_under(specs: tuple[str, ...]) -> list[tuple[float, float]]:
    from dlforge.errors import InputError

    out = []
    for spec in specs:
        eps, sep, acc = spec.partition(":")
        try:
            pair = (float(eps), float(acc))
        except ValueError:
            pair = None
        if not sep or pair is None or not 0 <= pair[1] <= 1:
            raise InputError(f"--fail-under expects EPS:ACC with ACC in [0, 1], e.g. 0.1:0.5; got {spec!r}")
        out.append(pair)
    return out


def gate(report: dict, thresholds: list[tuple[float, float]]) -> list[str]:
    """Rows on the engines (transfer and query routes) whose robust accuracy at EPS is below ACC."""
    failures = []
    for eps, acc in thresholds:
        rows = [r for r in report["rows"] if r["route"] != "white-box" and abs(r["eps"] - eps) < 1e-9]
        if not rows:
            failures.append(f"no result at eps {eps:g} (add it to --eps)")
        failures += [f"{r['attack']} on {r['target']} at eps {eps:g}: robust accuracy {r['robust_accuracy']:.4f} < {acc:g}"
                     for r in rows if r["robust_accuracy"] < acc]
    return failures
