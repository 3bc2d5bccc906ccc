"""Synthetic CXR renderer speed on one core, per image size and per finding, plus the example grid.

    python benchmarks/synth_render.py [--images 200] [--out benchmarks/results/synth_render.json]
        [--grid docs/synthetic_examples.png]

Speed: ``render_cxr`` only (no PNG encoding), one process with numpy/BLAS threads pinned to 1,
best of three passes over the same specs, in images per CPU-second (= per core, even on a shared
machine) and per wall-clock second. Specs are sampled with ``balance=True`` so every finding is
in the mix. Per finding: one finding per image at 256 px. The grid: 4x4 tiles at 256 px, each
captioned with its findings and cardiothoracic ratio.
"""

from __future__ import annotations

import os

# pin threads before numpy loads: the target is images/s on ONE core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from llmcxr.atomic import atomic_path, write_json  # noqa: E402
from llmcxr.findings import Side  # noqa: E402
from llmcxr.synth import FindingSpec, Lesion, Opacity, render_cxr, render_study, sample_spec  # noqa: E402
from llmcxr.synth.templates import DRAWABLE, add_finding  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def images_per_second(specs: list[FindingSpec], size: int, passes: int = 3) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second), each the best of ``passes``.

    CPU seconds of this single-threaded process are core-seconds, so the first number is the speed
    on one core even while other jobs share the machine; the wall-clock number is what a user saw.
    """
    render_cxr(specs[0], size, 0)  # warm caches and imports
    best_cpu = best_wall = float("inf")
    for _ in range(passes):
        cpu, wall = time.process_time(), time.perf_counter()
        for seed, spec in enumerate(specs):
            render_cxr(spec, size, seed)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return round(len(specs) / best_cpu, 1), round(len(specs) / best_wall, 1)


def per_finding(size: int, images: int) -> dict[str, float]:
    out = {"normal": images_per_second([FindingSpec()] * images, size)[0]}
    for name in DRAWABLE:
        specs = []
        for i in range(images):
            spec = FindingSpec()
            add_finding(spec, name, random.Random(i))
            specs.append(spec)
        out[name] = images_per_second(specs, size)[0]
    return out


GRID: list[tuple[str, FindingSpec]] = [
    ("normal", FindingSpec()),
    ("cardiomegaly", FindingSpec(cardiomegaly=True)),
    ("left pleural effusion", FindingSpec(effusion=Side.LEFT, severity=0.7)),
    ("right pneumothorax", FindingSpec(pneumothorax=Side.RIGHT)),
    (
        "RUL consolidation + bronchograms",
        FindingSpec(opacities=(Opacity(Side.RIGHT, "upper", "consolidation", True),)),
    ),
    ("left lower lung opacity", FindingSpec(opacities=(Opacity(Side.LEFT, "lower", "opacity"),))),
    ("pulmonary edema + Kerley B", FindingSpec(edema=True, kerley_lines=True, cardiomegaly=True)),
    ("right upper nodule", FindingSpec(lesions=(Lesion(Side.RIGHT, "upper", "nodule"),))),
    ("left mid lung mass", FindingSpec(lesions=(Lesion(Side.LEFT, "middle", "mass"),))),
    ("right plate atelectasis", FindingSpec(atelectasis=Side.RIGHT)),
    ("LLL collapse", FindingSpec(atelectasis=Side.LEFT, atelectasis_kind="lobar")),
    ("ET tube, CVC, NG tube", FindingSpec(devices=("et_tube", "central_line", "ng_tube"))),
    ("pacemaker, sternotomy", FindingSpec(devices=("pacemaker", "sternotomy"))),
    ("wide mediastinum", FindingSpec(enlarged_mediastinum=True)),
    ("right rib fracture", FindingSpec(fracture=Side.RIGHT)),
    ("left pleural thickening", FindingSpec(pleural_thickening=Side.LEFT)),
]


def save_grid(path: Path, size: int = 256, seed: int = 100) -> None:
    tiles = []
    for i, (caption, spec) in enumerate(GRID):
        rendering = render_study(spec, size, seed + i)
        tile = Image.fromarray(rendering.pixels).convert("RGB")
        draw = ImageDraw.Draw(tile)
        text = f"{caption} (CTR {rendering.cardiothoracic_ratio:.2f})"
        draw.rectangle((0, 0, size, 14), fill=(0, 0, 0))
        draw.text((3, 2), text, fill=(255, 230, 0))
        tiles.append(np.asarray(tile))
    rows = [np.concatenate(tiles[r * 4 : (r + 1) * 4], axis=1) for r in range(4)]
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images per size and pass")
    parser.add_argument("--per-finding-images", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "synth_render.json")
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "synthetic_examples.png")
    args = parser.parse_args()

    load_before = os.getloadavg()
    rng = random.Random(0)
    specs = [sample_spec(rng, balance=True) for _ in range(args.images)]
    sizes, wall = {}, {}
    for size in (64, 128, 256):
        sizes[str(size)], wall[str(size)] = images_per_second(specs, size)
        print(f"{size:>4} px: {sizes[str(size)]} images/s per core ({wall[str(size)]} images/s wall clock)")
    findings = per_finding(256, args.per_finding_images)
    for name, speed in findings.items():
        print(f"  256 px {name}: {speed} images/s per core")
    save_grid(args.grid)
    result = {
        "benchmark": "synth_render",
        "what": "render_cxr images per CPU-second of one single-threaded process (numpy threads 1), "
        "best of 3 passes; balanced random findings. Wall clock alongside (machine shared).",
        "images_per_size": args.images,
        "images_per_second": sizes,
        "images_per_second_wall_clock": wall,
        "target_256px": 50,
        "meets_target": sizes["256"] >= 50,
        "per_finding_256px_per_core": findings,
        "grid": str(args.grid.relative_to(ROOT)) if args.grid.is_relative_to(ROOT) else str(args.grid),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "numpy": np.__version__,
    }
    write_json(args.out, result)
    print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    main()
