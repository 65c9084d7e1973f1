"""ONNX Runtime's own build options (``dlforge build --backend ort``)."""

from __future__ import annotations

from dlforge.options import Options, dataclass, option


@dataclass
class OrtBuildOptions(Options):
    reduce_range: str = option("auto", "ONNX Runtime INT8 weights in 7 bits: auto does it on x86 CPUs without VNNI or "
                                       "AMX, whose U8S8 kernels saturate full-range weights (an engine built there is "
                                       "exact there and fast); on, off.", choices=("auto", "on", "off"))
