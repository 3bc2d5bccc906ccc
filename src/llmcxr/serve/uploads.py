"""Uploaded bytes (PNG, JPEG, DICOM) -> pixels, through the project's one image loader and its limits.

The bytes go to a private temporary file (the DICOM reader needs a file) that is deleted at once;
errors name the upload as the client called it, never the temporary path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from llmcxr.errors import BadInputError
from llmcxr.imaging import ImageLimits, load_image
from llmcxr.imaging.dicom import DICOM_SUFFIXES

UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)


def upload_name(filename: str | None) -> str:
    """How an error names the upload: its base name only (a client may send a full path)."""
    base = Path(filename or "").name[:80]
    return f"upload {base!r}" if base else "upload"


def _renamed(err: BadInputError, name: str) -> BadInputError:
    return BadInputError(name, err.problem, err.hint)


def read_upload_file(
    path: str | Path, filename: str | None, limits: ImageLimits = ImageLimits()
) -> np.ndarray:
    """A file on disk (the web app's upload) -> float32 (H, W) pixels in [0, 1]."""
    try:
        return load_image(path, limits)
    except BadInputError as err:
        raise _renamed(err, upload_name(filename)) from None


def read_upload_bytes(data: bytes, filename: str | None, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Uploaded bytes -> float32 (H, W) pixels in [0, 1]; DICOM is recognised by its 'DICM' magic
    (or a .dcm name, for files without the Part 10 preamble)."""
    suffix = Path(filename or "").suffix.lower()
    suffix = suffix if suffix in DICOM_SUFFIXES else ".upload"
    fd, tmp = tempfile.mkstemp(prefix="llmcxr-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return read_upload_file(tmp, filename, limits)
    finally:
        os.unlink(tmp)
