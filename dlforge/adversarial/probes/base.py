"""What a probe is: an audit experiment with its own measure, registered in :data:`PROBES`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

from dlforge.adversarial.attacks.base import GRADIENTS
from dlforge.registry import Registry


class Probe(ABC):
    """An experiment on the audited models that is not an eps-ball attack on the test points: it has
    its own measure (confidence on unrecognizable inputs, misclassification after transfer, ...) and
    runs once per audit, not once per eps.

    ``probe(run, show)`` gets the audit's state (:class:`dlforge.adversarial.audit.AuditRun`: the
    engines, the source model and engine graphs where there are gradients, the test points, the
    dataset) and ``show(stage)`` for the progress bar; it returns its report section::

        {"rows": [{"route", "target", ...}], "gallery": [{"title", "image", ...}], "notes": [str]}

    ``requires`` says what it needs of the models, as an attack's does (``{GRADIENTS}``: the source's
    or an engine graph's gradients); ``columns`` are the rows' columns in the terminal table
    (:class:`dlforge.reporting.Column`).
    """

    name: str = ""
    norm: str = "-"  # no eps-ball: each probe states its own budget
    requires: ClassVar[frozenset[str]] = frozenset()
    modalities: ClassVar[tuple[str, ...]] = ("image",)  # the inputs it knows how to transform
    columns: tuple = ()

    @property
    def gradients(self) -> bool:
        return GRADIENTS in self.requires

    def prepare(self, run) -> None:
        """Check and load what the probe needs before any attack runs (bad input fails the audit early)."""

    @abstractmethod
    def probe(self, run, show: Callable[[str], None]) -> dict:
        """Run the experiment on ``run``'s models; its report section."""


# every public module of the probes package is discovered (a new probe is a new module, no list to edit)
PROBES: Registry[type[Probe]] = Registry("probe", packages=["dlforge.adversarial.probes"])
