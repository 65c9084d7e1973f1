"""One text-table formatter and one report-artifact writer, shared by every reporting stage.

``format_table`` renders rows of dicts through :class:`Column` descriptions (header, format,
alignment); ``write_report_artifact`` writes a report's JSON payload plus its rendered files
(HTML, markdown, plots) as one artifact directory, with the lineage of the first target verified.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping


class Report:
    """Base of the typed reports (a dataclass subclass per kind: the audit's, drift's): its payload JSON is
    ``to_json()`` with ``schema_version`` first, written from the class's ``SCHEMA_VERSION`` alone; ``from_json``
    reads one back, refusing another schema, an unknown key or a missing one. Fields in ``OPTIONAL`` are left
    out of the JSON while they are None (sections that ran only when asked for)."""

    SCHEMA_VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "report"
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict:
        out: dict = {"schema_version": self.SCHEMA_VERSION}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None or f.name not in self.OPTIONAL:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, d: Any):
        from dlforge.errors import InputError

        if not isinstance(d, dict) or d.get("schema_version") != cls.SCHEMA_VERSION:
            found = d.get("schema_version") if isinstance(d, dict) else type(d).__name__
            raise InputError(f"not {cls.KIND} report of schema {cls.SCHEMA_VERSION} (found {found!r}); "
                             "re-run it with this dlforge")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names - {"schema_version"})
        missing = sorted(f.name for f in fields(cls) if f.name not in d  # type: ignore[arg-type]
                         and f.default is MISSING and f.default_factory is MISSING)
        if unknown or missing:
            raise InputError(f"not {cls.KIND} report: " + "; ".join(
                ([f"unknown keys {', '.join(unknown)}"] if unknown else [])
                + ([f"missing keys {', '.join(missing)}"] if missing else [])))
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Column:
    """A table column: ``key`` into each row, its ``header``, and how a value prints.

    ``fmt`` is a format spec (``".4f"``) or a callable; ``None`` values print as ``missing``.
    """

    key: str
    header: str | None = None
    fmt: str | Callable[[Any], str] = ""
    align: str = "<"
    missing: str = "-"

    def render(self, row: Mapping) -> str:
        value = row.get(self.key)
        if value is None:
            return self.missing
        if callable(self.fmt):
            return self.fmt(value)
        return format(value, self.fmt)


def format_table(rows: Iterable[Mapping], columns: Iterable[Column | str]) -> str:
    """A plain text table, two spaces between columns, each column as wide as its widest cell."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    heads = [c.header if c.header is not None else c.key for c in cols]
    body = [[c.render(r) for c in cols] for r in rows]
    widths = [max([len(h)] + [len(line[i]) for line in body]) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if c.align == ">" else cell.ljust(w)
                         for cell, w, c in zip(cells, widths, cols)).rstrip()

    return "\n".join([line(heads)] + [line(cells) for cells in body])


def to_json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1) + "\n"


def write_report_artifact(kind: str, report: dict, out_dir: str | os.PathLike, *, payload: str,
                          files: Mapping[str, str | bytes | Callable[[Path], None]] | None = None,
                          parent: str | os.PathLike | None = None, params: dict | None = None,
                          sections: dict | None = None, force: bool = False,
                          protect: Iterable[str | os.PathLike] = ()):
    """Write ``report`` as the JSON ``payload`` of a ``kind`` artifact at ``out_dir``.

    Args:
        files: extra files by name: text, bytes, or a callable writing the file at the path it gets.
        parent: an artifact directory the report is about; its lineage is recorded (verified).
        params: the stage's options (the card's ``params``).
        sections: extra top-level card fields (e.g. ``checks``).
        protect: the inputs, which ``force`` must never replace.
    """
    from dlforge.artifact import ArtifactWriter, Card, is_artifact, open_artifact

    with ArtifactWriter(out_dir, force=force, protect=protect) as writer:
        writer.file(payload).write_text(to_json_text(report), encoding="utf-8")
        for name, content in (files or {}).items():
            target = writer.file(name)
            if callable(content):
                content(target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        lineage = None
        if parent is not None and Path(parent).is_dir() and is_artifact(parent):
            lineage = open_artifact(parent).lineage()
        card = Card(kind=kind, payload=payload, model=None, parent=lineage, params=params or {},
                    env=report.get("env", {}), sections=sections or {})
        return writer.commit(card)


def png_base64(fig) -> str:
    """A matplotlib figure as base64 PNG (for ``<img src="data:image/png;base64,...">``); closes it."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def html_table(rows: list[dict], columns: list[Column]) -> str:
    """Rows as an HTML table through the same :class:`Column` formats as :func:`format_table`."""
    import html

    head = "".join(f"<th>{html.escape(c.header or c.key)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.render(r))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
