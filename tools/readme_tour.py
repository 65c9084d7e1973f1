#!/usr/bin/env python3
"""Generate README.md's "A tour of the CLI" from real runs, and check that it is not stale.

    python tools/readme_tour.py --write    # run the tour, rewrite the README block
    python tools/readme_tour.py --check    # run the tour, exit 1 with a diff when the README is stale
    python tools/readme_tour.py --print    # run the tour, print the block

The tour (``TOUR`` below) is a list of ``dlforge`` command lines. Each runs, in order, in a fresh
temporary directory, as a separate process of the real CLI (``python -c 'from dlforge.cli import
main; main()'`` with this checkout first on ``PYTHONPATH``), on the embedded ``digits`` dataset only:
no download, no shared data, about two minutes on two busy cores. stdout and stderr are captured
together, in the order a user sees them (``PYTHONUNBUFFERED=1``); progress bars are off because the
output is not a terminal (tqdm's ``disable=None``; ``TQDM_DISABLE=1`` as well). ``DLFORGE_HOME``
points into the temporary directory, so no cache of an earlier run is used. Each command's exit
status must be the one the tour expects (0, or 1 / 2 for the failure examples), else the tour
stops with an error. The temporary directory's path is removed from the output, so paths read
``runs/lenet/...``; ``echo $?`` lines show the previous command's real exit status.

The block lives between ``<!-- tour:begin -->`` and ``<!-- tour:end -->`` in README.md; nothing
else in the README is read or written.

Normalization (what ``--check`` ignores)
----------------------------------------
Numbers vary run to run and machine to machine, so ``--check`` compares the *shape* of the output,
not its values. Both the README block and the fresh block are normalized line by line, then
compared; the diff printed is the diff of the normalized texts. In order:

1. Volatile lines are dropped, in both: lines that appear or not depending on how noisy the machine
   is or which precision was faster (``VOLATILE_LINES``): bench's ``warning: N row(s) marked ! moved
   by more than ...`` and ``note: round medians moved ...``, ``--precision auto``'s ``... not faster on this machine;
   keeping fp32`` and its ``mixed`` candidate row (present when the per-layer plan differs from
   all-INT8 and fp32, which can turn on timing).
2. Timing-dependent words are replaced (``VOLATILE_WORDS``): bench's noise marker ``12.3%!`` becomes
   ``12.3%``; ``--precision auto``'s verdicts ``chosen`` / ``slower`` become ``<verdict>``, and the
   precision it picked (``engine-auto: ort int8:``) becomes ``<precision>``; the per-layer search's
   summary line (its plan can turn on timing) becomes ``per-layer plan: <summary>``.
3. Hex strings of 8 or more characters (sha256 prefixes) become ``<hex>``.
4. Every number becomes ``<n>``: integers, decimals, exponents (``6.68e-06``) and a leading sign
   (``-0.28``) at the start of a word; digits inside a word too (``fp32`` -> ``fp<n>``,
   ``x19`` -> ``x<n>``).
5. Runs of whitespace become one space and lines are stripped (table columns re-align when the
   widths of numbers change).

So the check fails when a command, message, column, check label, row or line count changes (a new
column, a renamed check, a different number of models, a reworded error, ``[pass]`` -> ``[FAIL]``),
and passes when ``0.9777`` becomes ``0.9749``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- tour:begin -->"
END = "<!-- tour:end -->"

# (command line, expected exit status, show `echo $?` after it)
TOUR: list[tuple[str, int, bool]] = [
    ("dlforge models", 0, False),
    ("dlforge train lenet --data digits --epochs 5 -o runs/lenet/checkpoint", 0, False),
    ("dlforge export runs/lenet/checkpoint -o runs/lenet/onnx", 0, False),
    ("dlforge build runs/lenet/onnx -o runs/lenet/engine-ort-fp32", 0, False),
    ("dlforge build runs/lenet/onnx -o runs/lenet/engine-ort-int8 --precision int8 --max-accuracy-drop 2", 0, False),
    ("dlforge build runs/lenet/onnx -o runs/lenet/engine-auto --precision auto", 0, False),
    ("dlforge bench runs/lenet/engine-ort-fp32 runs/lenet/engine-ort-int8 --torch runs/lenet/checkpoint "
     "--accuracy --batch-sizes 1,64 --duration 0.2 --rounds 3", 0, False),
    ("dlforge audit runs/lenet/engine-ort-fp32 runs/lenet/engine-ort-int8 --attacks fgsm,pgd,square "
     "--eps 0.1,0.3 --samples 100 --detectors feature-squeezing", 0, False),
    ("dlforge drift runs/lenet/checkpoint runs/lenet/onnx runs/lenet/engine-ort-fp32 runs/lenet/engine-ort-int8 "
     "--samples 100", 0, False),
    ("dlforge inspect runs/lenet/engine-ort-int8", 0, False),
    ("dlforge inspect runs/lenet/onnx/model.onnx", 0, False),
    ("dlforge train resnet -o runs/x", 2, True),
    ("dlforge audit runs/lenet/engine-ort-int8 --attacks fgsm --eps 0.1 --samples 100 --fail-under 0.1:0.8", 1, True),
]

VOLATILE_LINES = [
    re.compile(r"^warning: \d+ row\(s\) marked ! moved by more than"),  # bench's stability verdicts turn on timing
    re.compile(r"^note: round medians moved by up to"),
    re.compile(r"not faster on this machine; keeping fp32$"),
    re.compile(r"^mixed\s"),  # auto's per-layer candidate: a row only when its plan is neither all-INT8 nor fp32
]
VOLATILE_WORDS = [
    (re.compile(r"%!"), "%"),
    (re.compile(r"\b(chosen|slower)$"), "<verdict>"),
    (re.compile(r"(engine-auto: \w+) (fp32|fp16|int8|mixed):"), r"\1 <precision>:"),
    (re.compile(r"^per-layer plan: .*"), "per-layer plan: <summary>"),
]
HEX = re.compile(r"\b[0-9a-f]{8,}\b")
NUMBER = re.compile(r"(?<!\w)[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
SPACES = re.compile(r"\s+")


class TourError(RuntimeError):
    pass


def _cli(argv: list[str]) -> list[str]:
    if argv[0] != "dlforge":
        raise TourError(f"the tour runs dlforge commands only: {shlex.join(argv)}")
    return [sys.executable, "-c", "from dlforge.cli import main; main()", *argv[1:]]


def run_tour(log=None) -> tuple[str, float]:
    """Run every command of ``TOUR`` in a fresh temp dir; return the console transcript and the seconds taken."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dlforge-tour-") as tmp:
        env = dict(os.environ)
        env.pop("DLFORGE_DEBUG", None)
        env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
                   PYTHONUNBUFFERED="1", DLFORGE_HOME=os.path.join(tmp, "home"), TQDM_DISABLE="1",
                   TERM="dumb", PYTHONWARNINGS="ignore")
        prefixes = sorted({tmp, os.path.realpath(tmp)}, key=len, reverse=True)
        lines: list[str] = []
        for command, expected, echo in TOUR:
            if log:
                log(f"$ {command}")
            t0 = time.monotonic()
            proc = subprocess.run(_cli(shlex.split(command)), cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
            out = proc.stdout
            for prefix in prefixes:
                out = out.replace(prefix + os.sep, "").replace(prefix, ".")
            if log:
                log(f"  exit {proc.returncode}, {time.monotonic() - t0:.1f} s")
            if proc.returncode != expected:
                raise TourError(f"`{command}` exited {proc.returncode}, the tour expects {expected}:\n{out}")
            lines.append(f"$ {command}")
            lines.extend(line.rstrip() for line in out.rstrip("\n").splitlines())
            if echo:
                lines += ["$ echo $?", str(proc.returncode)]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n", time.monotonic() - start


def render(transcript: str, seconds: float) -> str:
    """The README block (without the markers): intro and the console transcript."""
    cores = os.cpu_count() or 1
    return (
        "<!-- Generated by `python tools/readme_tour.py --write`: edit the tour there, not here. -->\n"
        "Output below is real: `python tools/readme_tour.py --write` ran these commands in an empty directory, "
        "on the embedded\n"
        f"`digits` dataset (no download), on a machine with {cores} CPU cores, in {seconds:.0f} s. "
        "`tests/test_readme.py` fails when\n"
        "this block is stale: timings, accuracies, hashes and sizes may differ from run to run, but the "
        "commands, messages,\ncolumns, check labels and rows may not.\n"
        "\n"
        "```console\n"
        f"{transcript}"
        "```\n"
    )


def split_readme(text: str) -> tuple[str, str, str]:
    """(before, block, after) around the tour markers; the markers stay in before/after."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise TourError(f"README must contain {BEGIN} ... {END} exactly once")
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    return head + BEGIN + "\n", block.lstrip("\n"), END + tail


def normalize(block: str) -> list[str]:
    """The block as ``--check`` compares it (see the module docstring)."""
    out = []
    for line in block.splitlines():
        if any(p.search(line) for p in VOLATILE_LINES):
            continue
        for pattern, repl in VOLATILE_WORDS:
            line = pattern.sub(repl, line)
        line = HEX.sub("<hex>", line)
        line = NUMBER.sub("<n>", line)
        out.append(SPACES.sub(" ", line).strip())
    return out


def stale_diff(readme_text: str, fresh_block: str, name: str = "README.md") -> str:
    """Unified diff of the normalized blocks; empty when the README's tour is up to date."""
    _, block, _ = split_readme(readme_text)
    return "".join(difflib.unified_diff([line + "\n" for line in normalize(block)],
                                        [line + "\n" for line in normalize(fresh_block)],
                                        f"{name} (normalized)", "fresh tour (normalized)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the README's tour block")
    mode.add_argument("--check", action="store_true", help="exit 1, with a diff, when the README's tour is stale")
    mode.add_argument("--print", action="store_true", help="print the fresh block")
    parser.add_argument("--readme", type=Path, default=README, help="README to check or write (default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not log the commands on stderr")
    args = parser.parse_args(argv)

    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    text = args.readme.read_text(encoding="utf-8")
    try:
        split_readme(text)
        transcript, seconds = run_tour(log)
    except TourError as exc:
        print(f"readme_tour: {exc}", file=sys.stderr)
        return 2
    block = render(transcript, seconds)
    if args.print:
        sys.stdout.write(block)
        return 0
    if args.write:
        head, _, tail = split_readme(text)
        args.readme.write_text(head + block + tail, encoding="utf-8")
        print(f"wrote the tour ({seconds:.0f} s) into {args.readme}", file=sys.stderr)
        return 0
    diff = stale_diff(text, block, str(args.readme))
    if diff:
        sys.stdout.write(diff)
        print(f"{args.readme}: the CLI tour is stale; run `python tools/readme_tour.py --write`", file=sys.stderr)
        return 1
    print(f"{args.readme}: the CLI tour is up to date ({seconds:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
