"""Check a compiled engine against its parent on held-out data before it is called done."""

from __future__ import annotations

import numpy as np

from dlforge.errors import StageFailed
from dlforge.runtime.deployed import DeployedModel


def compare(engine: DeployedModel, parent: DeployedModel, x: np.ndarray, y: np.ndarray | None, task: str) -> dict:
    """Accuracy (or reconstruction MSE) of engine and parent on the same inputs, and their agreement.

    Both are run through :meth:`DeployedModel.predict`, so any batch range is respected.
    ``accuracy_drop`` is in percentage points: (parent - engine) * 100.
    """
    got, ref = engine.predict(x), parent.predict(x)
    if not np.isfinite(got).all():
        raise StageFailed(f"the compiled engine produced NaN or inf on {int((~np.isfinite(got)).any(axis=tuple(range(1, got.ndim))).sum())} "
                          "of the evaluation samples; nothing was saved (is the parent model itself finite?)")
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
