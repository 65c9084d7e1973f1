"""Typed records the audit passes between its steps.

A *route* is how adversarial examples reached the model they are judged on; an adversarial set is keyed by
:class:`AdversarialKey` (what made it, where it was found), not by tuples of varying length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Route = Literal["white-box", "transfer", "white-box (engine)", "query"]
ROUTES: tuple[str, ...] = get_args(Route)
ENGINE_ROUTE: Route = "white-box (engine)"


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
