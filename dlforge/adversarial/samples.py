"""Per-sample records (``dlforge audit --per-sample``): what each test image became on each route and engine.

One versioned JSON object per image, attack, eps, route and engine, written to ``samples.jsonl`` beside the
report; the sweep rebuilds its rows from these records, so four shards give exactly the row of their union.
"""

from __future__ import annotations

import numpy as np


SAMPLES_VERSION = 1
SAMPLES_FILE = "samples.jsonl"


def add_row(run, row: dict, x_adv: np.ndarray, logits: np.ndarray, queries: np.ndarray | None = None) -> None:
    """Append ``row`` and, with ``--per-sample``, its per-sample records: what each test image became on
    this route and engine. On an audio model an L-inf row also says its budget in Carlini & Wagner's dB_x."""
    info = run.engines[0].info
    if info is not None and info.is_audio and row["norm"] == "linf" and row["eps"] > 0:
        from dlforge.data.wav import db_from_eps

        row["db"] = round(db_from_eps(row["eps"], info.audio_peak), 2)
    run.rows.append(row)
    if not run.options.per_sample:
        return
    diff = (x_adv - run.x).reshape(len(run.x), -1).astype(np.float64)
    linf, l2 = np.abs(diff).max(1), np.sqrt((diff ** 2).sum(1))
    pred, clean = logits.argmax(1), run.clean[row["target"]]
    for i in range(len(run.y)):
        run.samples.append({
            "v": SAMPLES_VERSION, "sample": run.options.start + i, "attack": row["attack"], "norm": row["norm"],
            "eps": row["eps"], "route": row["route"], "engine": row["target"], "label": int(run.y[i]),
            "clean_prediction": int(clean[i]), "prediction": int(pred[i]),
            "robust": bool(clean[i] == run.y[i] and pred[i] == run.y[i]),
            "queries": None if queries is None else int(queries[i]),
            "linf": round(float(linf[i]), 7), "l2": round(float(l2[i]), 7)})
