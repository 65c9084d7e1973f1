"""Check a compiled engine against its parent on held-out data before it is called done."""

from __future__ import annotations

import numpy as np

from dlforge.runtime.base import Session


def batched_outputs(session: Session, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The session's first output over ``x``, batch by batch (one by one for a static batch of 1)."""
    batch_dim = session.inputs[0].shape[0]
    if isinstance(batch_dim, int):
        batch_size = batch_dim
    return np.concatenate([session.predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def compare(engine: Session, parent: Session, x: np.ndarray, y: np.ndarray | None, task: str) -> dict:
    """Accuracy (or reconstruction MSE) of engine and parent on the same inputs, and their agreement.

    ``accuracy_drop`` is in percentage points: (parent - engine) * 100.
    """
    got, ref = batched_outputs(engine, x), batched_outputs(parent, x)
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    out = {"samples": int(len(x)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    if task == "classification":
        acc, parent_acc = float((got.argmax(1) == y).mean()), float((ref.argmax(1) == y).mean())
        out.update(accuracy=acc, parent_accuracy=parent_acc, accuracy_drop=round((parent_acc - acc) * 100, 4),
                   top1_agreement=float((got.argmax(1) == ref.argmax(1)).mean()))
    else:
        flat = x.reshape(len(x), -1)
        mse = float(((got.reshape(len(x), -1) - flat) ** 2).mean())
        parent_mse = float(((ref.reshape(len(x), -1) - flat) ** 2).mean())
        out.update(accuracy=None, parent_accuracy=None, accuracy_drop=None, top1_agreement=None,
                   mse=mse, parent_mse=parent_mse)
    return out
