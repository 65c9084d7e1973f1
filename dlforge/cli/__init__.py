"""The ``dlforge`` command line: click wiring only; each command imports its stage when it runs.

Errors follow one contract: library code raises :class:`~dlforge.errors.DlforgeError`; here it
becomes one line on stderr and an exit code (see :mod:`dlforge.errors`: 1 the model was judged,
2 bad input, 3 internal error, 130 interrupted), never a traceback unless ``--debug`` is given (or
``DLFORGE_DEBUG=1`` is set). SIGTERM is handled like Ctrl-C: the stack unwinds, so every staging
directory and temporary file is removed before the process exits.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from dlforge import __version__
from dlforge.errors import EXIT_CODES_HELP, EXIT_DEVICE, EXIT_INTERNAL, EXIT_INTERRUPTED, DlforgeError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that ``with`` blocks clean up on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


class DlforgeGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args or os.environ.get("DLFORGE_DEBUG") == "1"
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().main(args, prog_name or "dlforge", complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "dlforge"
            _fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code, debug)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code, debug)
        except DlforgeError as exc:
            _fail(str(exc), exc.exit_code, debug)
        except (click.Abort, KeyboardInterrupt) as exc:
            what = "terminated" if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated) else "interrupted"
            _fail(f"{what}; temporary files were removed and no partial artifact was written", EXIT_INTERRUPTED)
        except Exception as exc:  # a bug, not bad input: still one line unless --debug
            if _device_failure(exc):
                _fail(f"the device failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                      EXIT_DEVICE, debug)
            _fail(f"internal error: {type(exc).__name__}: {exc} (a bug in dlforge; rerun with --debug for the "
                  "traceback)", EXIT_INTERNAL, debug)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _device_failure(exc: BaseException) -> bool:
    """A CUDA failure raised by torch or ONNX Runtime's CUDA provider (out of memory, a launch failure): the
    device, not dlforge or the input; exit 4 like :class:`~dlforge.errors.DeviceError`."""
    text = str(exc)
    return (type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("torch")) or \
        "CUDA out of memory" in text or "CUDA error" in text or "CUDA failure" in text


def _fail(message: str, code: int, debug: bool = False) -> None:
    """One line on stderr and the documented exit code; with ``--debug`` the traceback first, same exit code."""
    if debug:
        import traceback

        traceback.print_exc()
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(name="dlforge", cls=DlforgeGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="dlforge")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """dlforge: train, export, compile, benchmark and audit neural networks.

    Every stage reads an artifact directory and writes one (payload + card.json).
    """


def main() -> None:
    cli.main()


from dlforge.cli import (  # noqa: E402,F401,I001  (each module registers its commands)
    audit_cmd, bench_cmd, doctor_cmd, build_cmd, export_cmd, inspect_cmd, pipeline_cmd, poison_cmd, train_cmd,
    import_cmd, deploy_cmd, sweep_cmd, drift_cmd,
)

__all__ = ["cli", "main"]
