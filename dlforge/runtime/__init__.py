"""The edge runtime: open a compiled model and run it with numpy arrays.

Imports numpy and the backend it opens (onnxruntime or tensorrt), nothing else: no torch, no click,
no onnx. ::

    from dlforge.runtime import open_session

    with open_session("runs/lenet/engine-ort-int8") as session:
        logits = session.predict(images)                 # images: float32 (N, 1, 8, 8) in [0, 1]

    with open_deployed("runs/lenet/engine-ort-int8") as model:   # any N: batched within the engine's range
        logits = model.predict(test_images)
"""

from dlforge.runtime.base import Session
from dlforge.runtime.deployed import DeployedModel, batch_plan, open_deployed
from dlforge.runtime.open import open_session

__all__ = ["DeployedModel", "Session", "batch_plan", "open_deployed", "open_session"]
