"""Bench reports: terminal table, markdown, latency plot, and ``--compare`` of two runs."""

from __future__ import annotations

from pathlib import Path

from dlforge.bench.runner import COV_WARNING
from dlforge.errors import InputError


def short(name: str) -> str:
    """The last two path components: enough to tell runs/lenet/engine-ort-int8 from its siblings."""
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def with_ratios(report: dict, baseline: str | None = None) -> list[dict]:
    """Rows with ``speedup`` = baseline median latency / row median latency, per batch size."""
    rows = report["results"]
    names = list(dict.fromkeys(r["artifact"] for r in rows))
    base = names[0]
    if baseline is not None:
        matches = [n for n in names if n == baseline or short(n) == baseline or Path(n) == Path(baseline)]
        if not matches:
            raise InputError(f"--baseline {baseline} is not one of the benchmarked artifacts: {', '.join(names)}")
        base = matches[0]
    ref = {r["batch_size"]: r["latency_ms"]["median"] for r in rows if r["artifact"] == base}
    return [{**r, "speedup": ref[r["batch_size"]] / r["latency_ms"]["median"], "baseline": base} for r in rows]


def table(report: dict, baseline: str | None = None) -> str:
    rows = with_ratios(report, baseline)
    has_acc = any(r.get("accuracy") is not None for r in rows)
    head = ["artifact", "backend", "precision", "batch", "median ms", "p99 ms", "items/s", "cov", "speedup"]
    if has_acc:
        head.append("accuracy")
    body = []
    for r in rows:
        lat = r["latency_ms"]
        line = [short(r["artifact"]), r["backend"], r["precision"], str(r["batch_size"]), f"{lat['median']:.4f}",
                f"{lat['p99']:.4f}", f"{r['throughput_per_s']:.0f}", f"{r['cov'] * 100:.1f}%" + ("!" if r["cov"] > COV_WARNING else ""),
                f"{r['speedup']:.2f}x"]
        if has_acc:
            line.append(f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-")
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    out.append(f"speedup: median latency of {short(rows[0]['baseline'])} / this row's, per batch size. "
               f"inputs: {report['settings']['inputs']}.")
    noisy = [r for r in rows if r["cov"] > COV_WARNING]
    if noisy:
        out.append(f"warning: {len(noisy)} row(s) marked ! have a coefficient of variation above "
                   f"{COV_WARNING * 100:.1f}%: the machine is noisy; compare medians and repeat before trusting "
                   "small differences")
    return "\n".join(out)


def markdown(report: dict, baseline: str | None = None) -> str:
    rows = with_ratios(report, baseline)
    env = report["env"]
    lines = ["# dlforge bench", "",
             f"CPU: {env['cpu']} x{env['cpu_count']}; threads: {env.get('threads') or 'default'}; "
             f"packages: {', '.join(f'{k} {v}' for k, v in env['packages'].items())}.", "",
             f"Inputs: {report['settings']['inputs']}. Interleaved rounds: {report['settings']['rounds']}.", "",
             "| artifact | backend | precision | batch | median ms | p90 ms | p99 ms | items/s | CoV | speedup | accuracy |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_ms"]
        acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-"
        lines.append(f"| {short(r['artifact'])} | {r['backend']} | {r['precision']} | {r['batch_size']} | "
                     f"{lat['median']:.4f} | {lat['p90']:.4f} | {lat['p99']:.4f} | {r['throughput_per_s']:.0f} | "
                     f"{r['cov'] * 100:.1f}% | {r['speedup']:.2f}x | {acc} |")
    lines += ["", "![latency percentiles vs batch size](latency.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Median and p99 latency per item against batch size, one line per artifact (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(r["artifact"] for r in report["results"]))
    for i, name in enumerate(names):
        rows = sorted((r for r in report["results"] if r["artifact"] == name), key=lambda r: r["batch_size"])
        b = [r["batch_size"] for r in rows]
        color, label = f"C{i}", f"{short(name)} [{rows[0]['backend']} {rows[0]['precision']}]"
        ax.plot(b, [r["latency_ms"]["median"] for r in rows], "o-", color=color, label=f"{label} median")
        ax.plot(b, [r["latency_ms"]["p99"] for r in rows], "x--", color=color, alpha=0.6, label=f"{label} p99")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per batch (ms)")
    ax.set_title("dlforge bench: latency percentiles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(old: dict, new: dict) -> list[dict]:
    """Per-row change in median latency, with a verdict that respects the measured spread.

    A change counts only beyond ``max(2%, 2 x the larger CoV)`` of the old median: inside that
    band the verdict is "within noise", never "regression".
    """
    for rep, label in ((old, "OLD"), (new, "NEW")):
        if "results" not in rep or not isinstance(rep["results"], list):
            raise InputError(f"{label} is not a dlforge bench JSON (no 'results'); write one with `dlforge bench --json`")
    key = lambda r: (short(r["artifact"]), r["backend"], r["precision"], r["batch_size"])  # noqa: E731
    old_rows = {key(r): r for r in old["results"]}
    out = []
    for r in new["results"]:
        o = old_rows.get(key(r))
        if o is None:
            continue
        m_old, m_new = o["latency_ms"]["median"], r["latency_ms"]["median"]
        band = max(0.02, 2 * max(o.get("cov", 0.0), r.get("cov", 0.0)))
        change = m_new / m_old - 1
        verdict = "within noise" if abs(change) <= band else ("regression" if change > 0 else "improvement")
        out.append({"artifact": key(r)[0], "backend": r["backend"], "precision": r["precision"],
                    "batch_size": r["batch_size"], "old_median_ms": m_old, "new_median_ms": m_new,
                    "change": change, "noise_band": band, "verdict": verdict})
    if not out:
        raise InputError("OLD and NEW have no (artifact, backend, precision, batch) rows in common")
    return out


def compare_table(rows: list[dict]) -> str:
    lines = [f"{'artifact':<28}{'precision':<12}{'batch':>6}{'old ms':>11}{'new ms':>11}{'change':>9}{'noise':>8}  verdict"]
    for r in rows:
        lines.append(f"{r['artifact']:<28}{r['precision']:<12}{r['batch_size']:>6}{r['old_median_ms']:>11.4f}"
                     f"{r['new_median_ms']:>11.4f}{r['change'] * 100:>+8.1f}%{r['noise_band'] * 100:>7.1f}%  {r['verdict']}")
    return "\n".join(lines)


