"""Uploaded bytes (PNG, JPEG, DICOM) -> pixels, through the project's one image loader and its limits.

The bytes go to a private temporary file (the DICOM reader needs a file) that is deleted at once;
errors name the upload as the client called it, never the temporary path. An ``Upload`` is decoded
on the model worker (``Service``), inside the queue bound and the request's time limit: one decode at
a time, whatever the number of clients (eight concurrent 124 KB PNGs declaring 8000 x 7999 16-bit
pixels took a server that decoded them on arrival to 7.1 GB, issue 24).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from llmcxr.errors import BadInputError
from llmcxr.imaging import ImageLimits, NonFrontalViewWarning, load_image
from llmcxr.imaging.dicom import DICOM_SUFFIXES

UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)


def upload_name(filename: str | None) -> str:
    """How an error names the upload: its base name only (a client may send a full path)."""
    base = Path(filename or "").name[:80]
    return f"upload {base!r}" if base else "upload"


def _renamed(err: BadInputError, name: str) -> BadInputError:
    return BadInputError(name, err.problem, err.hint)


def read_upload_file(
    path: str | Path,
    filename: str | None,
    limits: ImageLimits = ImageLimits(),
    notes: list[str] | None = None,
) -> np.ndarray:
    """A file on disk (the web app's upload) -> float32 (H, W) pixels in [0, 1]. What the loader warns
    of (a lateral view) is added to ``notes``, naming the upload, not the file on the server."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NonFrontalViewWarning)
            pixels = load_image(path, limits)
    except BadInputError as err:
        raise _renamed(err, upload_name(filename)) from None
    for warning in caught:
        if notes is not None and issubclass(warning.category, NonFrontalViewWarning):
            notes.append(str(warning.message).replace(str(path), upload_name(filename)))
    return pixels


def read_upload_bytes(
    data: bytes, filename: str | None, limits: ImageLimits = ImageLimits(), notes: list[str] | None = None
) -> np.ndarray:
    """Uploaded bytes -> float32 (H, W) pixels in [0, 1]; DICOM is recognised by its 'DICM' magic
    (or a .dcm name, for files without the Part 10 preamble)."""
    suffix = Path(filename or "").suffix.lower()
    suffix = suffix if suffix in DICOM_SUFFIXES else ".upload"
    fd, tmp = tempfile.mkstemp(prefix="llmcxr-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return read_upload_file(tmp, filename, limits, notes)
    finally:
        os.unlink(tmp)


@dataclass
class Upload:
    """An uploaded image not yet decoded: a file object (the REST upload, spooled by the server) or a
    path (the web app's upload), and the name the client gave it."""

    filename: str | None
    file: IO[bytes] | None = None
    path: str | Path | None = None

    def pixels(self, limits: ImageLimits, notes: list[str] | None = None) -> np.ndarray:
        """float32 (H, W) in [0, 1]; BadInputError naming the upload."""
        if self.path is not None:
            return read_upload_file(self.path, self.filename, limits, notes)
        assert self.file is not None
        self.file.seek(0)
        return read_upload_bytes(self.file.read(), self.filename, limits, notes)
