"""Build a synthetic paired CXR world: images, reports, labels, VQA pairs and splits in one folder.

Each image is drawn from a report. With the IU X-ray reports available (``reports="iu"``, or
``"auto"`` when they are found), a real report is read, labelled with ``label_report``, and its
positive findings are drawn (laterality and lung zone where the report states them), so the text
stays real. Otherwise (``"templates"``) a spec is sampled and its report composed from templates;
the composed report is labelled too and any disagreement with the drawing is counted in
``world.json``. ``balance=True`` makes every drawable finding (and normal) equally likely.

Splits are 80/10/10 at random (``split_by="random"``), or, with IU reports, R2Gen's study split
(``split_by="r2gen"``, Chen et al. EMNLP 2020): every validation and test report is drawn once, on an
image of its own split, and the training images draw only training reports, so no test report is
ever drawn in training. IU reports outside the R2Gen lists are not used.

Folder layout (``docs/synthetic_world.md``)::

    out/world.json       config, counts, label disagreements, render speed
    out/manifest.jsonl   one CXRRecord per line (image_path relative to out)
    out/vqa.jsonl        one QA pair per line
    out/images/<image_id>.png

A re-run with the same arguments skips the images already written; other arguments are refused.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from llmcxr import atomic
from llmcxr.datasets.iu_xray import read_r2gen_split
from llmcxr.datasets.synthetic import WORLD_KIND
from llmcxr.errors import BadInputError
from llmcxr.findings import Mention
from llmcxr.records import CXRRecord
from llmcxr.reports import generate_qa, label_report, qa_seed, write_vqa_jsonl
from llmcxr.synth.iu_reports import (
    IU_ARCHIVE,
    SourceReport,
    find_iu_reports,
    load_iu_reports,
    r2gen_split_file,
    report_text,
    split_reports_by_r2gen,
)
from llmcxr.synth.render import FindingSpec, cardiothoracic_ratio, render_cxr
from llmcxr.synth.templates import DRAWABLE, add_finding, compose_report, sample_spec

SPLIT_SHARES = (("train", 0.8), ("validate", 0.1), ("test", 0.1))


@dataclass
class WorldConfig:
    """The arguments that define a world; stored in ``world.json`` and checked on resume."""

    n: int
    size: int
    seed: int
    balance: bool
    reports: str  # "iu" or "templates" (after resolving "auto")
    iu_reports_path: str | None  # the IU archive/folder used, if any
    split_by: str = "random"  # "random" (80/10/10) or "r2gen" (each IU report's R2Gen split)
    r2gen_split_path: str | None = None  # the R2Gen split file used, with split_by="r2gen"


# --- drawing a real report -------------------------------------------------------------------------

_ZONE_WORDS = (
    ("upper", re.compile(r"upper|apical|apex|apices")),
    ("lower", re.compile(r"lower|basilar|base|bases|basal|retrocardiac|costophrenic")),
    ("middle", re.compile(r"middle|mid|lingula|perihilar|hilar|midlung")),
)
_DEVICE_WORDS = (
    ("et_tube", re.compile(r"endotracheal|\bet tube|\bett\b|tracheostomy")),
    ("central_line", re.compile(r"central|picc|catheter|\bport\b|jugular|subclavian|\bline\b")),
    ("ng_tube", re.compile(r"nasogastric|\bng\b|\bog\b|enteric|feeding tube|orogastric")),
    ("pacemaker", re.compile(r"pacemaker|pacer|defibrillator|\baicd\b|\bicd\b|leads?\b")),
    ("sternotomy", re.compile(r"sternotomy|sternal wires")),
)
_SEVERITY_WORDS = (
    (0.3, re.compile(r"small|mild|minimal|trace|tiny|slight")),
    (0.9, re.compile(r"large|severe|marked|massive|extensive")),
    (0.6, re.compile(r"moderate")),
)


def _near(text: str, start: int, end: int) -> str:
    """The sentence that holds a mention (where its side, zone and size words are)."""
    left = text.rfind(".", 0, start) + 1
    right = text.find(".", end)
    return text[left : right if right >= 0 else len(text)]


def spec_from_report(report: SourceReport, rng: random.Random) -> FindingSpec:
    """Draw the report's positive findings, with its sides, zones, sizes and devices where stated."""
    text = report.text.lower()
    spec = FindingSpec(severity=rng.uniform(0.4, 1.0))
    positive = [name for name in DRAWABLE if report.labels.get(name) == Mention.POSITIVE]
    for name in positive:
        context = " ".join(_near(text, m.start, m.end) for m in report.mentions if m.finding == name)
        zone = next((z for z, rx in _ZONE_WORDS if rx.search(context)), None)
        add_finding(spec, name, rng, side=report.sides.get(name), zone=zone)
        if name == "Lung Lesion":
            kind = "mass" if re.search(r"mass|tumou?r|carcinoma|neoplas", context) else "nodule"
            spec.lesions = tuple(dataclasses.replace(lesion, kind=kind) for lesion in spec.lesions)
        if name == "Support Devices":
            devices = tuple(d for d, rx in _DEVICE_WORDS if rx.search(context))
            spec.devices = devices or spec.devices
        severity = next((s for s, rx in _SEVERITY_WORDS if rx.search(context)), None)
        if severity is not None and name in ("Pleural Effusion", "Pneumothorax", "Cardiomegaly", "Edema"):
            spec.severity = severity
    return spec


# --- one record ----------------------------------------------------------------------------------


def _render_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _choose_report(
    index: int,
    config: WorldConfig,
    pool: list[SourceReport] | None,
    groups: dict[str, list[int]],
    fixed: SourceReport | None = None,
) -> tuple[SourceReport, FindingSpec]:
    rng = random.Random(_render_seed(config.seed, index) ^ 0x5EED)
    if fixed is not None:
        return fixed, spec_from_report(fixed, rng)
    if pool is not None:
        if config.balance:
            group = groups[rng.choice(sorted(groups))]
            report = pool[group[rng.randrange(len(group))]]
        else:
            report = pool[rng.randrange(len(pool))]
        return report, spec_from_report(report, rng)
    spec = sample_spec(rng, config.balance)
    findings, impression = compose_report(spec, rng)
    labeled = label_report(report_text(findings, impression))
    return SourceReport(
        findings, impression, labeled.labels, labeled.sides, labeled.mentions, "template"
    ), spec


def _disagreements(report: SourceReport, spec: FindingSpec) -> list[str]:
    """Where the labeler's reading of a composed report differs from the drawing."""
    drawn = spec.positives()
    found = {n for n, v in report.labels.items() if v == Mention.POSITIVE and n != "No Finding"}
    out = [f"missed {n}" for n in sorted(set(drawn) - found)]
    out += [f"extra {n}" for n in sorted(found - set(drawn))]
    out += [f"uncertain {n}" for n, v in sorted(report.labels.items()) if v == Mention.UNCERTAIN]
    for name, side in drawn.items():
        if side is not None and name in report.sides and report.sides[name] != side:
            out.append(f"side {name}")
    return out


def make_record(
    index: int,
    config: WorldConfig,
    pool: list[SourceReport] | None,
    groups: dict[str, list[int]],
    fixed: SourceReport | None = None,
) -> CXRRecord:
    """Image ``index`` of the world: drawn from ``fixed`` where given, else from a report of ``pool``."""
    report, spec = _choose_report(index, config, pool, groups, fixed)
    image_id = f"synth{config.seed}-{index:06d}"
    render_seed = _render_seed(config.seed, index)
    drawn = spec.positives()
    undrawn = sorted(
        n
        for n, v in report.labels.items()
        if n != "No Finding" and n not in drawn and v in (Mention.POSITIVE, Mention.UNCERTAIN)
    )
    labels = {name: int(value) for name, value in report.labels.items()}
    drawn_sides = {name: side for name, side in drawn.items() if side is not None}
    extra: dict[str, Any] = {
        "drawn": sorted(drawn),
        "undrawn": undrawn,
        "sides": {name: int(side) for name, side in drawn_sides.items()},
        "report_sides": {name: int(side) for name, side in report.sides.items()},
        "spec": spec.to_dict(),
        "cardiothoracic_ratio": cardiothoracic_ratio(spec, render_seed),
        "render_seed": render_seed,
        "report_source": report.origin,
    }
    if report.origin == "template":
        extra["label_disagreements"] = _disagreements(report, spec)
    return CXRRecord(
        image_id=image_id,
        image_path=f"images/{image_id}.png",
        study_id=image_id,
        patient_id=f"synth{config.seed}-p{index:06d}",
        view="PA",
        findings=report.findings,
        impression=report.impression,
        labels=labels,
        # VQA asks about the image: drawn sides (a random side where the report gave none).
        qa=generate_qa(labels, drawn_sides, seed=qa_seed(image_id, config.seed)),
        source="synthetic",
        extra=extra,
    )


def assign_splits(records: list[CXRRecord], seed: int) -> None:
    """80/10/10 train/validate/test, a fixed permutation of the indices by ``seed``."""
    order = np.random.default_rng(seed).permutation(len(records))
    n_validate = round(len(records) * SPLIT_SHARES[1][1])
    n_test = round(len(records) * SPLIT_SHARES[2][1])
    for rank, index in enumerate(order):
        records[index].split = (
            "test" if rank < n_test else "validate" if rank < n_test + n_validate else "train"
        )


def _finding_groups(pool: list[SourceReport]) -> dict[str, list[int]]:
    """Drawable finding (or "No Finding") -> indices of the reports that have it, for ``balance``."""
    groups: dict[str, list[int]] = {}
    for i, report in enumerate(pool):
        drawable = [name for name in DRAWABLE if report.labels.get(name) == Mention.POSITIVE]
        for name in drawable or ["No Finding"]:
            groups.setdefault(name, []).append(i)
    return groups


def r2gen_records(
    config: WorldConfig, pool: list[SourceReport], split_of: dict[str, str]
) -> tuple[list[CXRRecord], dict[str, Any]]:
    """Records split by R2Gen: the training images first (each drawn from a training report, as in
    random mode), then one image per validation report and one per test report, in uid order."""
    train_pool, held_out, summary = split_reports_by_r2gen(pool, split_of)
    n_train = config.n - len(held_out)
    if n_train < 1:
        raise BadInputError(
            config.r2gen_split_path,
            f"--n {config.n} leaves no training images after one image for each of the "
            f"{len(held_out)} validation and test reports",
            f"use --n {len(held_out) + 1} or more",
        )
    groups = _finding_groups(train_pool)
    records = [make_record(i, config, train_pool, groups) for i in range(n_train)]
    records += [make_record(n_train + i, config, None, {}, fixed=r) for i, r in enumerate(held_out)]
    for i, record in enumerate(records):
        record.split = "train" if i < n_train else split_of[held_out[i - n_train].uid]
    return records, summary


# --- rendering -----------------------------------------------------------------------------------


def _render_to_png(job: tuple[str, dict[str, Any], int, int]) -> str:
    """Worker: render one image and write it atomically. Module level so process pools can pickle it."""
    path, spec, size, seed = job
    pixels = render_cxr(FindingSpec.from_dict(spec), size, seed)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=3)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def _png_ok(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _check_resume(out: Path, config: WorldConfig) -> None:
    world = out / "world.json"
    if not world.is_file():
        return
    try:
        old = json.loads(world.read_text()).get("config", {})
    except json.JSONDecodeError as err:
        raise BadInputError(world, f"unreadable ({err})", "delete the folder or pick a new --out") from err
    new = dataclasses.asdict(config)
    # Fields added later take their defaults in a world written before them.
    old = {f.name: f.default for f in dataclasses.fields(WorldConfig) if f.name not in old} | old
    if old != new:
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise BadInputError(
            out,
            f"holds a different synthetic world (differs in {', '.join(changed)})",
            "use a new --out or the same arguments to resume",
        )


def build_world(
    out: str | Path,
    n: int,
    size: int,
    seed: int,
    balance: bool = False,
    reports: str = "auto",
    iu_reports_path: str | Path | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    split_by: str = "random",
    r2gen_split_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write a world of ``n`` images of ``size`` px to ``out``; returns the ``world.json`` summary.

    ``reports``: "iu" (real IU X-ray reports; error if not found), "templates", or "auto" (IU where
    found). ``split_by``: "random" (80/10/10) or "r2gen" (IU reports only: R2Gen's split, read from
    ``r2gen_split_path``, else from ``r2gen_split.json`` beside the reports).
    ``progress(done, total)`` is called as images finish (skipped ones included).
    """
    out = Path(out)
    if n < 1:
        raise BadInputError(None, f"--n must be at least 1, got {n}", "")
    if reports not in ("auto", "iu", "templates"):
        raise BadInputError(None, f"unknown reports mode {reports!r}", "use auto, iu or templates")
    iu_path = find_iu_reports(iu_reports_path) if reports != "templates" else None
    if reports == "iu" and iu_path is None:
        raise BadInputError(
            None,
            "IU X-ray reports not found",
            f"pass --iu-reports PATH to {IU_ARCHIVE} or use --reports templates",
        )
    mode = "iu" if iu_path is not None else "templates"
    split_path = r2gen_split_file(split_by, iu_path, r2gen_split_path)
    config = WorldConfig(
        n, size, seed, balance, mode, str(iu_path) if iu_path else None, split_by, split_path
    )
    _check_resume(out, config)

    pool = load_iu_reports(iu_path) if iu_path is not None else None
    r2gen: dict[str, Any] | None = None
    if pool is not None and split_path is not None:
        records, r2gen = r2gen_records(config, pool, read_r2gen_split(split_path))
    else:
        groups = _finding_groups(pool) if pool is not None else {}
        records = [make_record(i, config, pool, groups) for i in range(n)]
        assign_splits(records, seed)
    summary: dict[str, Any] = {
        "kind": WORLD_KIND,
        "version": 1,
        "config": dataclasses.asdict(config),
        "complete": False,
    }
    atomic.write_json(out / "world.json", summary)

    jobs = []
    for record in records:
        path = out / str(record.image_path)
        if not _png_ok(path):
            jobs.append((str(path), record.extra["spec"], size, record.extra["render_seed"]))
    done = n - len(jobs)
    if progress:
        progress(done, n)
    start = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool_executor:
            for _ in pool_executor.map(_render_to_png, jobs, chunksize=8):
                done += 1
                if progress:
                    progress(done, n)
    else:
        for job in jobs:
            _render_to_png(job)
            done += 1
            if progress:
                progress(done, n)
    seconds = time.perf_counter() - start

    atomic.write_text(
        out / "manifest.jsonl", "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records)
    )
    qa_pairs = write_vqa_jsonl(out / "vqa.jsonl", records)
    drawn = Counter(name for r in records for name in r.extra["drawn"])
    summary |= {
        "complete": True,
        "images": n,
        "rendered_now": len(jobs),
        "render_seconds": round(seconds, 2),
        "images_per_second": round(len(jobs) / seconds, 1) if jobs and seconds > 0 else None,
        "splits": dict(Counter(r.split for r in records)),
        "normal": sum(1 for r in records if not r.extra["drawn"]),
        "drawn": dict(sorted(drawn.items())),
        "undrawn": dict(Counter(name for r in records for name in r.extra["undrawn"])),
        "label_disagreements": sum(1 for r in records if r.extra.get("label_disagreements")),
        "qa_pairs": qa_pairs,
    }
    if r2gen is not None:
        summary["r2gen_split"] = r2gen
    atomic.write_json(out / "world.json", summary)
    return summary
