"""What an artifact is and where it came from: the data behind ``dlforge inspect``."""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.artifact import Artifact, open_artifact, sha256_file


def lineage(artifact: Artifact) -> list[dict]:
    """The chain of parents, nearest first, each checked against the sha256 its child recorded."""
    chain = []
    parent = artifact.card.parent
    seen = set()
    while parent and parent.get("path") and parent["path"] not in seen:
        seen.add(parent["path"])
        entry = {"path": parent["path"], "sha256": parent.get("sha256")}
        try:
            p = open_artifact(parent["path"], verify=False)
        except Exception:  # a moved or deleted parent is reported, not fatal
            entry["status"] = "missing"
            chain.append(entry)
            break
        entry["kind"] = p.kind
        entry["status"] = "ok" if sha256_file(p.payload_path) == parent.get("sha256") else "changed since"
        chain.append(entry)
        parent = p.card.parent
    return chain


def describe(path: str | os.PathLike) -> dict:
    """A summary of the artifact (or plain ``.onnx`` file) at ``path``."""
    path = Path(path)
    if path.suffix == ".onnx" and path.is_file():
        from dlforge.onnx_info import onnx_summary

        return {"path": str(path), "kind": "onnx (no card)", **onnx_summary(path)}
    artifact = open_artifact(path)
    card = artifact.card
    out = {
        "path": str(path),
        "kind": card.kind,
        "payload": card.payload,
        "size_bytes": artifact.payload_path.stat().st_size,
        "sha256": card.sha256,
        "model": card.model.to_dict() if card.model else None,
        "params": card.params,
        "lineage": lineage(artifact),
    }
    out.update(card.sections)
    if card.kind in ("onnx", "engine") and artifact.payload_path.suffix == ".onnx":
        from dlforge.onnx_info import onnx_summary

        out["graph"] = onnx_summary(artifact.payload_path)
    return out


def headline(artifact: Artifact) -> str:
    """One line with the figure that matters for the artifact's kind."""
    s = artifact.card.sections
    if artifact.kind == "checkpoint":
        m = s.get("metrics")
        imported = s.get("architecture", {}).get("route") or ("zoo" if "weights" in s else None)
        if m is None:
            return f"imported ({imported} route); not measured (import it with --data to record its test accuracy)"
        quality = (f"test accuracy {m['test_accuracy']:.4f}" if m.get("test_accuracy") is not None else
                   f"test reconstruction MSE {m['test_mse']:.5f} (mean-image baseline {m['mean_image_mse']:.5f})")
        if imported:
            fixed = s.get("weights", {}).get("fixups")
            return (f"{quality} on {m.get('test_samples', '?')} test images (imported, {imported} route"
                    + (f"; weights fixed up: {len(fixed)} step(s), see card.json" if fixed else "") + ")")
        return (f"{quality} ({len(m['history'])} epochs, {m['train_seconds']:.1f} s, "
                f"{m['samples_per_s']:.0f} samples/s)")
    if artifact.kind == "onnx":
        v = s["verification"]
        agreement = f", top-1 agreement {v['top1_agreement']:.4f}" if v.get("top1_agreement") is not None else ""
        return f"verified on {v['samples']} samples: max abs diff {v['max_abs_diff']:.2e} (atol {v['atol']:g}){agreement}"
    if artifact.kind == "engine":
        ev = s["evaluation"]
        if ev.get("accuracy") is None:
            quality = f"reconstruction MSE {ev['mse']:.5f} (parent {ev['parent_mse']:.5f})"
        else:
            quality = (f"accuracy {ev['accuracy']:.4f} (parent {ev['parent_accuracy']:.4f}, drop "
                       f"{ev['accuracy_drop']:.2f} pts, top-1 agreement {ev['top1_agreement']:.4f})")
        return f"{s['backend']} {s['precision']}: {quality} on {ev['samples']} held-out samples"
    if artifact.kind == "bench":
        import json

        rows = json.loads(artifact.payload_path.read_text(encoding="utf-8"))["results"]
        parts = []
        for r in rows:
            if r["batch_size"] == min(x["batch_size"] for x in rows):
                parts.append(f"{r['backend']} {r['precision']} {r['latency_ms']['median']:.3f} ms")
        return f"batch {rows[0]['batch_size']} median latency: " + ", ".join(parts) + " (see report.md)"
    if artifact.kind == "audit":
        import json

        report = json.loads(artifact.payload_path.read_text(encoding="utf-8"))
        checks = report["checks"]
        eps = report["settings"]["eps"]
        at = max([e for e in eps if e <= 0.1] or [min(eps)])
        worst = {}
        for r in report["rows"]:
            if r["route"] != "white-box" and r["eps"] == at:
                worst[r["target"]] = min(worst.get(r["target"], 1.0), r["robust_accuracy"])
        return (f"{report['samples']} images; worst robust accuracy at eps {at:g}: "
                + ", ".join(f"{t} {a:.3f}" for t, a in worst.items())
                + "; checks " + ", ".join(f"{sum(c.get('status') == s for c in checks)} {s}"
                                          for s in ("pass", "fail", "n/a")) + " (see report.html)")
    if artifact.kind == "drift":
        import json

        hops = json.loads(artifact.payload_path.read_text(encoding="utf-8"))["hops"]
        return "accuracy / robust: " + ", ".join(
            f"{h['hop']} {h['accuracy']:.4f} / " + ("-" if h["robust_accuracy"] is None else f"{h['robust_accuracy']:.3f}")
            for h in hops) + " (see report.html)"
    return artifact.kind


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _model_lines(model: dict) -> list[str]:
    lines = [f"  model      {model['name']} ({model['task']}), trained on {model.get('dataset')}"]
    for t in model["inputs"]:
        lines.append(f"  input      {t['name']}: {t['dtype']}{t['shape']}  range {model['value_range']}")
    for t in model["outputs"]:
        lines.append(f"  output     {t['name']}: {t['dtype']}{t['shape']}")
    if model.get("labels"):
        labels = model["labels"]
        shown = ", ".join(labels) if len(labels) <= 20 else \
            f"{len(labels)} classes: " + "; ".join(labels[:3]) + f"; ... ; {labels[-1]}"
        lines.append(f"  labels     {shown}")
    return lines


def _metrics_lines(metrics: dict) -> list[str]:
    quality = (f"test acc   {metrics['test_accuracy']:.4f}" if metrics.get("test_accuracy") is not None
               else f"test MSE   {metrics['test_mse']:.5f} (mean-image baseline {metrics['mean_image_mse']:.5f})")
    lines = [f"  {quality} after {len(metrics['history'])} epochs ({metrics['train_seconds']:.1f} s)"
             if "history" in metrics else f"  {quality} (imported, not trained by dlforge)"]
    for layer in metrics.get("pretraining", {}).get("layers", []):
        lines.append(f"  pretrain   RBM {layer['layer']} ({layer['visible']}->{layer['hidden']}): reconstruction "
                     f"error {' -> '.join(f'{e:.4f}' for e in layer['reconstruction_error'])}")
    return lines


def _graph_lines(graph: dict, with_io: bool) -> list[str]:
    lines = [f"  graph      opset {graph['opset']}, {graph['nodes']} nodes, producer {graph['producer'] or '?'}",
             "  ops        " + ", ".join(f"{op} x{n}" for op, n in graph["ops"].items())]
    if with_io:
        for t in graph["inputs"]:
            lines.append(f"  input      {t['name']}: {t['dtype']}{t['shape']}")
        for t in graph["outputs"]:
            lines.append(f"  output     {t['name']}: {t['dtype']}{t['shape']}")
    return lines


def render(info: dict) -> str:
    """``describe()``'s result as text for the terminal (an artifact, or a plain ``.onnx`` file)."""
    lines = [f"{info['path']}: {info['kind']}"]
    model = info.get("model")
    if model:
        lines += _model_lines(model)
    if "payload" in info:
        lines.append(f"  payload    {info['payload']} ({info['size_bytes'] / 1024:.1f} KiB, sha256 {info['sha256'][:12]})")
    elif "size_bytes" in info:
        lines.append(f"  size       {info['size_bytes'] / 1024:.1f} KiB")
    for key in ("backend", "precision"):
        if key in info:
            lines.append(f"  {key:<10} {info[key]}")
    if info.get("architecture"):
        lines.append("  rebuilt    " + ", ".join(f"{k} {v}" for k, v in info["architecture"].items()))
    if info.get("normalization"):
        lines.append(f"  normalize  mean {info['normalization']['mean']}, std {info['normalization']['std']} "
                     "(inside the model: it takes pixels)")
    if info.get("metrics"):
        lines += _metrics_lines(info["metrics"])
    for section in ("verification", "evaluation"):
        if section in info:
            body = ", ".join(f"{k} {_fmt(v)}" for k, v in info[section].items() if not isinstance(v, (dict, list)))
            lines.append(f"  {section[:10]:<10} {body}")
    graph = info.get("graph") or (info if "ops" in info else None)
    if graph:
        lines += _graph_lines(graph, with_io="inputs" in graph and not model)
    for p in info.get("lineage", []):
        lines.append(f"  parent     {p.get('kind', '?')} {p['path']} ({p['status']})")
    return "\n".join(lines)
