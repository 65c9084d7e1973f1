"""The ``dlforge`` command's entry point (stdlib only).

The base install (numpy + onnxruntime, for edge applications) ships the console script too; there
the command line's dependencies are absent, and this says so in one line instead of a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import click  # noqa: F401
    except ImportError:
        sys.stderr.write("Error: the dlforge command line needs the toolkit, which is not installed here (this is "
                         "the runtime-only base install); install it with: pip install 'dlforge[toolkit]'\n")
        sys.exit(2)
    from dlforge.cli import main as cli_main

    cli_main()
