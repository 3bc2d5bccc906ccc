"""The project's finding classifier on a synthetic world: per-class test AUROC, and FID sanity checks.

    nice -n 10 python benchmarks/finding_classifier.py [--n 2000] [--size 64] [--steps 1000]
        [--work /tmp/llmcxr-bench] [--out benchmarks/results/finding_classifier.json]

Builds (or resumes) ``llmcxr data synth --n N --size S --seed 0`` in ``--work``, trains the
classifier on the train split (one torch thread: on the shared 2-core machine two threads ran 10x
slower), and scores its probabilities on the test split against the image labels (report labels
less the findings the renderer did not draw) per class, over all classes with both label values and
over the findings the renderer draws. The classifier exists to score generated images (finding
agreement) and to give FID/KID features, so the JSON also holds FIDs in its feature space: test vs
train (same distribution: small), and test with Gaussian noise (sigma 0.1, 0.3 on [-1, 1]) vs train
(must grow with the noise), with the network's name and weights hash.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from llmcxr.atomic import write_json
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.metrics.clinical import LabelConvention, auroc_per_class, binarize_labels
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    image_labels,
    load_record_images,
    train_finding_classifier,
)
from llmcxr.metrics.images import FindingClassifierFeatures, fid_kid
from llmcxr.synth import build_world

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/llmcxr-bench"))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "finding_classifier.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    world = args.work / f"world-{args.n}-{args.size}"
    started = time.perf_counter()
    world_summary = build_world(world, args.n, args.size, seed=0)
    world_seconds = time.perf_counter() - started
    records = read_synthetic_world(world)
    train = ClassifierTrainConfig(steps=args.steps)
    model, summary = train_finding_classifier(
        records, args.size, args.work / f"classifier-{args.n}-{args.size}", train=train, log=print
    )

    test = [r for r in records if r.split == "test"]
    train_records = [r for r in records if r.split == "train"]
    classes = model.config.classes
    drawn = sorted({name for r in records for name in r.extra.get("drawn", [])} & set(classes))
    test_images = load_record_images(test, args.size)
    probabilities = model.predict(test_images).numpy()
    targets = binarize_labels([image_labels(r) for r in test], classes, LabelConvention())
    all_classes = auroc_per_class(probabilities, targets, classes)
    columns = [classes.index(c) for c in drawn]
    drawn_only = auroc_per_class(probabilities[:, columns], targets[:, columns], drawn)

    network = FindingClassifierFeatures(model)
    reference = load_record_images(train_records, args.size)
    generator = torch.Generator().manual_seed(0)
    fids = {"test_vs_train": fid_kid(test_images, reference, network)}
    for sigma in (0.1, 0.3):
        noisy = (test_images + sigma * torch.randn(test_images.shape, generator=generator)).clamp(-1, 1)
        fids[f"test_noise{sigma}_vs_train"] = fid_kid(noisy, reference, network)

    result = {
        "command": f"nice -n 10 python benchmarks/finding_classifier.py --n {args.n} --size {args.size} --steps {args.steps}",
        "world": {
            "n": args.n,
            "size": args.size,
            "reports": world_summary["config"]["reports"],
            "splits": world_summary["splits"],
            "build_seconds": round(world_seconds, 1),
        },
        "train_seconds": summary["train_seconds"],
        "n_train": summary["n_train"],
        "n_test": len(test),
        "weights_sha256": model.weights_sha256,
        "test_macro_auroc_drawn": drawn_only["macro_auroc"],
        "test_macro_auroc_all": all_classes["macro_auroc"],
        "test_auroc_drawn": {k: v["auroc"] for k, v in drawn_only["per_class"].items()},
        "test_auroc_all": all_classes,
        "validate_macro_auroc": summary.get("eval_auroc", {}).get("macro_auroc"),
        "fid": {
            k: {m: v[m] for m in ("fid", "kid_mean", "kid_std", "n_generated", "n_reference")}
            for k, v in fids.items()
        },
        "feature_network": fids["test_vs_train"]["feature_network"],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": 1,
            "torch": torch.__version__,
        },
    }
    write_json(args.out, result)
    print(
        f"test macro-AUROC over drawn findings {drawn_only['macro_auroc']:.3f} ({len(drawn)} classes); all {all_classes['macro_auroc']:.3f}"
    )
    for name, value in result["test_auroc_drawn"].items():
        print(f"  {name}: {value}")
    print({k: round(v["fid"], 3) for k, v in result["fid"].items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
