"""Options and output helpers shared by the commands."""

from __future__ import annotations

import dataclasses
import json

import click

from dlforge.options import choices_of, parse_key_values

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (nothing else).")
force_option = click.option("--force", is_flag=True, help="Replace the output directory if it exists.")


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays clean for results and --json."""
    click.echo(message, err=True)


def cli_progress():
    """The stages' :class:`~dlforge.progress.Progress` on the command line: lines through :func:`say`, bars on a
    terminal."""
    from dlforge.progress import LineProgress

    return LineProgress(say)


class CommaList(click.ParamType):
    """A comma-separated list (``0,0.1,0.3``) parsed into a tuple of ``item`` values."""

    def __init__(self, item: type = str):
        self.item = item
        self.name = f"{item.__name__},..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(s.strip()) for s in str(value).split(",") if s.strip())
        except ValueError:
            self.fail(f"expects comma-separated {self.item.__name__} values such as "
                      f"{'1,8,64' if self.item is int else '0,0.1,0.3' if self.item is float else 'a,b'}, got {value!r}",
                      param, ctx)


def option_for(options_cls, name: str, *decls: str, **kwargs):
    """A click option whose default, help, type and listed choices come from ``options_cls``'s field ``name``.

    Tuple fields become comma-separated lists; the library's options object validates the value,
    so the CLI and the Python API reject the same inputs with the same message.
    """
    field = next(f for f in dataclasses.fields(options_cls) if f.name == name)
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    help_text = field.metadata.get("help", "")
    choices = choices_of(field)
    if choices and "expected" not in help_text:
        help_text = f"{help_text} One of: {', '.join(choices)}." if not isinstance(default, tuple) else \
            f"{help_text} Any of: {', '.join(choices)}."
    if isinstance(default, tuple):
        item = type(default[0]) if default else str
        kwargs.setdefault("type", CommaList(item))
        default = ",".join(map(str, default))
        help_text = f"{help_text}  [default: {default or 'none'}]"
        kwargs.setdefault("show_default", False)
    elif default is not None and not isinstance(default, bool):
        kwargs.setdefault("show_default", True)
    annotation = str(field.type).replace(" ", "")
    for name_, type_ in (("int", int), ("float", float)):  # an optional list: tuple[float, ...] | None
        if default is None and annotation == f"tuple[{name_},...]|None":
            kwargs.setdefault("type", CommaList(type_))
    for name_, type_ in (("int", int), ("float", float)):
        if annotation in (name_, f"{name_}|None", f"Optional[{name_}]"):
            kwargs.setdefault("type", type_)
    if isinstance(default, bool) and not any("/" in d for d in decls):
        kwargs.setdefault("is_flag", True)
    decls = decls or ("--" + name.replace("_", "-"),)
    return click.option(*decls, name, default=default, help=help_text, **kwargs)


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs as a dict; values are parsed as JSON where they parse."""
    return parse_key_values(pairs, "--set")
