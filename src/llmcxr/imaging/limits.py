"""What an input image must satisfy before we decode it: size limits and, when asked, a frontal view."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from llmcxr.errors import BadInputError


@dataclass(frozen=True)
class ImageLimits:
    """Size limits checked on the header, before any pixels are decoded."""

    min_side: int = 64
    """Smallest accepted width or height in pixels; a thumbnail this small holds no diagnostic detail."""
    max_pixels: int = 64_000_000
    """Largest accepted width * height. Real CXRs are at most ~4,300 x 4,300 (18 M pixels); anything
    far larger is a decompression bomb or not a radiograph. PIL's own guard (``Image.MAX_IMAGE_PIXELS``,
    89 M, error at twice that) still applies on top of this one."""


def check_size(source: object, width: int, height: int, limits: ImageLimits) -> None:
    """Raise BadInputError when a (width, height) read from a header breaks ``limits``."""
    if width <= 0 or height <= 0:
        raise BadInputError(
            source, f"zero-size image ({width} x {height} pixels)", "the file holds no pixels"
        )
    if width * height > limits.max_pixels:
        raise BadInputError(
            source,
            f"image of {width} x {height} = {width * height:,} pixels is over the limit of "
            f"{limits.max_pixels:,} pixels (a possible decompression bomb)",
            "downscale it first, or raise ImageLimits.max_pixels if it is a genuine radiograph",
        )
    if min(width, height) < limits.min_side:
        raise BadInputError(
            source,
            f"image of {width} x {height} pixels is smaller than the minimum side of {limits.min_side}",
            "use the full-resolution image, or lower ImageLimits.min_side",
        )


# Frontal projections: DICOM ViewPosition defined terms (PS3.3 C.8.11.5.1.1) "AP"/"PA", and the
# variants datasets write ("AP SUPINE", "AP AXIAL", "PA LLD" in MIMIC-CXR's metadata).
_FRONTAL_PREFIXES = ("AP", "PA", "FRONTAL", "POSTERO", "ANTERO")


def is_frontal(view: str | None) -> bool | None:
    """True for a frontal view, False for any other stated view (LL, RL, LATERAL, LAO, ...), None if unstated."""
    if view is None or not str(view).strip():
        return None
    name = str(view).strip().upper().replace("_", " ").replace("-", " ")
    return name.startswith(_FRONTAL_PREFIXES)


def require_frontal(source: object, view: str | None) -> None:
    """Raise BadInputError when metadata states a view that is not frontal (an unstated view passes)."""
    if is_frontal(view) is False:
        raise BadInputError(
            source,
            f"view '{view}' is not frontal (lateral or other projection)",
            "only frontal (PA/AP) chest X-rays are wanted here; drop it or turn off frontal_only",
        )


class NonFrontalViewWarning(UserWarning):
    """An image read anyway although its metadata states a lateral or other non-frontal view."""


def warn_if_not_frontal(source: object, view: str | None) -> None:
    """Warn (``NonFrontalViewWarning``) when metadata states a non-frontal view: the model was trained on
    frontal CXRs, so what it says of a lateral one is not to be trusted (``frontal_only`` refuses instead)."""
    if is_frontal(view) is False:
        warnings.warn(
            NonFrontalViewWarning(
                f"{source}: view '{view}' is not frontal; the model was trained on frontal (PA/AP) "
                "chest X-rays, so its output for this image is unreliable"
            ),
            stacklevel=3,
        )
