"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json

import click

from dlforge.errors import InputError

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (nothing else).")
force_option = click.option("--force", is_flag=True, help="Replace the output directory if it exists.")


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays clean for results and --json."""
    click.echo(message, err=True)


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs as a dict; values are parsed as JSON where they parse."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
