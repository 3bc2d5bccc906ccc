"""llmcxr.imaging: every accepted input format, every bad input, and the normalisation round trip."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RLELossless

from _dicom import write_dicom
from llmcxr.errors import BadInputError
from llmcxr.imaging import (
    ImageLimits,
    is_frontal,
    list_images,
    load_cxr,
    load_image,
    preprocess,
    preprocess_official,
    scan_images,
    to_pil,
)

SMALL = ImageLimits(min_side=8, max_pixels=10_000_000)


def _gradient(height: int = 96, width: int = 80, dtype: type = np.uint8) -> np.ndarray:
    """A deterministic test pattern covering the dtype's full range."""
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top, height * width).reshape(height, width)
    return np.round(ramp).astype(dtype)


def _save(tmp_path: Path, name: str, image: Image.Image, **kw: object) -> Path:
    path = tmp_path / name
    image.save(path, **kw)
    return path


# --- accepted formats -----------------------------------------------------------------------------


def test_png_8bit_gray_exact(tmp_path: Path) -> None:
    pixels = _gradient()
    path = _save(tmp_path, "a.png", Image.fromarray(pixels))
    loaded = load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == pixels.shape
    np.testing.assert_allclose(loaded, pixels / 255.0, atol=1e-6)


def test_png_16bit_keeps_precision(tmp_path: Path) -> None:
    pixels = _gradient(dtype=np.uint16)
    path = _save(tmp_path, "a16.png", Image.fromarray(pixels))
    loaded = load_image(path)
    np.testing.assert_allclose(loaded, pixels / 65535.0, atol=1e-6)
    # More distinct levels than an 8-bit image could hold: the 16 bits were not truncated.
    assert len(np.unique(loaded)) > 256


def test_rgb_rgba_palette_match_gray(tmp_path: Path) -> None:
    gray = _gradient()
    rgb = np.stack([gray] * 3, axis=-1)
    expected = gray / 255.0
    path_rgb = _save(tmp_path, "rgb.png", Image.fromarray(rgb))
    np.testing.assert_allclose(load_image(path_rgb), expected, atol=1 / 255)

    opaque = np.concatenate([rgb, np.full(gray.shape + (1,), 255, np.uint8)], axis=-1)
    path_rgba = _save(tmp_path, "rgba.png", Image.fromarray(opaque))
    np.testing.assert_allclose(load_image(path_rgba), expected, atol=1 / 255)

    # Transparent pixels composite over black (the background of a radiograph).
    clear = opaque.copy()
    clear[:10, :, 3] = 0
    loaded = load_image(_save(tmp_path, "clear.png", Image.fromarray(clear)))
    assert loaded[:10].max() == 0.0
    np.testing.assert_allclose(loaded[10:], expected[10:], atol=1 / 255)

    palette = Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    assert palette.mode == "P"
    loaded = load_image(_save(tmp_path, "pal.png", palette))
    np.testing.assert_allclose(loaded, np.asarray(palette.convert("L")) / 255.0, atol=1 / 255)


def test_jpeg_and_pil_input(tmp_path: Path) -> None:
    gray = _gradient()
    path = _save(tmp_path, "a.jpg", Image.fromarray(gray), quality=95)
    assert np.abs(load_image(path) - gray / 255.0).max() < 0.05
    np.testing.assert_allclose(load_image(Image.fromarray(gray)), gray / 255.0, atol=1e-6)
    # A lazily opened PIL image of a truncated file: our error, not PIL's.
    whole = _save(tmp_path, "whole.png", Image.fromarray(_gradient(256, 256)))
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:-400])
    with Image.open(tmp_path / "cut.png") as lazy, pytest.raises(BadInputError, match="cut.png: unreadable"):
        load_image(lazy)


def test_numpy_inputs() -> None:
    gray = _gradient()
    np.testing.assert_allclose(load_image(gray), gray / 255.0, atol=1e-6)
    wide = _gradient(dtype=np.uint16)
    np.testing.assert_allclose(load_image(wide), wide / 65535.0, atol=1e-6)
    unit = gray.astype(np.float32) / 255.0
    np.testing.assert_array_equal(load_image(unit), unit)
    np.testing.assert_allclose(load_image(unit[None]), unit, atol=1e-6)  # (1, H, W)
    np.testing.assert_allclose(load_image(np.stack([gray] * 3, -1)), unit, atol=1e-5)  # (H, W, 3)


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.zeros((0, 64), np.uint8), "zero-size"),
        (np.full((64, 64), 2.0, np.float32), r"not \[0, 1\]"),
        (np.full((64, 64), np.nan, np.float32), "NaN"),
        (np.zeros((64, 64), np.int32), "not supported"),
        (np.zeros((2, 64, 64, 3), np.uint8), "not an image"),
    ],
)
def test_bad_numpy_inputs(array: np.ndarray, problem: str) -> None:
    with pytest.raises(BadInputError, match=problem):
        load_image(array)


# --- DICOM ----------------------------------------------------------------------------------------


def _stored_pattern() -> np.ndarray:
    return np.round(np.linspace(0, 4095, 72 * 64)).reshape(72, 64).astype(np.uint16)


def test_dicom_rescale_and_window(tmp_path: Path) -> None:
    stored = _stored_pattern()
    path = write_dicom(
        tmp_path / "cxr.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=2000,
        WindowWidth=2001,
        ViewPosition="PA",
    )
    loaded = load_image(path, limits=SMALL, frontal_only=True)
    # Modality LUT then LINEAR window (PS3.3 C.11.2.1.2.1): centre - 0.5, width - 1, clipped.
    values = 2.0 * stored - 100.0
    expected = np.clip((values - 1999.5) / 2000.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(loaded, expected, atol=1e-5)
    assert loaded.min() == 0.0 and loaded.max() == 1.0


def test_dicom_voi_lut_table(tmp_path: Path) -> None:
    """A VOI LUT Sequence (a table, here a square-root curve) is applied in preference to a window."""
    table = Dataset()
    table.LUTDescriptor = [4096, 0, 12]  # entries, first stored value mapped, bits per output
    curve = np.round(np.sqrt(np.arange(4096) / 4095) * 4095).astype(np.uint16)
    table.LUTData = curve.tobytes()
    stored = _stored_pattern()
    path = write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[table], WindowCenter=100, WindowWidth=10)
    np.testing.assert_allclose(load_image(path, limits=SMALL), curve[stored] / 4095.0, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = _stored_pattern()
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", stored), limits=SMALL)
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"), limits=SMALL)
    # No window in the file: the values' own range is stretched onto [0, 1].
    np.testing.assert_allclose(mono2, stored / 4095.0, atol=1e-6)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_dicom_without_suffix_is_detected_by_magic(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cxr.dcm", _stored_pattern())
    renamed = path.rename(tmp_path / "no_suffix")
    assert load_image(renamed, limits=SMALL).shape == (72, 64)


def test_dicom_compressed_pixel_data(tmp_path: Path) -> None:
    """RLE Lossless decodes (pydicom's own decoder); undecodable JPEG 2000 data is a clear error."""
    stored = _stored_pattern()
    dataset = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", stored))
    dataset.compress(RLELossless)
    dataset.save_as(tmp_path / "rle.dcm")
    np.testing.assert_allclose(load_image(tmp_path / "rle.dcm", limits=SMALL), stored / 4095.0, atol=1e-6)
    dataset = pydicom.dcmread(tmp_path / "plain.dcm")
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.PixelData = encapsulate([b"not a JPEG 2000 codestream" * 4])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(tmp_path / "j2k.dcm")
    with pytest.raises(BadInputError, match="j2k.dcm: cannot decode the DICOM pixel data"):
        load_image(tmp_path / "j2k.dcm", limits=SMALL)


def test_dicom_lateral_refused_when_frontal_only(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "lat.dcm", _stored_pattern(), ViewPosition="LL")
    assert load_image(path, limits=SMALL).shape == (72, 64)  # fine unless only frontal is wanted
    with pytest.raises(BadInputError, match="'LL' is not frontal") as err:
        load_image(path, limits=SMALL, frontal_only=True)
    assert "lat.dcm" in str(err.value)


def test_dicom_broken_and_too_small(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "ok.dcm", _stored_pattern())
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(path.read_bytes()[:400])  # header kept, pixel data cut
    with pytest.raises(BadInputError, match="broken.dcm"):
        load_image(broken, limits=SMALL)
    with pytest.raises(BadInputError, match="72 pixels is smaller than the minimum side of 100"):
        load_image(path, limits=ImageLimits(min_side=100))  # checked on the header (Rows, Columns)


# --- bad files ------------------------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but carries almost no data (a bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_bad_files(tmp_path: Path) -> None:
    cases: list[tuple[Path, str]] = []
    cases.append((tmp_path / "missing.png", "file not found"))
    (tmp_path / "empty.png").write_bytes(b"")
    cases.append((tmp_path / "empty.png", "empty file"))
    (tmp_path / "notes.png").write_text("FINDINGS: clear lungs.")
    cases.append((tmp_path / "notes.png", "not an image"))
    whole = _save(tmp_path, "whole.png", Image.fromarray(_gradient(256, 256)))
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:-400])
    cases.append((tmp_path / "cut.png", "unreadable or truncated"))
    whole_jpg = _save(tmp_path, "whole.jpg", Image.fromarray(_gradient(256, 256)))
    (tmp_path / "cut.jpg").write_bytes(whole_jpg.read_bytes()[:300])
    cases.append((tmp_path / "cut.jpg", "unreadable or truncated"))
    cases.append((_png_header_only(tmp_path / "big.png", 9000, 9000), "over the limit"))
    cases.append((_png_header_only(tmp_path / "bomb.png", 100_000, 100_000), "pixel limit"))
    cases.append(
        (_save(tmp_path, "tiny.png", Image.fromarray(_gradient(20, 30))), "smaller than the minimum")
    )
    cases.append((tmp_path, "is a folder"))
    for path, problem in cases:
        with pytest.raises(BadInputError, match=problem) as err:
            load_image(path)
        assert str(path) in str(err.value), err.value


def test_limits_are_configurable(tmp_path: Path) -> None:
    path = _save(tmp_path, "a.png", Image.fromarray(_gradient(100, 100)))
    with pytest.raises(BadInputError, match="over the limit of 5,000 pixels"):
        load_image(path, limits=ImageLimits(min_side=8, max_pixels=5_000))
    with pytest.raises(BadInputError, match="minimum side of 128"):
        load_image(path, limits=ImageLimits(min_side=128))
    assert load_image(path, limits=ImageLimits(min_side=100)).shape == (100, 100)


def test_views() -> None:
    assert is_frontal("PA") and is_frontal("AP Supine") and is_frontal("ap")
    assert is_frontal("LL") is False and is_frontal("LATERAL") is False and is_frontal("LAO") is False
    assert is_frontal(None) is None and is_frontal(" ") is None
    with pytest.raises(BadInputError, match="not frontal"):
        load_image(_gradient(), view="LATERAL", frontal_only=True)
    assert load_image(_gradient(), view="LATERAL").shape == (96, 80)


# --- preprocessing --------------------------------------------------------------------------------


def test_preprocess_shape_range_and_lanczos() -> None:
    pixels = _gradient(300, 200) / 255.0
    image = preprocess(pixels.astype(np.float32), 64)
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    # The same as PIL's own Lanczos on the 8-bit image (shortest side 200 -> 64: 300 -> 96), centre crop.
    reference = Image.fromarray(_gradient(300, 200)).resize((64, 96), Image.Resampling.LANCZOS)
    expected = np.asarray(reference, dtype=np.float32)[16:80] / 127.5 - 1.0
    assert np.abs(image[0].numpy() - expected).max() < 2.5 / 255  # 8-bit rounding of the reference


def test_large_jpeg_draft_decode_matches_full_decode(tmp_path: Path) -> None:
    """load_cxr decodes big JPEGs at a reduced DCT scale: the result stays within one 8-bit level."""
    y, x = np.mgrid[0:1000, 0:1200]
    pixels = (127 + 100 * np.sin(x / 60) * np.cos(y / 80)).astype(np.uint8)
    path = _save(tmp_path, "big.jpg", Image.fromarray(np.stack([pixels] * 3, -1)), quality=92)
    assert load_image(path, draft_side=128).shape == (250, 300)  # 1/4 scale: shortest side 250 >= 128
    assert load_image(path).shape == (1000, 1200)
    fast = load_cxr(path, 64)  # draft_side = 2 * 64
    full = preprocess(load_image(path), 64)
    assert fast.shape == full.shape == (1, 64, 64)
    assert (fast - full).abs().max() < 2 / 255


def test_center_crop_keeps_the_middle() -> None:
    pixels = np.zeros((64, 192), np.float32)
    pixels[:, 64:128] = 1.0  # a bright middle third of a wide image
    image = preprocess(pixels, 64)[0]
    assert image[:, 8:-8].min() > 0.99  # away from the resampled borders
    assert preprocess(pixels.T.copy(), 64)[0][8:-8, :].min() > 0.99  # tall image, same band


def test_to_pil_round_trip(tmp_path: Path) -> None:
    gray = _gradient(64, 64)
    path = _save(tmp_path, "a.png", Image.fromarray(gray))
    image = load_cxr(path, 64)  # no resize at the native size
    back = to_pil(image)
    assert back.mode == "L" and back.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(back), gray)
    np.testing.assert_array_equal(np.asarray(to_pil(image[0])), gray)


# --- listing --------------------------------------------------------------------------------------


def test_list_folder_ids(tmp_path: Path) -> None:
    tiny = Image.fromarray(_gradient(8, 8))
    (tmp_path / "p1" / "s1").mkdir(parents=True)
    _save(tmp_path, "p1/s1/abc.png", tiny)
    _save(tmp_path, "def.jpg", tiny)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png.tmp").write_text("half-written")
    assert list_images(tmp_path) == [("def", tmp_path / "def.jpg"), ("abc", tmp_path / "p1/s1/abc.png")]
    _save(tmp_path, "p1/abc.png", tiny)  # stems collide: every id becomes its relative path
    assert [i for i, _ in list_images(tmp_path)] == ["def", "p1/abc", "p1/s1/abc"]


def test_list_manifests(tmp_path: Path) -> None:
    # Starts with the byte-order mark spreadsheets write.
    (tmp_path / "m.csv").write_text("\ufeffimage,view\nimages/a.png,PA\nimages/b.png,LL\n/abs/c.png,\n")
    assert list_images(tmp_path / "m.csv") == [
        ("a", tmp_path / "images/a.png"),
        ("b", tmp_path / "images/b.png"),
        ("c", Path("/abs/c.png")),
    ]
    assert [i for i, _ in list_images(tmp_path / "m.csv", frontal_only=True)] == ["a", "c"]
    rows = [
        {"image_id": "s1-x", "image_path": "x.png", "view": "AP"},
        {"image_id": "s2-x", "image_path": "y/x.png"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = scan_images(tmp_path / "m.jsonl")
    assert [(e.image_id, e.view) for e in entries] == [("s1-x", "AP"), ("s2-x", None)]

    (tmp_path / "dup.jsonl").write_text(
        json.dumps({"image_id": "a", "image": "1.png"}) * 1
        + "\n"
        + json.dumps({"image_id": "a", "image": "2.png"})
        + "\n"
    )
    with pytest.raises(BadInputError, match="ids repeat"):
        list_images(tmp_path / "dup.jsonl")
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(BadInputError, match="no 'image' or 'image_path'"):
        list_images(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images found"):
        list_images(tmp_path / "empty")


def test_shared_real_images_load(shared_data: Path) -> None:
    """The real CXR set: every listed image loads and normalises (checks 20 to stay fast)."""
    entries = list_images(shared_data / "cxr-real" / "manifest.csv", frontal_only=True)
    assert len(entries) > 600
    for _, path in entries[:20]:
        image = load_cxr(path, 128)
        assert image.shape == (1, 128, 128) and -1.0 <= image.min() < image.max() <= 1.0


def test_official_pipeline_crops_as_torchvision_and_decodes_jpeg_in_full(tmp_path: Path) -> None:
    """The published LLM-CXR's pixels: 8-bit Lanczos to round(side * size / shortest), then torchvision's
    centre crop, whose offsets are int(round((side - size) / 2)): 1.5 -> 2 where ours floors to 1."""
    ramp = np.tile(np.arange(259, dtype=np.uint8), (256, 1))  # column c holds c: the crop shows its offset
    official = preprocess_official(ramp.astype(np.float32) / 255, 256)
    assert official.shape == (1, 256, 256)
    assert float(official[0, 0, 0]) == pytest.approx(2 / 255 * 2 - 1)  # left = round(1.5) = 2
    assert float(preprocess(ramp.astype(np.float32) / 255, 256)[0, 0, 0]) == pytest.approx(1 / 255 * 2 - 1)
    # a large JPEG: decoded in full (no DCT-scaled draft), resized on 8 bits, by hand with PIL
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (600, 530), dtype=np.uint8)).save(tmp_path / "big.jpg", quality=90)
    with Image.open(tmp_path / "big.jpg") as image:
        full = image.convert("L").resize((64, round(600 * 64 / 530)), Image.Resampling.LANCZOS)
    top = int(round((full.height - 64) / 2.0))
    expected = np.asarray(full, dtype=np.float32)[top : top + 64] / np.float32(255) * 2 - 1
    got = load_cxr(tmp_path / "big.jpg", 64, pipeline="official")
    assert torch.equal(got[0], torch.from_numpy(expected))
    assert not torch.equal(load_cxr(tmp_path / "big.jpg", 64), got)  # ours drafts and resizes floats
    with pytest.raises(BadInputError, match="pixel pipeline"):
        load_cxr(tmp_path / "big.jpg", 64, pipeline="other")
