"""Typed records of the audit: what it passes between its steps and the report it returns.

A *route* is how adversarial examples reached the model they are judged on; an adversarial set is keyed by
:class:`AdversarialKey` (what made it, where it was found), not by tuples of varying length.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Literal, get_args

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
class AuditReport:
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
    per_sample: dict | None = None  # {file, version, count, records}, when --per-sample ran

    def to_json(self) -> dict:
        """The ``audit.json`` form: ``schema_version`` first, optional sections only when they ran."""
        out: dict = {"schema_version": AUDIT_SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or f.name not in _OPTIONAL:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, d: dict) -> "AuditReport":
        """An audit report read back from its JSON form; a report of another schema or shape is refused."""
        from dlforge.errors import InputError

        if not isinstance(d, dict) or d.get("schema_version") != AUDIT_SCHEMA_VERSION:
            found = d.get("schema_version") if isinstance(d, dict) else type(d).__name__
            raise InputError(f"not an audit report of schema {AUDIT_SCHEMA_VERSION} (found {found!r}); "
                             "re-run the audit with this dlforge")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"schema_version"})
        missing = sorted(f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                         and f.default_factory is MISSING)
        if unknown or missing:
            raise InputError("not an audit report: " + "; ".join(
                ([f"unknown keys {', '.join(unknown)}"] if unknown else [])
                + ([f"missing keys {', '.join(missing)}"] if missing else [])))
        return cls(**{k: v for k, v in d.items() if k in names})

    def for_terminal(self) -> dict:
        """The JSON form without the image gallery and the per-sample records (what ``--json`` prints)."""
        return {k: v for k, v in self.to_json().items() if k not in ("gallery", "per_sample")}


_OPTIONAL = ("probes", "detections", "per_sample")
