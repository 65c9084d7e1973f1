"""``bench``: latency and throughput of engines, accuracy beside speed (``dlforge bench -o``)."""

from __future__ import annotations

import json

from dlforge.kinds import ArtifactKind, register_kind


def headline(artifact) -> str:
    rows = json.loads(artifact.payload_path.read_text(encoding="utf-8"))["results"]
    smallest = min(r["batch_size"] for r in rows)
    parts = [f"{r['backend']} {r['precision']} {r['latency_ms']['median']:.3f} ms" for r in rows
             if r["batch_size"] == smallest]
    return f"batch {smallest} median latency: " + ", ".join(parts) + " (see report.md)"


register_kind(ArtifactKind("bench", produced_by="dlforge bench -o", headline=headline))
