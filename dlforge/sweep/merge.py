"""Merging finished cells into one audit report (from the per-sample records) or one bench report."""

from __future__ import annotations

import numpy as np

from dlforge.adversarial import checks
from dlforge.adversarial.attacks.robust import outcome_rates
from dlforge.adversarial.records import AuditReport
from dlforge.adversarial.samples import SAMPLES_FILE, SAMPLES_VERSION
from dlforge.bench.report import BenchReport
from dlforge.env import environment


def merge(results: list[dict]) -> AuditReport:
    """One audit report from the cells: rows recomputed from the per-sample records of all shards."""

    unique: dict = {}  # the source's white-box rows come from every engine's cells: the same records
    for res in results:
        for r in res["records"]:
            unique.setdefault((r["attack"], r["eps"], r["route"], r["engine"], r["sample"]), r)
    records = list(unique.values())
    first = results[0]
    groups: dict = {}
    meta: dict = {}
    shards: dict = {}  # row key -> {shard start: (that shard's row, its sample count)}
    for res in results:
        for row in res["rows"]:
            key = (row["attack"], row["eps"], row["route"], row["target"])
            meta.setdefault(key, row)
            shards.setdefault(key, {}).setdefault(res["cell"]["start"], (row, res["cell"]["samples"]))
    for r in records:
        groups.setdefault((r["attack"], r["eps"], r["route"], r["engine"]), []).append(r)
    rows = []
    for key, group in groups.items():
        template = meta[key]
        row = {k: template[k] for k in ("attack", "norm", "eps", "route", "target", "path")}
        row.update(outcome_rates(*(np.array([r[k] for r in group]) for k in ("prediction", "label", "clean_prediction"))),
                   samples=len(group))
        queries = [r["queries"] for r in group if r["queries"] is not None]
        if queries:
            row["queries_per_sample"] = sum(queries) / len(queries)
        if "crafted_on" in template:
            row["crafted_on"] = template["crafted_on"]
        if "stages" in template:
            row["stages"] = _merge_stages(list(shards[key].values()))
        rows.append(row)
    rows.sort(key=lambda r: (r["attack"], r["route"], r["target"], r["eps"]))
    engines = {}
    for res in results:
        for e in res["engines"]:
            engines.setdefault(e["label"], {**e, "correct": {}})
    for r in records:
        if r["engine"] in engines:
            engines[r["engine"]]["correct"][r["sample"]] = r["clean_prediction"] == r["label"]
    engine_rows = [{k: v for k, v in e.items() if k != "correct"} | {
        "clean_accuracy": sum(e["correct"].values()) / max(len(e["correct"]), 1)} for e in engines.values()]
    samples = len({r["sample"] for r in records})
    gap_bar = first["cell"]["settings"].get("gap_bar", 0.05)
    gaps = checks.transfer_gaps(rows, gap_bar)
    recomputed = [checks.monotone_check(rows), checks.masking_check(rows), checks.transfer_gap_check(gaps, gap_bar),
                  checks.engine_gradient_check(gaps, gap_bar)]
    per_cell: dict = {}  # the checks of one model (logits, gradients, full range): combined over the cells
    for res in results:
        for c in res["checks"]:
            if c["name"] not in {r["name"] for r in recomputed}:
                per_cell.setdefault(c["name"], []).append(c)
    full_range = checks.full_range_check(None)["name"]
    cell_checks = [_combine(name, found, any_pass=name == full_range) for name, found in per_cell.items()]
    return AuditReport(
        env=environment(), target=[e["path"] for e in engine_rows], engines=engine_rows, source=first["source"],
        crafted_on=first["crafted_on"], data=first["data"], samples=samples, value_range=first["value_range"],
        clean_accuracy=engine_rows[0]["clean_accuracy"],
        settings={**first["cell"]["settings"], "sweep_cells": len(results)}, rows=rows, transfer_gaps=gaps,
        checks=cell_checks + recomputed,
        per_sample={"file": SAMPLES_FILE, "version": SAMPLES_VERSION, "count": len(records),
                    "records": sorted(records, key=lambda r: (r["attack"], r["eps"], r["route"], r["engine"],
                                                             r["sample"]))})


def merge_bench(results: list[dict]) -> BenchReport:
    """One bench report from the cells: every cell's rows, each tagged with its thread count."""
    first = results[0]["report"]
    rows = [{**row, "threads": res["cell"]["threads"]} for res in results for row in res["report"]["results"]]
    hosts = sorted({f"{res['report']['env'].get('platform')} ({res['report']['env'].get('cpu')})" for res in results})
    notes = list(dict.fromkeys(n for res in results for n in res["report"].get("notes", [])))
    if len(hosts) > 1:
        notes.append("cells ran on different machines: compare rows within a cell (same batch and threads) only")
    settings = {**first["settings"], "batch_sizes": sorted({r["batch_size"] for r in rows}),
                "threads": sorted({res["cell"]["threads"] for res in results}), "sweep_cells": len(results),
                "hosts": hosts}
    return BenchReport(env=first["env"], settings=settings, results=rows, notes=notes,
                       options={**first["options"], "batch_sizes": settings["batch_sizes"],
                                "threads": settings["threads"]})


def _merge_stages(parts: list[tuple[dict, int]]) -> list[dict]:
    """AutoAttack's per-stage robust accuracy over shards: sample-weighted means; points fooled summed."""
    total = sum(n for _, n in parts)
    out = []
    for i, stage in enumerate(parts[0][0]["stages"]):
        merged = {**stage, "robust_accuracy": sum(row["stages"][i]["robust_accuracy"] * n for row, n in parts) / total,
                  "fooled": sum(row["stages"][i].get("fooled", 0) for row, _ in parts)}
        if not all("skipped" in row["stages"][i] for row, _ in parts):
            merged.pop("skipped", None)
        out.append(merged)
    return out


def _combine(name: str, found: list[dict], any_pass: bool = False) -> dict:
    """A per-cell check over all cells: fail if any failed, pass if any passed and none failed, else n/a.
    ``any_pass`` (the full-range check, which each cell runs with its own attack, e.g. FGSM): pass if any
    cell's attack reached ~0 at the full range, as one audit judges it with its strongest gradient attack."""
    from dlforge.adversarial.checks import FAIL, NA, PASS, check

    statuses = [c["status"] for c in found]
    if any_pass:
        status = PASS if PASS in statuses else FAIL if FAIL in statuses else NA
    else:
        status = FAIL if FAIL in statuses else PASS if PASS in statuses else NA
    judged = sum(s != NA for s in statuses)
    example = next((c for c in found if c["status"] == status), found[0])
    return check(name, status, f"{judged} of {len(found)} cells judged; e.g. {example['detail']}")
