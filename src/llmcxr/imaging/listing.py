"""Find the images of a job: a folder walked for image/DICOM files, or a CSV/JSONL manifest.

A manifest names each image in an ``image`` or ``image_path`` column (relative to the manifest's own
folder, or absolute), with optional ``image_id`` and ``view`` columns. Without ``image_id`` an image
is keyed by its file stem; where two files share a stem, every image is keyed by its path relative
to the folder/manifest, without suffix (``p10/s5/abc``), or with it where that still collides
(``good.png`` and ``good.jpg`` in one folder), so ids stay unique and stable.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.imaging.limits import is_frontal

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp")
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class ImageEntry:
    """One image of a job: its id (the token store key), where it is, and its view if stated."""

    image_id: str
    path: Path
    view: str | None = None


def _relative_key(path: Path, root: Path) -> str:
    try:
        return path.with_suffix("").relative_to(root).as_posix()
    except ValueError:  # an absolute manifest path outside the manifest's folder
        return path.with_suffix("").as_posix().lstrip("/")


def _unique(keys: list[str]) -> bool:
    return len(set(keys)) == len(keys)


def _assign_ids(paths: list[Path], root: Path) -> list[str]:
    """File stems; relative paths without suffix when two stems collide; with suffix when those do too."""
    for keys in (
        [p.stem for p in paths],
        [_relative_key(p, root) for p in paths],
        [_relative_key(p, root) + p.suffix for p in paths],
    ):
        if _unique(keys):
            return keys
    return [p.as_posix() for p in paths]  # the same file listed twice: refused by the caller


def _walk_folder(folder: Path) -> list[ImageEntry]:
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    return [ImageEntry(i, p) for i, p in zip(_assign_ids(paths, folder), paths, strict=True)]


def _manifest_rows(manifest: Path) -> list[dict[str, object]]:
    try:
        if manifest.suffix.lower() == ".csv":
            with open(manifest, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
                return list(csv.DictReader(f))
        lines = manifest.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise BadInputError(manifest, f"unreadable manifest ({type(err).__name__}: {err})") from None


def _read_manifest(manifest: Path) -> list[ImageEntry]:
    rows = _manifest_rows(manifest)
    root = manifest.parent
    paths, ids, views = [], [], []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise BadInputError(manifest, f"row {number} is not an object with named columns")
        name = row.get("image_path") or row.get("image")
        if not name:
            raise BadInputError(
                manifest, f"row {number} has no 'image' or 'image_path' value", "name each image's file"
            )
        path = Path(str(name))
        paths.append(path if path.is_absolute() else root / path)
        ids.append(str(row["image_id"]) if row.get("image_id") not in (None, "") else None)
        views.append(str(row["view"]) if row.get("view") not in (None, "") else None)
    fallback = _assign_ids(paths, root)
    entries = [
        ImageEntry(given or derived, path, view)
        for given, derived, path, view in zip(ids, fallback, paths, views, strict=True)
    ]
    repeated = [key for key, count in Counter(e.image_id for e in entries).items() if count > 1]
    if repeated:
        raise BadInputError(manifest, f"image ids repeat: {repeated[:5]}", "give every row a unique image_id")
    return entries


def scan_images(folder_or_manifest: str | Path) -> list[ImageEntry]:
    """Every image of a folder (walked, sorted by path) or a manifest (in row order), with ids."""
    source = Path(folder_or_manifest)
    if source.is_dir():
        entries = _walk_folder(source)
    elif source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        entries = _read_manifest(source)
    elif source.is_file():
        raise BadInputError(
            source,
            "not a folder or a manifest",
            f"pass a folder of images or a {'/'.join(MANIFEST_SUFFIXES)} file",
        )
    else:
        raise BadInputError(source, "not found", "pass a folder of images or a manifest")
    if not entries:
        raise BadInputError(source, "no images found", f"looked for {', '.join(IMAGE_SUFFIXES)}")
    return entries


def list_images(folder_or_manifest: str | Path, frontal_only: bool = False) -> list[tuple[str, Path]]:
    """(image_id, path) of every image; with ``frontal_only``, rows whose stated view is not frontal are left out."""
    return [
        (e.image_id, e.path)
        for e in scan_images(folder_or_manifest)
        if not (frontal_only and is_frontal(e.view) is False)
    ]
