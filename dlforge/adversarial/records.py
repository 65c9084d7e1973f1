"""Typed records of the audit: what it passes between its steps and the report it returns.

A *route* is how adversarial examples reached the model they are judged on; an adversarial set is keyed by
:class:`AdversarialKey` (what made it, where it was found), not by tuples of varying length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from dlforge.reporting import Report

Route = Literal["white-box", "transfer", "white-box (engine)", "query"]
ROUTES: tuple[str, ...] = get_args(Route)
WHITE_BOX: Route = "white-box"  # crafted and judged on the source model
TRANSFER: Route = "transfer"  # crafted on the source, judged on an engine
ENGINE_ROUTE: Route = "white-box (engine)"  # crafted on an engine's own graph, judged on that engine
QUERY: Route = "query"  # found by querying the engine alone


@dataclass(frozen=True)
class AdversarialKey:
    """What an adversarial set in ``AuditRun.adv`` is: the attack and eps that made it, and where it was found.

    ``engine`` is None for examples crafted on the source model (every engine is judged on them by
    transfer); otherwise the engine whose graph or queries found them, with the ``route`` that did.
    """

    attack: str
    eps: float
    engine: str | None = None
    route: Route = "transfer"

    @property
    def transferable(self) -> bool:
        """Crafted on the source: the same inputs are judged on every engine."""
        return self.engine is None


AUDIT_SCHEMA_VERSION = 3  # audit.json's schema: written by AuditReport.to_json, checked by AuditReport.from_json


@dataclass
class AuditReport(Report):
    """What ``dlforge audit`` found: the rows (one per attack, eps, route and judged model), the checks that
    judge them and the evidence sections. ``run_audit`` and the sweep's merge return one; ``to_json`` is the
    ``audit.json`` payload (the schema version written here only) and ``from_json`` reads one back.

    Rows, checks and sections stay JSON-shaped dicts (their keys are documented with the report in the README);
    the report's own fields are typed.
    """

    target: list[str]
    engines: list[dict]
    source: str | None
    crafted_on: str | None
    data: str
    samples: int
    value_range: list[float]
    clean_accuracy: float
    settings: dict
    rows: list[dict]
    checks: list[dict]
    env: dict = field(default_factory=dict)
    comparisons: list[dict] = field(default_factory=list)
    engine_graphs: list[dict] = field(default_factory=list)
    transfer_gaps: list[dict] = field(default_factory=list)
    invariance: list[dict] = field(default_factory=list)
    gallery: list[dict] = field(default_factory=list)
    probes: dict | None = None  # by probe spec, when probes ran
    detections: list[dict] | None = None  # when --detectors ran
    adaptive: list[dict] | None = None  # when --detectors ran with --adaptive
    arms_race: list[dict] | None = None  # when --arms-race ran
    tramer: list[dict] | None = None  # detector claims against robust accuracy at eps/2 (checks.tramer_bounds)
    adaptive_gallery: list[dict] | None = None  # evading examples of the adaptive attacks ({group, title, image})
    per_sample: dict | None = None  # {file, version, count, records}, when --per-sample ran
    audio: dict | None = None  # {sample_rate, peak}: the model takes sound; its L-inf rows also carry dB_x

    SCHEMA_VERSION: ClassVar[int] = AUDIT_SCHEMA_VERSION
    KIND: ClassVar[str] = "an audit"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("probes", "detections", "adaptive", "arms_race", "tramer", "adaptive_gallery",
                                           "per_sample", "audio")

    def for_terminal(self) -> dict:
        """The JSON form without the image gallery and the per-sample records (what ``--json`` prints)."""
        return {k: v for k, v in self.to_json().items() if k not in ("gallery", "adaptive_gallery", "per_sample")}


