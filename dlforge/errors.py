"""Every user-facing failure in dlforge is a :class:`DlforgeError`.

Library code raises these; only the CLI turns them into one line on stderr and an exit code.
An error message says what was expected, what was found, and how to fix it.

Exit codes (the CLI's contract, also in ``dlforge --help``):

====  =====================================================================================
0     success
1     a stage or gate judged the model: export beyond ``--atol``, build beyond
      ``--max-accuracy-drop``, an audit below ``--fail-under``
2     bad input: a path, a flag, a file's contents, a download that failed; nothing was written
3     internal error: a bug in dlforge (rerun with ``--debug`` and report the traceback)
4     the device failed: a CUDA or TensorRT runtime call on valid input (driver, GPU memory, a
      lost device); neither the model nor the input was judged
130   interrupted (Ctrl-C, SIGTERM); temporary files were removed, nothing was written
====  =====================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JUDGED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_DEVICE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the model failed a stage's bar or a gate (--atol, --max-accuracy-drop, "
    "--fail-under); 2 bad input; 3 internal error (a bug: rerun with --debug); 4 the device (CUDA, TensorRT) "
    "failed; 130 interrupted."
)


class DlforgeError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with (see the module docstring)."""

    exit_code = EXIT_JUDGED


class InputError(DlforgeError):
    """The user's input is wrong: a path, a flag, a file's contents. Fixable by the user."""

    exit_code = EXIT_BAD_INPUT


class StageFailed(DlforgeError):
    """A stage ran on valid input and its result did not meet its bar (e.g. export verification)."""

    exit_code = EXIT_JUDGED


class DeviceError(DlforgeError):
    """A CUDA or TensorRT runtime call failed on valid input: the device or its driver, not the model or the
    input (exit 4). Retrying, freeing GPU memory or checking ``nvidia-smi`` is the fix, not another flag."""

    exit_code = EXIT_DEVICE


class CudaError(DeviceError):
    """A CUDA runtime call returned an error code (``dlforge.backends.tensorrt.cuda_mem`` names the call)."""


class ArtifactError(InputError):
    """An artifact directory is missing, incomplete, corrupt, or of the wrong kind."""


class DownloadFailed(InputError):
    """A download did not arrive whole or did not match its published checksum: the network or the mirror, not the
    model (exit 2, like other input the user can fix: retry, or put the file in place by hand)."""


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
