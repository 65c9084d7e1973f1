"""``precision.html``: the per-layer search of ``--precision auto`` as a page (tables and a plot)."""

from __future__ import annotations

import html
from pathlib import Path

from dlforge.build.mixed import EVALUATION_COLUMNS, SENSITIVITY_COLUMNS
from dlforge.reporting import html_table, png_base64


def front_png(record: dict, chosen_plan: str | None) -> str:
    """Accuracy vs speed-up of every evaluated plan; the Pareto front joined, the chosen plan ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["evaluations"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in rows:
        colour = "tab:blue" if r["within_budget"] else "tab:red"
        ax.scatter(r["speedup_vs_fp32"], r["accuracy"], c=colour, s=24)
        ax.annotate(r["plan"], (r["speedup_vs_fp32"], r["accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    front = sorted((r for r in rows if r["plan"] in record["front"]), key=lambda r: r["speedup_vs_fp32"])
    ax.plot([r["speedup_vs_fp32"] for r in front], [r["accuracy"] for r in front], "k--", lw=0.8, label="Pareto front")
    for r in rows:
        if r["plan"] == chosen_plan:
            ax.scatter(r["speedup_vs_fp32"], r["accuracy"], s=140, facecolors="none", edgecolors="k", label="chosen")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("speed-up over fp32 (measured side by side)")
    ax.set_ylabel("accuracy (tuning half)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_base64(fig)


def write_report(path: Path, selection: dict, chosen: str) -> None:
    """Write the search's page: candidates, plans evaluated, nodes by sensitivity, the plot."""
    from dlforge.build.auto import COLUMNS as CANDIDATE_COLUMNS

    record = selection["plan_search"]
    best = record.get("best") or {}
    units = sorted(record["units"], key=lambda u: -u["sensitivity_kl"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>dlforge precision plan</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
th{{background:#eee}}</style></head><body>
<h1>Per-layer precision: {html.escape(chosen)} chosen</h1>
<p>Accuracy budget {selection['budget_points']:g} points; batch {selection['batch_size']};
{record['evaluations_used']} full evaluations of at most {record['evaluation_budget']}.</p>
<h2>Candidates (whole held-out split)</h2>{html_table(selection['candidates'], CANDIDATE_COLUMNS)}
<h2>Plans evaluated (tuning half)</h2>{html_table(record['evaluations'], EVALUATION_COLUMNS)}
<img alt="accuracy vs speed-up" src="data:image/png;base64,{front_png(record, best.get('plan'))}">
<h2>Nodes by sensitivity</h2>{html_table(units, SENSITIVITY_COLUMNS)}
</body></html>"""
    path.write_text(page, encoding="utf-8")
