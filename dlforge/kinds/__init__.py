"""Artifact kinds: what each kind of artifact directory is, who makes it and its one-line result (stdlib only).

A kind is one module in this package registering an :class:`ArtifactKind`; the card check (which kinds
exist, which hold a model), ``open_artifact``'s errors (which command makes the kind asked for) and
``dlforge inspect`` (the headline) read it from the registry, so a new kind of artifact is one module::

    from dlforge.kinds import ArtifactKind, register_kind

    register_kind(ArtifactKind("calibration", produced_by="dlforge calibrate", headline=my_headline))

Headlines read only the card and the payload (no torch, no onnxruntime): ``dlforge inspect`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from dlforge.registry import Registry

if TYPE_CHECKING:
    from dlforge.artifact import Artifact


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact.

    Attributes:
        name: the card's ``kind``.
        produced_by: the command a user runs to make one (named when another kind was given instead).
        holds_model: the payload is a model (checkpoint, ONNX, engine): the card needs a ``model`` section
            and a 0-byte payload is refused.
        headline: the one line that matters for an artifact of this kind (what ``train``, ``build`` and
            ``inspect`` print); ``None`` prints the kind.
        check_card: checks of the card's kind-specific fields, ``(card_dict, card_path)``, raising
            :class:`~dlforge.errors.ArtifactError` naming the bad field; run after the common checks.
    """

    name: str
    produced_by: str
    holds_model: bool = False
    headline: Optional[Callable[["Artifact"], str]] = None
    check_card: Optional[Callable[[dict, Path], None]] = None


ARTIFACT_KINDS: Registry[ArtifactKind] = Registry("artifact kind", packages=("dlforge.kinds",))


def register_kind(kind: ArtifactKind) -> ArtifactKind:
    """Register ``kind`` under its name (a name is registered once)."""
    return ARTIFACT_KINDS.register(kind.name)(kind)


def kind_names() -> tuple[str, ...]:
    return ARTIFACT_KINDS.names()


def slow_int8(arithmetic: dict | None) -> str:
    """A headline's note when ONNX Runtime runs the INT8 graph on its slower exact kernels on this CPU (see
    :mod:`dlforge.backends.ort.arithmetic`)."""
    if not arithmetic or not arithmetic.get("kernels", "").startswith("U8U8"):
        return ""
    return ("; INT8 on ONNX Runtime's exact U8U8 kernels here (full-range weights would saturate U8S8 on this CPU, "
            "no VNNI), see card.json")


def headline(artifact: "Artifact") -> str:
    """The artifact's one-line result, from its kind's headline."""
    kind = ARTIFACT_KINDS.get(artifact.kind)
    return kind.headline(artifact) if kind.headline else artifact.kind
