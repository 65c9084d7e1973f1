"""The poisoning reports, typed: :class:`BackdoorReport` (a backdoor or label flip, its defences, the fp32 ->
INT8 differential) and :class:`AvailabilityReport` (accuracy against the injection rate). ``run_poison`` returns
one; ``to_json`` is the ``poison.json`` payload (the schema version written here only) and
:func:`read_poison_report` reads either back. Rows stay JSON-shaped dicts (their keys are documented with the
report in the README)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dlforge.reporting import Report

POISON_SCHEMA_VERSION = 2


@dataclass
class BackdoorReport(Report):
    model: str
    data: str
    attack: str
    mode: str
    rate: float
    target_class: int
    trigger_size: int | None
    poisoned_samples: int
    settings: dict  # the PoisonOptions it ran with
    clean_accuracy: float  # the poisoned PyTorch model: C-Acc, ASR, R-Acc (BackdoorBench's metrics)
    attack_success_rate: float
    robust_accuracy: float
    artifacts: dict  # checkpoint, onnx[, baseline]
    engines: list[dict]  # per precision: path, C-Acc, ASR, R-Acc
    defences: list[dict]  # per defence and engine: detection rates, per-class rows, settings[, *_after]
    differential: list[dict]  # per defence: fp32 against INT8 detection, survives
    survival_criterion: str
    published: dict  # per defence run: the paper, its method and what it reports
    env: dict = field(default_factory=dict)
    baseline_clean_accuracy: float | None = None  # with --baseline
    clean_accuracy_drop_vs_baseline: float | None = None  # points

    SCHEMA_VERSION: ClassVar[int] = POISON_SCHEMA_VERSION
    KIND: ClassVar[str] = "a backdoor-poisoning"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("baseline_clean_accuracy", "clean_accuracy_drop_vs_baseline")


@dataclass
class AvailabilityReport(Report):
    model: str
    data: str
    attack: str
    attacks: list[str]  # the attack and, with --reference, random labels
    rates: list[float]
    clean_samples: int
    defences: list[str]
    settings: dict
    curve: list[dict]  # per attack and rate (rate 0: the clean model): accuracy on PyTorch, fp32, INT8[, loss_filter]
    artifacts: dict
    clean_accuracy: float
    lowest_accuracy: float
    summary: dict  # the attack against random labels at each rate
    env: dict = field(default_factory=dict)
    kind: str = "availability"

    SCHEMA_VERSION: ClassVar[int] = POISON_SCHEMA_VERSION
    KIND: ClassVar[str] = "an availability-poisoning"


PoisonReport = BackdoorReport | AvailabilityReport


def read_poison_report(d: dict) -> PoisonReport:
    """A ``poison.json`` payload read back as the report it is."""
    return (AvailabilityReport if isinstance(d, dict) and d.get("kind") == "availability" else BackdoorReport).from_json(d)


__all__ = ["AvailabilityReport", "BackdoorReport", "POISON_SCHEMA_VERSION", "PoisonReport", "read_poison_report"]
