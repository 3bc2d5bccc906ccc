"""The run folder of ``llmcxr eval run``: its files, the claim on it (resume or refuse), timings, small helpers."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmcxr import atomic
from llmcxr.config import to_dict
from llmcxr.errors import BadInputError
from llmcxr.evaluation.config import CONFIG_NAME, EvalRunConfig

if TYPE_CHECKING:
    from llmcxr.evaluation.real_data import RealEvalConfig


def model_weights(folder: Path) -> list[Path]:
    """The weight files that define a model folder's outputs: the LM's safetensors and the VQ-GAN's."""
    files = sorted(folder.glob("*.safetensors")) + sorted((folder / "vq").glob("*.safetensors"))
    if not files:
        raise BadInputError(
            folder, "no .safetensors weights in this model folder", "give `llmcxr train`'s model/"
        )
    return files


def contiguous_batches(indices: Sequence[int], size: int) -> list[list[int]]:
    """Split sorted indices into runs of consecutive items inside one ``size``-aligned chunk of the
    full list, so a resumed run batches (and pads) the remaining items as an uninterrupted run did."""
    batches: list[list[int]] = []
    for i in indices:
        if batches and i == batches[-1][-1] + 1 and i % size != 0:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def read_jsonl_rows(path: Path, key: str) -> dict[str, dict]:
    """{row[key]: row} of a JSONL file this module wrote; {} if it does not exist."""
    if not path.is_file():
        return {}
    rows: dict[str, dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[str(row[key])] = row
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BadInputError(
                f"{path}:{number}", f"not a row this run wrote ({err})", "rerun with --restart"
            ) from None
    return rows


def write_jsonl_rows(path: Path, rows: Sequence[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def safe_image_id(image_id: str) -> str:
    """An image id usable as a file name (generated/<id>.png)."""
    if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
        raise BadInputError(image_id, "image id is not a plain file name", "give records with plain ids")
    return image_id


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RunFolder:
    """``out``: claims it for a config (refusing one with other generation settings), sums timings."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.reports = self.out / "reports.jsonl"
        self.generated = self.out / "generated"
        self.vqa = self.out / "vqa.jsonl"
        self.baselines = self.out / "baselines"
        self.classifier = self.out / "classifier"
        self.timings_path = self.out / "timings.json"

    def generated_image(self, image_id: str) -> Path:
        return self.generated / f"{safe_image_id(image_id)}.png"

    def claim(self, config: EvalRunConfig | RealEvalConfig, identity: dict) -> None:
        saved = self.out / CONFIG_NAME
        if saved.is_file():
            previous = json.loads(saved.read_text(encoding="utf-8")).get("identity", {})
            changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            if changed and not config.restart:
                detail = "; ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in changed[:4])
                raise BadInputError(
                    saved,
                    f"this folder holds a run with other generation settings ({detail})",
                    "use another --out, or pass --restart to discard its generated results",
                )
        if config.restart:
            self.clear()
        atomic.write_json(saved, {"config": to_dict(config), "identity": identity})

    def clear(self) -> None:
        """Remove what an earlier run generated (only the files this module writes)."""
        for folder in (self.generated, self.baselines, self.classifier):
            if folder.is_dir():
                shutil.rmtree(folder)
        for name in (
            "reports.jsonl",
            "vqa.jsonl",
            "timings.json",
            "eval.json",
            "eval.md",
            "reports_by_system.jsonl",
        ):
            (self.out / name).unlink(missing_ok=True)

    def add_seconds(self, stage: str, seconds: float) -> None:
        """Generation seconds per stage summed over invocations (a resumed run's total is the sum)."""
        timings = self.timings()
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
        atomic.write_json(self.timings_path, timings)

    def timings(self) -> dict[str, float]:
        return (
            json.loads(self.timings_path.read_text(encoding="utf-8")) if self.timings_path.is_file() else {}
        )


@contextmanager
def progress_bars(show: bool) -> Iterator[Progress]:
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, quiet=not show),
        disable=not show,
    )
    with bars:
        yield bars


def cache_dir() -> Path:
    """Where results that outlive one run are kept: $LLMCXR_CACHE, else $XDG_CACHE_HOME/llmcxr, else ~/.cache/llmcxr."""
    if os.environ.get("LLMCXR_CACHE"):
        return Path(os.environ["LLMCXR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmcxr"


def load_generated_images(paths: Sequence[Path], size: int):
    """Generated images (at the VQ-GAN's resolution: may be below the size limit for input CXRs)
    -> (N, 1, size, size) in [-1, 1]."""
    import torch

    from llmcxr.imaging import load_cxr
    from llmcxr.imaging.limits import ImageLimits

    return torch.stack([load_cxr(p, size, limits=ImageLimits(min_side=1)) for p in paths])
