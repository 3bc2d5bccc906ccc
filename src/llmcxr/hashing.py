"""SHA-256 of files, streamed (weights can be gigabytes): one definition for every recorded hash."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

BLOCK = 1 << 20


def update_with_file(digest, path: Path) -> None:
    """Feed the bytes of ``path`` into ``digest`` (a hashlib object) block by block."""
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(BLOCK), b""):
            digest.update(block)


def file_sha256(paths: Sequence[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` in order."""
    digest = hashlib.sha256()
    for path in paths:
        update_with_file(digest, path)
    return digest.hexdigest()
