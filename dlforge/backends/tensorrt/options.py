"""TensorRT's own build options (``dlforge build --backend tensorrt``); no TensorRT import."""

from __future__ import annotations

from dlforge.errors import InputError
from dlforge.options import Options, dataclass, option


@dataclass
class TensorRTBuildOptions(Options):
    shapes: tuple[str, ...] | None = option(None, "TensorRT profile as trtexec shape specs (min, opt, max).",
                                             cli=False, flag="--min-shapes/--opt-shapes/--max-shapes")
    workspace_mib: int | None = option(None, "TensorRT workspace limit in MiB.", min=1, flag="--workspace")
    optimization_level: int = option(3, "TensorRT builder optimization level.", min=0, max=5,
                                     flag="--builder-optimization-level")

    def check(self) -> None:
        if self.shapes is not None and len(self.shapes) != 3:
            raise InputError("--min-shapes, --opt-shapes and --max-shapes go together; give all three")
