"""How a stage tells its caller what it is doing: one :class:`Progress` for every stage (stdlib only).

Every stage and workflow takes ``progress``: a :class:`Progress`, or ``True`` / ``False`` / ``None`` for
bars always / never / on a terminal only (no lines). The four things a stage reports:

- ``stage(name)``: a named step of a longer job begins ("train", "build ort int8");
- ``message(line)``: a line for a person (``--precision auto``'s table, a bench round, a note);
- ``epoch(record)``: a finished training epoch (loss, validation quality, seconds);
- ``bar(total, desc)``: a counted task, as a context manager yielding an object with ``update(n)`` and
  ``set_postfix_str(text)`` (a tqdm bar, drawn or not).

The base class reports nothing but the bars; :class:`LineProgress` also writes the lines (the CLI's,
to stderr, so stdout stays clean for results and ``--json``). Override what you need::

    class MyProgress(Progress):
        def stage(self, name):
            logger.info("stage %s", name)
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator, Union


class Progress:
    """Reports nothing except tqdm bars, drawn per ``bars``: True always, False never, None on a terminal."""

    def __init__(self, bars: bool | None = None):
        self.bars = bars

    def stage(self, name: str) -> None:
        """A named step of the job begins."""

    def message(self, line: str) -> None:
        """A line for a person."""

    def epoch(self, record: Any) -> None:
        """A finished training epoch (:class:`dlforge.train.loop.EpochRecord`)."""

    @contextlib.contextmanager
    def bar(self, total: int | None, desc: str, unit: str = "it", leave: bool = True) -> Iterator[Any]:
        """A counted task: yields a tqdm bar (``update``, ``set_postfix_str``), disabled per ``bars``."""
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit=unit, leave=leave,
                  disable=None if self.bars is None else not self.bars) as bar:
            yield bar


class LineProgress(Progress):
    """Also writes stages (``== name``), messages and epochs as lines, to ``write`` (default: stderr)."""

    def __init__(self, write: Callable[[str], None] | None = None, bars: bool | None = None):
        super().__init__(bars)
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))

    def stage(self, name: str) -> None:
        self.write(f"== {name}")

    def message(self, line: str) -> None:
        self.write(line)

    def epoch(self, record: Any) -> None:
        quality = (f"val_accuracy {record.val_accuracy:.4f}" if record.val_accuracy is not None
                   else f"val_mse {record.val_mse:.5f}")
        self.write(f"epoch {record.epoch}: train_loss {record.train_loss:.4f}  {quality}  ({record.seconds:.1f} s)")


ProgressLike = Union[Progress, bool, None]


def as_progress(progress: ProgressLike) -> Progress:
    """``progress`` as a :class:`Progress`: an instance as is; True, False or None as bars only."""
    if isinstance(progress, Progress):
        return progress
    if progress is None or isinstance(progress, bool):
        return Progress(bars=progress)
    raise TypeError(f"progress must be a Progress, True, False or None, not {type(progress).__name__}")


__all__ = ["LineProgress", "Progress", "ProgressLike", "as_progress"]
