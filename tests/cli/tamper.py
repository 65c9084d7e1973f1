"""Copies of artifacts with one thing wrong, for tests of how stages refuse them.

The card's sha256 is updated to the new payload, so only the content (or the card field) is wrong,
not the integrity check that would otherwise catch it first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable


def tampered_copy(src: Path, dst: Path, *, payload: bytes | None = None,
                  card: Callable[[dict], None] | None = None) -> Path:
    """Copy artifact ``src`` to ``dst``; replace its payload bytes and/or edit its card in place."""
    shutil.copytree(src, dst)
    data = json.loads((dst / "card.json").read_text())
    if payload is not None:
        (dst / data["payload"]).write_bytes(payload)
        data["sha256"] = hashlib.sha256(payload).hexdigest()
    if card is not None:
        card(data)
    (dst / "card.json").write_text(json.dumps(data))
    return dst
