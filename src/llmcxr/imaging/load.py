"""Any chest X-ray input -> float32 (H, W) pixels in [0, 1], or a BadInputError that names the problem.

Accepted: PNG/JPEG (and anything else PIL reads) at 8 or 16 bits, grayscale, RGB, RGBA, palette;
DICOM (see ``dicom.py``); ``.npy`` files; numpy arrays; PIL images. Sizes are checked on the header
before decoding, so a decompression bomb is refused without allocating its pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from llmcxr.errors import BadInputError
from llmcxr.imaging.dicom import looks_like_dicom, read_dicom
from llmcxr.imaging.limits import ImageLimits, check_size, require_frontal, warn_if_not_frontal

ImageSource = str | Path | Image.Image | np.ndarray

# Full-scale value of each integer dtype: a 16-bit PNG uses the whole 0..65535 range (PNG spec 12.2).
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _from_array(pixels: np.ndarray, source: object) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 -> float32 (H, W) in [0, 1]."""
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3, 4) and pixels.shape[-1] not in (1, 3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # channels-first (C, H, W) -> (H, W, C)
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4):
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        else:
            # ITU-R 601 luma, the weights PIL's convert("L") uses; alpha composited over black.
            alpha = _unit_scale(pixels[..., 3], source) if pixels.shape[-1] == 4 else 1.0
            rgb = _unit_scale(pixels[..., :3], source)
            return ((rgb @ np.array([0.299, 0.587, 0.114])) * alpha).astype(np.float32)
    if pixels.ndim != 2:
        raise BadInputError(
            source, f"array of shape {pixels.shape} is not an image", "pass (H, W), (H, W, C) or (C, H, W)"
        )
    return _unit_scale(pixels, source).astype(np.float32, copy=False)


def _unit_scale(pixels: np.ndarray, source: object) -> np.ndarray:
    """uint8 / uint16 by full scale, bool as 0/1, floats must already lie in [0, 1]."""
    if pixels.dtype == np.bool_:
        return pixels.astype(np.float64)
    if pixels.dtype in _FULL_SCALE:
        # float32 in place: a 64 M-pixel 16-bit image would take 512 MB more as float64 (issue 24)
        unit = pixels.astype(np.float32)
        return np.divide(unit, np.float32(_FULL_SCALE[pixels.dtype]), out=unit)
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise BadInputError(source, "image holds NaN or infinite values")
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0.0 or high > 1.0:
            raise BadInputError(
                source,
                f"float pixels range over [{low:.4g}, {high:.4g}], not [0, 1]",
                "scale the image to [0, 1] first (we do not guess the window)",
            )
        return pixels.astype(np.float64)
    raise BadInputError(
        source, f"pixel type {pixels.dtype} is not supported", "pass uint8, uint16, bool, or floats in [0, 1]"
    )


def _from_pil(image: Image.Image, source: object) -> np.ndarray:
    """A decoded PIL image of any mode -> float32 (H, W) in [0, 1]."""
    mode = image.mode
    if mode.startswith("I;16"):  # 16-bit grayscale PNG/TIFF
        return _unit_scale(np.asarray(image).astype(np.uint16, copy=False), source).astype(
            np.float32, copy=False
        )
    if mode == "I":  # 32-bit integer; PIL opens some 16-bit files this way
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise BadInputError(source, "32-bit integer image outside the 16-bit range")
        return _unit_scale(values.astype(np.uint16), source).astype(np.float32)
    if mode == "F":
        return _from_array(np.asarray(image, dtype=np.float32), source)
    if mode in ("L", "1"):
        return _from_array(np.asarray(image.convert("L")), source)
    if mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in image.info:
        return _from_array(np.asarray(image.convert("RGBA")), source)
    return _from_array(np.asarray(image.convert("RGB")), source)  # RGB, CMYK, YCbCr, LAB, HSV


def _draft_jpeg(image: Image.Image, draft_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) while the shortest side stays
    >= ``draft_side``: a 3000 px MIMIC-CXR-JPG decodes several times faster for a 256 px target."""
    scale = draft_side / min(image.size)
    if scale < 0.5:
        mode = "L" if image.mode in ("L", "YCbCr", "RGB") else image.mode  # Y of YCbCr is ITU-R 601 luma
        image.draft(mode, (int(np.ceil(image.width * scale)), int(np.ceil(image.height * scale))))


def _read_file(path: Path, limits: ImageLimits, draft_side: int | None = None) -> np.ndarray:
    """Open with PIL, check the header size, then decode; every PIL failure becomes a BadInputError."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below decides; PIL's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(path, image.width, image.height, limits)
                if draft_side and image.format == "JPEG":
                    _draft_jpeg(image, draft_side)
                image.load()
                return _from_pil(image, path)
    except BadInputError:
        raise  # already names the file and the problem (a ValueError, so it must not be wrapped below)
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image (no reader recognises this file)") from None
    except Image.DecompressionBombError as err:
        raise BadInputError(
            path, f"over PIL's pixel limit ({err})", "a possible decompression bomb"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        # PIL reports truncated or corrupt data as OSError ("image file is truncated"), SyntaxError
        # ("broken PNG file"), ValueError or EOFError, from deep inside its decoders.
        raise BadInputError(
            path, f"unreadable or truncated image ({type(err).__name__}: {err})", "re-export the file"
        ) from None


def _array_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of an array ``_from_array`` would read; (0, 0) for a shape it refuses."""
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        shape = (*shape[1:], shape[0])
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4)):
        return shape[1], shape[0]
    return 0, 0


def _read_npy(path: Path, limits: ImageLimits) -> np.ndarray:
    """A ``.npy`` file: the header's shape is checked before the pixels are read; no pickles."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise BadInputError(
            path, f"unreadable .npy file ({type(err).__name__}: {err})", "save it with numpy.save"
        ) from None
    if not isinstance(mapped, np.ndarray):
        raise BadInputError(path, "holds several arrays (.npz)", "save one image per .npy file")
    width, height = _array_size(mapped.shape)
    if (width, height) == (0, 0):
        raise BadInputError(
            path, f"array of shape {mapped.shape} is not an image", "save (H, W), (H, W, C) or (C, H, W)"
        )
    check_size(path, width, height, limits)
    return _from_array(np.asarray(mapped), path)


def load_image(
    source: ImageSource,
    limits: ImageLimits = ImageLimits(),
    frontal_only: bool = False,
    view: str | None = None,
    draft_side: int | None = None,
) -> np.ndarray:
    """Load a chest X-ray as float32 (H, W) in [0, 1] (1 = white).

    ``source`` is a path (PNG, JPEG, DICOM, ...), a PIL image, or a numpy array ((H, W) or with a
    channel axis; uint8, uint16, bool, or floats in [0, 1]). ``view`` is the view a manifest states
    for this image; with ``frontal_only`` a stated non-frontal view (here, or DICOM ViewPosition) is
    refused. ``draft_side``: a JPEG may be decoded at a reduced scale whose shortest side is still at
    least this (see ``_draft_jpeg``); None decodes at full size. Raises BadInputError naming the
    source and the problem.
    """
    if frontal_only:
        require_frontal(source if isinstance(source, str | Path) else "<image>", view)
    if isinstance(source, np.ndarray):
        if source.size == 0:
            raise BadInputError("<array>", f"zero-size image (array of shape {source.shape})")
        pixels = _from_array(source, "<array>")
        check_size("<array>", pixels.shape[1], pixels.shape[0], limits)
        return pixels
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        check_size(name, source.width, source.height, limits)
        try:  # an Image.open() result may still be lazily decoding from a broken file
            return _from_pil(source, name)
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            if isinstance(err, BadInputError):
                raise
            raise BadInputError(
                name, f"unreadable or truncated image ({type(err).__name__}: {err})"
            ) from None
    path = Path(source)
    check_image_path(path)
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file (0 bytes)", "the download or copy was interrupted")
    if not frontal_only:
        warn_if_not_frontal(path, view)
    if looks_like_dicom(path):
        return read_dicom(path, limits, frontal_only=frontal_only)
    if path.suffix.lower() == ".npy":
        return _read_npy(path, limits)
    return _read_file(path, limits, draft_side)


def check_image_path(path: Path) -> None:
    """Raise BadInputError for a path that is missing, a folder, or not a regular file."""
    if path.is_dir():
        raise BadInputError(
            path, "is a folder, not an image file", "give the image files (e.g. folder/*.png)"
        )
    if not path.exists():
        raise BadInputError(path, "file not found", "give the path of a PNG, JPEG, DICOM or .npy file")
    if not path.is_file():
        raise BadInputError(path, "not a regular file", "give the path of a PNG, JPEG, DICOM or .npy file")
