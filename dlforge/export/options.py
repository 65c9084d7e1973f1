"""``ExportOptions``: every setting of the export stage, its default, its help and its checks."""

from __future__ import annotations

import os

from dlforge.options import Options, dataclass, option

EXPORTERS = ("dynamo", "torchscript")
# The opsets dlforge exports to: torch.onnx's dynamo exporter writes 18 and converts down to 7 at
# the oldest; 23 is the newest the installed onnx / ONNX Runtime pair understands.
MIN_OPSET, MAX_OPSET = 7, 23


@dataclass
class ExportOptions(Options):
    """Options of :func:`dlforge.export.onnx_from_checkpoint` (recorded as the onnx card's ``params``)."""

    opset: int = option(18, f"ONNX opset to target ({MIN_OPSET}..{MAX_OPSET}).", min=MIN_OPSET, max=MAX_OPSET)
    dynamic_batch: bool = option(True, "Export the batch dimension as dynamic, or fixed at 1.")
    atol: float = option(1e-4, "Largest allowed |ONNX - PyTorch| on real samples; beyond it the export fails.",
                         min=0, min_open=True)
    samples: int = option(512, "Test images to verify on.", min=1)
    exporter: str = option("dynamo", "torch.onnx exporter; torchscript is the explicit fallback.", choices=EXPORTERS)
    data: str | None = option(None, "The model's dataset, if not where training found it.", nonempty=True)
    data_dir: str | os.PathLike | None = option(None, "Directory of the IDX files of --data.")
