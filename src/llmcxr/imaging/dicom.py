"""DICOM chest X-rays to display-ready pixels in [0, 1], following the DICOM grayscale pipeline.

Stored values -> Modality LUT (rescale slope/intercept, PS3.3 C.11.1) -> VOI LUT (window centre/width
or a VOI LUT table, PS3.3 C.11.2) -> [0, 1] -> inverted for MONOCHROME1 (where 0 is white). This is
the order of PS3.4 N.2.1.1 ("Grayscale Transformations"). pydicom does the LUT arithmetic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmcxr.errors import BadInputError
from llmcxr.imaging.limits import ImageLimits, check_size, require_frontal, warn_if_not_frontal

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DICOM_SUFFIXES = (".dcm", ".dicom")
# pydicom is imported where a DICOM file is read: it adds ~0.2 s to every CLI start otherwise (issue 24).


def looks_like_dicom(path: Path) -> bool:
    """A DICOM Part 10 file has the magic 'DICM' after a 128-byte preamble (PS3.10 7.1)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_view(ds: Dataset) -> str | None:
    """The stated view: ViewPosition (0018,5101), else the View Code Sequence's meaning."""
    view = str(ds.get("ViewPosition", "") or "").strip()
    if view:
        return view
    codes = ds.get("ViewCodeSequence")
    if codes:
        meaning = str(codes[0].get("CodeMeaning", "") or "").strip()
        return meaning or None
    return None


def _read_dataset(path: Path) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # force=True only for a .dcm without the Part 10 preamble; other files must carry 'DICM'.
        return pydicom.dcmread(path, force=path.suffix.lower() in DICOM_SUFFIXES)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise BadInputError(path, f"unreadable DICOM file ({type(err).__name__}: {err})") from None


def _voi_to_unit(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the VOI transform where the file has one and map its output range onto [0, 1]."""
    from pydicom.pixels import apply_voi, apply_windowing

    if ds.get("VOILUTSequence"):
        # A VOI LUT table: outputs are unsigned integers of LUTDescriptor[2] bits (PS3.3 C.11.2.1.1).
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        # The table is indexed by the (integer) modality values; pydicom warns on floats.
        return apply_voi(np.rint(values).astype(np.int64), ds) / float(2**bits - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        windowed = apply_windowing(values.astype(np.float64), ds)
        # pydicom maps the window onto an output range that depends on BitsStored, the rescale and the
        # sign; ask it for that range by windowing two far-out probe values instead of re-deriving it.
        low, high = apply_windowing(np.array([-1e30, 1e30]), ds)
        return (windowed - low) / (high - low)
    # No window stated: stretch the modality values' own range (as MIMIC-CXR-JPG's conversion does).
    lowest, highest = float(values.min()), float(values.max())
    if highest <= lowest:
        return np.zeros_like(values, dtype=np.float64)
    return (values - lowest) / (highest - lowest)


def read_dicom(path: Path, limits: ImageLimits, frontal_only: bool = False) -> np.ndarray:
    """Pixels of a single-frame grayscale DICOM as float32 (H, W) in [0, 1], 1 = white (dense).

    Raises BadInputError for an unreadable file, a non-grayscale or multi-frame image, compressed
    pixel data without a decoder, a size outside ``limits``, or (with ``frontal_only``) a lateral view.
    """
    ds = _read_dataset(path)
    if "PixelData" not in ds:
        raise BadInputError(path, "DICOM file has no pixel data", "is it a report or a structured document?")
    if frontal_only:
        require_frontal(path, dicom_view(ds))
    else:
        warn_if_not_frontal(path, dicom_view(ds))
    check_size(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), limits)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInputError(path, f"DICOM photometric interpretation {photometric} is not grayscale")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise BadInputError(path, "multi-frame DICOM", "export the frame you want as a single-frame file")
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types for missing codecs / broken pixel data
        raise BadInputError(
            path,
            f"cannot decode the DICOM pixel data ({type(err).__name__}: {' '.join(str(err).split())})",
            "for compressed transfer syntaxes install a decoder, e.g. pip install pylibjpeg pylibjpeg-libjpeg",
        ) from None
    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    unit = np.clip(_voi_to_unit(values, ds), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit  # MONOCHROME1: the lowest value is white (PS3.3 C.7.6.3.1.2)
    return unit.astype(np.float32)
