"""Every user-facing failure in dlforge is a :class:`DlforgeError`.

Library code raises these; only the CLI turns them into one line on stderr and an exit code.
An error message says what was expected, what was found, and how to fix it.
"""

from __future__ import annotations


class DlforgeError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with (2: bad input, 1: a stage failed)."""

    exit_code = 1


class InputError(DlforgeError):
    """The user's input is wrong: a path, a flag, a file's contents. Fixable by the user."""

    exit_code = 2


class StageFailed(DlforgeError):
    """A stage ran on valid input and its result did not meet its bar (e.g. export verification)."""

    exit_code = 1


class ArtifactError(InputError):
    """An artifact directory is missing, incomplete, corrupt, or of the wrong kind."""


class MissingDependency(InputError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, module: str, extra: str | None, purpose: str):
        install = f"pip install 'dlforge[{extra}]'" if extra else f"pip install {module}"
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed; install it with: {install}"
        )
        self.module = module
        self.extra = extra


def require(module: str, extra: str | None, purpose: str):
    """Import ``module`` or raise :class:`MissingDependency` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingDependency(module, extra, purpose) from exc
