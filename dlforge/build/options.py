"""``BuildOptions``: every setting of ``dlforge build``, validated in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dlforge.backends.base import BACKENDS
from dlforge.errors import InputError
from dlforge.options import Options, flag_of, option
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
    backend_options: dict = option({}, "The backend's own options (its options class: Backend.options_class), by "
                                       "field name; keyword overrides that are not build options land here.", cli=False)

    @property
    def opt(self) -> int:
        """The batch to optimize for: ``opt_batch``, or ``min_batch`` when not given."""
        return self.opt_batch if self.opt_batch is not None else self.min_batch

    def check(self) -> None:
        top = self.max_batch if self.max_batch is not None else max(self.min_batch, self.opt)
        if not self.min_batch <= self.opt <= top:
            raise InputError(f"batch range must satisfy --min-batch <= --opt-batch <= --max-batch, got "
                             f"{self.min_batch} <= {self.opt} <= {self.max_batch}")

    @classmethod
    def build(cls, options: BuildOptions | None = None, **overrides) -> BuildOptions:
        """As :meth:`Options.build`; an override that is not a build option but an option of a registered
        backend (``reduce_range="on"``, ``workspace_mib=1024``) joins ``backend_options``, and the chosen backend
        checks it; any other name is a ``TypeError``, as for every options class."""
        own = {f.name for f in dataclasses.fields(cls)}
        backends = {f.name for _, b in BACKENDS.items() if b.options_class is not None
                    for f in dataclasses.fields(b.options_class)}
        extra = {k: overrides.pop(k) for k in list(overrides) if k not in own and k in backends}
        if extra:
            base = overrides.get("backend_options", options.backend_options if options is not None else {})
            overrides["backend_options"] = {**base, **extra}
        return super().build(options, **overrides)

    def for_backend(self):
        """The chosen backend's own options (its ``options_class``) from ``backend_options``; an option the
        backend does not have is refused, naming the backend that has it."""
        backend = BACKENDS.get(self.backend)
        cls = backend.options_class
        known = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
        for key in self.backend_options:
            if key not in known:
                owners = {name: f for name, b in BACKENDS.items() if b.options_class is not None
                          for f in dataclasses.fields(b.options_class) if f.name == key}
                if not owners:
                    raise InputError(f"backend {self.backend} has no option {key!r}")
                flag = flag_of(next(iter(owners.values())))
                raise InputError(f"{flag} is an option of --backend {' or '.join(owners)}, not {self.backend}")
        return cls(**self.backend_options) if cls is not None else None

    @property
    def budget(self) -> float:
        """The accuracy budget of ``auto``: ``max_accuracy_drop``, or 1 point."""
        return AUTO_DEFAULT_BUDGET if self.max_accuracy_drop is None else self.max_accuracy_drop
