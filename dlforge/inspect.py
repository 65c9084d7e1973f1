"""What an artifact is and where it came from: the data behind ``dlforge inspect``."""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.artifact import Artifact, open_artifact, sha256_file
from dlforge.kinds import headline


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
    out["headline"] = headline(artifact)
    if artifact.payload_path.suffix == ".onnx":
        from dlforge.onnx_info import onnx_summary

        out["graph"] = onnx_summary(artifact.payload_path)
    return out


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
        final = layer.get("final") or {}
        if final.get("log_likelihood_held_out") is not None:
            se = final.get("log_z_standard_error")
            lines.append(f"             held-out log-likelihood {final['log_likelihood_held_out']:.2f}"
                         + (f" +- {se:.2f}" if se is not None else "") + f" nats (log Z {final['log_z_method']}), "
                         f"pseudo-log-likelihood {final['pseudo_log_likelihood']:.2f}, free-energy gap "
                         f"{final['free_energy_gap']:.2f}")
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
    if info.get("headline"):
        lines.append(f"  result     {info['headline']}")
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
