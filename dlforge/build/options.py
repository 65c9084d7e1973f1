"""``BuildOptions``: every setting of ``dlforge build``, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass

from dlforge.backends.base import BACKENDS
from dlforge.errors import InputError
from dlforge.options import Options, option
from dlforge.precision.calibration import CALIBRATION_METHODS

PRECISIONS = ("fp32", "fp16", "int8", "auto")
AUTO_DEFAULT_BUDGET = 1.0  # percentage points


@dataclass
class BuildOptions(Options):
    backend: str = option("ort", "Backend that compiles the engine.", choices=BACKENDS.names)
    precision: str = option("fp32", "fp16 needs --backend tensorrt; auto measures the candidates (whole-model fp32 "
                                    "and INT8, and a per-layer plan searched on measurements) and keeps the fastest "
                                    "within the accuracy budget.", choices=PRECISIONS)
    calib_data: str | None = option(None, "INT8 calibration dataset (default: the model's own).")
    data_dir: str | None = option(None, "Directory of the dataset's files (MNIST, Fashion-MNIST).")
    calib_samples: int = option(512, "Calibration images, from the training split.", min=1)
    calib_method: str = option("minmax", "INT8 calibration method.", choices=CALIBRATION_METHODS)
    per_channel: bool = option(True, "INT8 weight scales per output channel (else per tensor).")
    reduce_range: str = option("auto", "ONNX Runtime INT8 weights in 7 bits: auto does it on x86 CPUs without VNNI "
                                       "or AMX, whose U8S8 kernels saturate with full-range weights (an engine built "
                                       "there is exact there); on, off.", choices=("auto", "on", "off"))
    max_accuracy_drop: float | None = option(None, "Fail when accuracy drops more than this many percentage "
                                                   "points below the parent's.", min=0, max=100)
    precision_plan: str | None = option(None, "With --precision int8: a plan.json (or an engine built with --precision "
                                              "auto) naming the ONNX nodes to keep in fp32.")
    max_robust_drop: float | None = option(None, "With --precision auto: the per-layer plan may also lose at most this "
                                                 "many points of robust accuracy (PGD on the engine).", min=0, max=100)
    robust_eps: float = option(0.1, "L-inf eps of --max-robust-drop's PGD.", min=0)
    eval_samples: int | None = option(None, "Held-out images to evaluate on (default: the whole test split).", min=1)
    threads: int | None = option(None, "Intra-op threads of the ONNX Runtime sessions the build evaluates and --precision "
                                       "auto times (default: ONNX Runtime's, one per core); time with the count you "
                                       "will deploy with.", min=1)
    min_batch: int = option(1, "Smallest batch the engine accepts (TensorRT profile; recorded for ORT).", min=1)
    opt_batch: int | None = option(None, "Batch to optimize for; also the batch --precision auto times "
                                         "(default: --min-batch).", min=1)
    max_batch: int | None = option(None, "Largest batch the engine accepts (TensorRT default 64; ORT: unlimited "
                                         "unless given).", min=1)
    shapes: tuple[str, ...] | None = option(None, "TensorRT profile as trtexec shape specs (min, opt, max).",
                                             cli=False)
    workspace_mib: int | None = option(None, "TensorRT workspace limit in MiB.", min=1)
    optimization_level: int = option(3, "TensorRT builder optimization level.", min=0, max=5)

    @property
    def opt(self) -> int:
        """The batch to optimize for: ``opt_batch``, or ``min_batch`` when not given."""
        return self.opt_batch if self.opt_batch is not None else self.min_batch

    def check(self) -> None:
        top = self.max_batch if self.max_batch is not None else max(self.min_batch, self.opt)
        if not self.min_batch <= self.opt <= top:
            raise InputError(f"batch range must satisfy --min-batch <= --opt-batch <= --max-batch, got "
                             f"{self.min_batch} <= {self.opt} <= {self.max_batch}")
        if self.shapes is not None and len(self.shapes) != 3:
            raise InputError("--min-shapes, --opt-shapes and --max-shapes go together; give all three")

    @property
    def budget(self) -> float:
        """The accuracy budget of ``auto``: ``max_accuracy_drop``, or 1 point."""
        return AUTO_DEFAULT_BUDGET if self.max_accuracy_drop is None else self.max_accuracy_drop
