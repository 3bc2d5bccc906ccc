"""IU X-ray (OpenI, Demner-Fushman et al., JAMIA 2016): 3,955 chest X-ray reports as XML.

Each ``ecgen-radiology/<n>.xml`` holds ``<uId id="CXR<n>">``, ``<AbstractText Label=...>`` for
COMPARISON / INDICATION / FINDINGS / IMPRESSION, human MeSH tags (``<MeSH><major>``/``<minor>``,
e.g. ``Opacity/lung/base/left``) and ``<parentImage id="CXR<n>_1_IM-0001-3001">`` per image.
``read_iu_reports`` reads them from ``NLMCXR_reports.tgz`` without extracting it, or from a folder.

``iu_records`` turns them into ``CXRRecord``s: labels from the rule-based labeler (``label=True``),
image paths from a folder of PNGs where the user has the images (``<parentImage id>.png`` as in
``NLMCXR_png.tgz``, or ``<study>/0.png`` as in the R2Gen release), splits from R2Gen's
``r2gen_split.json`` (study ids ``CXR<n>_IM-<k>``, matched on ``CXR<n>``).
"""

from __future__ import annotations

import json
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.records import CXRRecord


@dataclass
class IUReport:
    """One IU X-ray report as written (``XXXX`` anonymisation kept; see ``clean_report_text``)."""

    uid: str  # "CXR1"
    findings: str = ""
    impression: str = ""
    comparison: str = ""
    indication: str = ""
    mesh_major: list[str] = field(default_factory=list)  # e.g. ["Cardiomegaly/mild", "normal"]
    mesh_minor: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)  # parentImage ids, file order


def parse_iu_xml(payload: bytes | str, source: str = "<xml>") -> IUReport:
    """One report from the bytes of one OpenI XML file."""
    try:
        root = ET.fromstring(payload)
    except ET.ParseError as err:
        raise BadInputError(
            source, f"not valid XML ({err})", "pass an OpenI ecgen-radiology XML file"
        ) from err
    uid_node = root.find("uId")
    if uid_node is None or not uid_node.get("id"):
        raise BadInputError(source, "no <uId id=...> element", "is this an IU X-ray (OpenI) report?")
    report = IUReport(uid=uid_node.get("id", ""))
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        text = " ".join((node.text or "").split())
        if label in ("findings", "impression", "comparison", "indication"):
            setattr(report, label, text)
    for mesh in root.iter("MeSH"):
        report.mesh_major += [" ".join((m.text or "").split()) for m in mesh.iter("major") if m.text]
        report.mesh_minor += [" ".join((m.text or "").split()) for m in mesh.iter("minor") if m.text]
    report.image_ids = [p.get("id", "") for p in root.iter("parentImage") if p.get("id")]
    return report


def _xml_payloads(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_dir():
        files = sorted(source.rglob("*.xml"))
        if not files:
            raise BadInputError(
                source, "no .xml files in this folder", "pass the ecgen-radiology folder or the .tgz"
            )
        for path in files:
            yield str(path), path.read_bytes()
    elif source.is_file() and source.suffix == ".xml":
        yield str(source), source.read_bytes()
    elif source.is_file():
        try:
            with tarfile.open(source, "r:*") as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(".xml"):
                        handle = archive.extractfile(member)
                        if handle is not None:
                            yield f"{source}:{member.name}", handle.read()
        except tarfile.TarError as err:
            raise BadInputError(
                source, f"not a readable tar archive ({err})", "pass NLMCXR_reports.tgz"
            ) from err
    else:
        raise BadInputError(source, "not found", "pass NLMCXR_reports.tgz or a folder of its XML files")


def _uid_number(uid: str) -> int:
    digits = "".join(ch for ch in uid if ch.isdigit())
    return int(digits) if digits else 0


def read_iu_reports(source: str | Path) -> list[IUReport]:
    """All reports in a .tgz, a folder of XML files or one XML file, sorted by uid number."""
    reports = [parse_iu_xml(payload, name) for name, payload in _xml_payloads(Path(source))]
    if not reports:
        raise BadInputError(
            source, "no XML reports inside", "pass NLMCXR_reports.tgz or its ecgen-radiology folder"
        )
    return sorted(reports, key=lambda r: _uid_number(r.uid))


def read_r2gen_split(path: str | Path) -> dict[str, str]:
    """R2Gen split file -> {"CXR<n>": "train"|"validate"|"test"} (its "val" read as "validate")."""
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BadInputError(path, f"cannot read the split JSON ({err})", "pass r2gen_split.json") from err
    names = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}
    split_of = {}
    for key, split in names.items():
        for study in blob.get(key, []):
            split_of[str(study).split("_")[0]] = split
    if not split_of:
        raise BadInputError(
            path, "no train/val/test lists", "expected R2Gen's {'train': [...], 'val': [...], 'test': [...]}"
        )
    return split_of


def _image_index(folder: Path) -> dict[str, Path]:
    """image id -> PNG path: ``<id>.png`` files, and R2Gen's ``<study>/<k>.png`` as ``<study>#<k>``."""
    if not folder.is_dir():
        raise BadInputError(folder, "image folder not found", "pass the folder with the IU PNG images")
    index = {}
    for path in folder.rglob("*.png"):
        index[path.stem] = path
        index[f"{path.parent.name}#{path.stem}"] = path
    return index


def _study_id(image_id: str) -> str:
    """ "CXR1_1_IM-0001-3001" -> "CXR1_IM-0001" (the R2Gen study id)."""
    parts = image_id.split("_")
    im = [p for p in parts if p.startswith("IM-")]
    return f"{parts[0]}_{'-'.join(im[0].split('-')[:2])}" if im else parts[0]


def iu_records(
    source: str | Path,
    images: str | Path | None = None,
    split_file: str | Path | None = None,
    *,
    clean: bool = True,
    label: bool = True,
    require_image: bool = False,
    per_image: bool = False,
) -> list[CXRRecord]:
    """``CXRRecord``s of the IU reports: one per report (its first image), or one per image.

    The XML does not say which image is frontal; the first is usually the PA view, and
    ``per_image=True`` yields every image (a token store of frontal images then picks). ``clean``
    maps ``XXXX`` to one placeholder (``clean_report_text``); ``label`` fills ``labels`` with the
    rule-based labeler (on the raw findings + impression) and ``extra["sides"]``; ``require_image``
    drops records whose image is not in ``images``. MeSH tags go to ``extra["mesh_major"]`` /
    ``extra["mesh_minor"]``, all image ids of the report to ``extra["image_ids"]``.
    """
    from llmcxr.reports.labeler import label_report
    from llmcxr.reports.sections import clean_report_text

    index = _image_index(Path(images)) if images is not None else {}
    split_of = read_r2gen_split(split_file) if split_file is not None else {}
    records = []
    for report in read_iu_reports(source):
        findings, impression = report.findings, report.impression
        if clean:
            findings, impression = clean_report_text(findings), clean_report_text(impression)
        labels: dict[str, int] = {}
        sides: dict[str, int] = {}
        if label:
            labeled = label_report(" ".join(p for p in (report.findings, report.impression) if p))
            labels = labeled.as_ints()
            sides = {name: int(side) for name, side in labeled.sides.items()}
        image_ids = report.image_ids or [report.uid]
        for k, image_id in enumerate(image_ids if per_image else image_ids[:1]):
            path = index.get(image_id) or index.get(f"{_study_id(image_id)}#{k}")
            if require_image and path is None:
                continue
            extra = {
                "mesh_major": report.mesh_major,
                "mesh_minor": report.mesh_minor,
                "image_ids": report.image_ids,
            }
            if label:
                extra["sides"] = dict(sides)
            records.append(
                CXRRecord(
                    image_id=image_id,
                    image_path=str(path) if path is not None else None,
                    study_id=_study_id(image_id),
                    patient_id=report.uid,
                    findings=findings,
                    impression=impression,
                    labels=dict(labels),
                    split=split_of.get(report.uid),
                    source="iu-xray",
                    extra=extra,
                )
            )
    return records
