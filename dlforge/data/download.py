"""Downloads that never leave a half-written file: the data goes to a temporary file beside its destination and
is used only once its checksum matches the one its publisher gives."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dlforge.errors import DownloadFailed

DIGEST_NAMES = {"md5": "MD5", "sha256": "SHA-256"}


@contextmanager
def checked_download(url: str, data_dir: Path, *, algorithm: str, expected: str, by_hand: str) -> Iterator[Path]:
    """Download ``url`` to a temporary file in ``data_dir`` and check its digest; yields the file's path and
    deletes the file when the block ends (``os.replace`` it inside the block to keep it).

    Args:
        algorithm: ``md5`` or ``sha256``, as the publisher gives the checksum.
        expected: the publisher's hex digest.
        by_hand: how to get the data in place without the download (ends the failure's message).

    Raises:
        DownloadFailed: the download failed, or the file's digest is not ``expected``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download.", dir=data_dir)
    path = Path(tmp)
    try:
        digest = hashlib.new(algorithm, usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadFailed(f"could not download {url}: {exc}; check the network, or {by_hand}") from exc
        if digest.hexdigest() != expected:
            raise DownloadFailed(f"download of {url} has {DIGEST_NAMES[algorithm]} {digest.hexdigest()}, "
                                 f"expected {expected}; try again")
        yield path
    finally:
        path.unlink(missing_ok=True)
