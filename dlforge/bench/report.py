"""Bench reports: the typed :class:`BenchReport`, its terminal table, markdown, latency plot, and ``--compare``
of two runs.

The columns are defined once (:data:`COLUMNS`, :data:`COMPARE_COLUMNS`); the terminal renders them
with :func:`dlforge.reporting.format_table`, the markdown report as a markdown table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Mapping

from dlforge.bench.stats import INSTABILITY_BAR, paired_spread, round_spread
from dlforge.errors import InputError
from dlforge.reporting import Column, Report, format_table

BENCH_SCHEMA_VERSION = 1  # bench.json's schema: written by BenchReport.to_json, checked by BenchReport.from_json


@dataclass
class BenchReport(Report):
    """What ``dlforge bench`` measured: one row per (artifact, batch size[, threads]) with latency percentiles,
    throughput, the round medians and, with ``--accuracy``, accuracy beside speed. ``run_bench`` and the bench
    sweep's merge return one; ``to_json`` is the ``bench.json`` payload and ``--json`` output.

    Rows stay JSON-shaped dicts (their keys are documented with the report in the README)."""

    results: list[dict]
    settings: dict  # batch sizes, warm-up, iterations, duration, rounds, inputs, interleaved, baseline
    env: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the BenchOptions it ran with (the artifact card's params)
    notes: list[str] = field(default_factory=list)

    SCHEMA_VERSION: ClassVar[int] = BENCH_SCHEMA_VERSION
    KIND: ClassVar[str] = "a bench"

    @property
    def artifacts(self) -> list[str]:
        """The measured artifacts, in the order they were timed."""
        return list(dict.fromkeys(r["artifact"] for r in self.results))


def short(name: str) -> str:
    """The last two path components: enough to tell runs/lenet/engine-ort-int8 from its siblings."""
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def _percent(flag_noisy: bool):
    return lambda v: "-" if v is None else f"{v * 100:.1f}%" + ("!" if flag_noisy and v > INSTABILITY_BAR else "")


def _latency(stat: str):
    return lambda v: f"{v[stat]:.4f}"


COLUMNS = {
    "artifact": Column("artifact", "artifact", short),
    "backend": Column("backend", "backend"),
    "precision": Column("precision", "precision"),
    "mode": Column("mode", "mode"),
    "batch": Column("batch_size", "batch", "d", ">"),
    "threads": Column("threads", "threads", "d", ">"),
    "median": Column("latency_ms", "median ms", _latency("median"), ">"),
    "p90": Column("latency_ms", "p90 ms", _latency("p90"), ">"),
    "p99": Column("latency_ms", "p99 ms", _latency("p99"), ">"),
    "throughput": Column("throughput_per_s", "items/s", ".0f", ">"),
    "cov": Column("cov", "cov", _percent(False), ">"),
    "stability": Column("stability", "spread", _percent(True), ">"),
    "speedup": Column("speedup", "speedup", lambda v: f"{v:.2f}x", ">"),
    "accuracy": Column("accuracy", "accuracy", ".4f", ">"),
    "audio": Column("ms_per_audio_s", "ms / s audio", ".4f", ">"),
    "rtf": Column("real_time_factor", "RTF", ".2e", ">"),
}
TERMINAL = ("artifact", "backend", "precision", "mode", "threads", "batch", "median", "p99", "throughput", "stability",
            "speedup", "accuracy", "audio")
MARKDOWN = ("artifact", "backend", "precision", "mode", "threads", "batch", "median", "p90", "p99", "throughput", "cov",
            "stability", "speedup", "accuracy", "audio", "rtf")

COMPARE_COLUMNS = [
    Column("artifact", "artifact"),
    Column("precision", "precision"),
    Column("batch_size", "batch", "d", ">"),
    Column("old_median_ms", "old ms", ".4f", ">"),
    Column("new_median_ms", "new ms", ".4f", ">"),
    Column("change", "change", lambda v: f"{v * 100:+.1f}%", ">"),
    Column("noise_band", "noise", _percent(False), ">"),
    Column("verdict", "verdict"),
]


def columns_for(rows: list[dict], names: Iterable[str]) -> list[Column]:
    """The named columns, without ``mode`` when every row was timed end to end and without
    ``accuracy`` when none was measured, and ``threads`` unless rows carry it (a bench sweep)."""
    skip = set()
    if all("threads" not in r for r in rows):
        skip.add("threads")
    if all(r.get("mode", "end-to-end") == "end-to-end" for r in rows):
        skip.add("mode")
    if all(r.get("accuracy") is None for r in rows):
        skip.add("accuracy")
    if all(r.get("ms_per_audio_s") is None for r in rows):
        skip.update(("audio", "rtf"))
    return [COLUMNS[n] for n in names if n not in skip]


def markdown_table(rows: Iterable[Mapping], columns: list[Column]) -> list[str]:
    """The same columns as :func:`format_table`, in markdown syntax."""
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "|" + "|".join("---:" if c.align == ">" else "---" for c in columns) + "|"]
    return lines + ["| " + " | ".join(c.render(r) for c in columns) + " |" for r in rows]


def resolve_baseline(names: list[str], baseline: str | None) -> str:
    """The target ``baseline`` names (its path, or its last two path components); the first if None."""
    if baseline is None:
        return names[0]
    matches = [n for n in names if n == baseline or short(n) == baseline or Path(n) == Path(baseline)]
    if not matches:
        raise InputError(f"--baseline {baseline} is not one of the benchmarked artifacts: {', '.join(names)}")
    return matches[0]


def with_ratios(report: BenchReport, baseline: str | None = None) -> list[dict]:
    """Rows with ``speedup`` = baseline median latency / row median latency, per batch size (and, in a
    bench sweep, per thread count: ratios never cross cells), and ``stability``: the spread of the row's
    round medians against the baseline's in the same rounds (:func:`dlforge.bench.stats.paired_spread`;
    the baseline itself against the next target; None with one target or from an older report).

    ``baseline`` None: the one the report was measured with (``--baseline``, else the first artifact).
    """
    rows = report.results
    base = resolve_baseline(report.artifacts, baseline if baseline is not None else report.settings.get("baseline"))
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["batch_size"], r.get("threads")), []).append(r)
    out = []
    for r in rows:
        cell = cells[r["batch_size"], r.get("threads")]
        ref = next(c for c in cell if c["artifact"] == base)
        partner = ref if r is not ref else next((c for c in cell if c is not ref), None)
        stability = (paired_spread(r["round_medians_ms"], partner["round_medians_ms"])
                     if partner is not None and "round_medians_ms" in r and "round_medians_ms" in partner else None)
        out.append({**r, "speedup": ref["latency_ms"]["median"] / r["latency_ms"]["median"], "baseline": base,
                    "stability": stability})
    return out


def stability_lines(rows: list[dict]) -> list[str]:
    """What the spread column says: an engine unstable on its own, a noisy machine, or too little to tell."""
    unstable = [r for r in rows if r["stability"] is not None and r["stability"] > INSTABILITY_BAR]
    machine = [s for s in (round_spread(r.get("round_medians_ms", [])) for r in rows) if s is not None]
    lines = []
    judged = [r for r in rows if r["stability"] is not None]
    if unstable and len(unstable) == len(judged):
        lines.append(f"warning: {len(unstable)} row(s) marked ! moved by more than {INSTABILITY_BAR * 100:.0f}% against "
                     "the other engines timed in the same rounds, every one of them: an engine is unstable or the "
                     "load on the machine changed within rounds (more busy processes than cores?), and pairing cannot "
                     "tell these apart here; rerun on a quieter machine, with fewer threads or a longer --duration, "
                     "before trusting any ratio")
    elif unstable:
        lines.append(f"warning: {len(unstable)} row(s) marked ! moved by more than {INSTABILITY_BAR * 100:.0f}% against "
                     "another engine timed in the same rounds while the others did not: their own speed is unstable "
                     "(a noisy machine slows every engine of a round alike, which cancels in this ratio); repeat "
                     "before trusting them")
    elif machine and max(machine) > INSTABILITY_BAR:
        lines.append(f"note: round medians moved by up to {max(machine) * 100:.0f}% but together across the engines: "
                     "the machine is noisy, the engines are stable against each other; compare the speedups, which "
                     "are paired per round")
    if rows and all(r["stability"] is None for r in rows):
        lines.append("note: spread needs two engines timed in the same rounds (and --rounds >= 2): with one, a noisy "
                     "machine and an unstable engine cannot be told apart")
    return lines


def table(report: BenchReport, baseline: str | None = None) -> str:
    """The terminal table, with what the ratios mean, the inputs, the notes and what the spread says."""
    rows = with_ratios(report, baseline)
    out = [format_table(rows, columns_for(rows, TERMINAL)),
           f"speedup: median latency of {short(rows[0]['baseline'])} / this row's, per batch size"
           f"{' and thread count' if 'threads' in rows[0] else ''}. spread: (max - min) / median of the row's round "
           f"medians divided by another engine's in the same rounds. inputs: {report.settings['inputs']}."]
    out += [f"note: {note}" for note in report.notes]
    out += stability_lines(rows)
    return "\n".join(out)


def markdown(report: BenchReport, baseline: str | None = None) -> str:
    rows = with_ratios(report, baseline)
    env = report.env
    lines = ["# dlforge bench", "",
             f"CPU: {env['cpu']} x{env['cpu_count']}; threads: {env.get('threads') or 'default'}; "
             f"packages: {', '.join(f'{k} {v}' for k, v in env['packages'].items())}.", "",
             f"Inputs: {report.settings['inputs']}. Interleaved rounds: {report.settings['rounds']}. "
             f"Speedup relative to {short(rows[0]['baseline'])}.", ""]
    lines += markdown_table(rows, columns_for(rows, MARKDOWN))
    lines += [""] + [f"- Note: {note}" for note in report.notes]
    lines += ["", "![latency percentiles vs batch size](latency.png)", ""]
    return "\n".join(lines)


def plot(report: BenchReport, path: Path) -> None:
    """Median and p99 latency per item against batch size, one line per artifact (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(report.artifacts):
        rows = sorted((r for r in report.results if r["artifact"] == name), key=lambda r: r["batch_size"])
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
    return format_table(rows, COMPARE_COLUMNS)
