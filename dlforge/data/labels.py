"""Class lists from files: one name per line, or ImageNet's ``synset.txt`` (``WNID name, synonyms``)."""

from __future__ import annotations

import os
import re

from dlforge.errors import InputError

_SYNSET = re.compile(r"n\d{8} \S.*")


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """The class names in ``path``, in output order (line i names output i).

    Plain lists give one name per line. A ``synset.txt`` line (``n01440764 tench, Tinca tinca``) is kept
    whole: its WNID makes each name unique (ImageNet has two classes called "crane") and lets an
    evaluation folder name a class by WNID. Blank lines at the end are ignored; anywhere else, and a
    name given twice, are refused.
    """
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels file {path} ({exc}); give a UTF-8 text file, one class per line") from None
    lines = [line.strip() for line in text.rstrip("\n\r ").splitlines()]
    if not lines or lines == [""]:
        raise InputError(f"labels file {path} is empty; give one class name per line")
    if "" in lines:
        raise InputError(f"labels file {path} has a blank line at line {lines.index('') + 1}; every line names "
                         "the class of that output")
    seen: dict[str, int] = {}
    for i, name in enumerate(lines):
        if name in seen:
            raise InputError(f"labels file {path} names {name!r} twice (lines {seen[name] + 1} and {i + 1}); class "
                             "names must be unique")
        seen[name] = i
    return tuple(lines)


def is_synset(labels: tuple[str, ...]) -> bool:
    return bool(labels) and all(_SYNSET.fullmatch(name) for name in labels)
