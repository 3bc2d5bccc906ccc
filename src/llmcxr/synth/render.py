"""Render a frontal chest radiograph-like image from a set of findings: ``render_cxr(spec, size, seed)``.

The same seed always gives the same patient, pose, exposure and noise; the findings are drawn with
their own random stream, so a chest rendered with and without a finding differs only by that
finding (the tests rely on this). Images smaller than 128 px are drawn at twice the size and
box-downsampled, which antialiases thin lines (pleural line, tubes) instead of dropping them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from llmcxr.errors import BadInputError
from llmcxr.findings import Side
from llmcxr.synth import findings as draw
from llmcxr.synth.anatomy import Anatomy, Canvas, Pose, sample_anatomy, sample_pose
from llmcxr.synth.scene import draw_anatomy

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class Opacity:
    """Airspace opacity in one lung zone."""

    side: Side
    zone: str = "lower"  # "upper" | "middle" | "lower"
    kind: str = "consolidation"  # "consolidation" | "pneumonia" (both dense) | "opacity" (hazy)
    bronchograms: bool = False  # dark air-filled bronchi inside a dense consolidation


@dataclass(frozen=True)
class Lesion:
    """A lung nodule (< 3 cm) or mass."""

    side: Side
    zone: str = "upper"
    kind: str = "nodule"  # "nodule" | "mass"


@dataclass
class FindingSpec:
    """What to draw. The default is a normal chest. Sides are the patient's (``llmcxr.findings.Side``)."""

    cardiomegaly: bool = False
    enlarged_mediastinum: bool = False
    effusion: Side | None = None
    pneumothorax: Side | None = None
    opacities: tuple[Opacity, ...] = ()
    edema: bool = False
    kerley_lines: bool = False  # with edema: septal lines at the lateral bases
    lesions: tuple[Lesion, ...] = ()
    atelectasis: Side | None = None
    atelectasis_kind: str = "plate"  # "plate" (plate-like bands) | "lobar" (lower-lobe collapse)
    devices: tuple[str, ...] = ()  # from ``findings.DEVICES``
    fracture: Side | None = None  # a displaced rib fracture
    pleural_thickening: Side | None = None  # CheXpert "Pleural Other"
    severity: float = 0.6  # 0..1: how pronounced the findings are (effusion height, CTR, ...)

    def positives(self) -> dict[str, Side | None]:
        """The CheXpert-14 observations this spec draws, with their side where one applies."""
        found: dict[str, Side | None] = {}
        if self.cardiomegaly:
            found["Cardiomegaly"] = None
        if self.enlarged_mediastinum:
            found["Enlarged Cardiomediastinum"] = None
        if self.effusion is not None:
            found["Pleural Effusion"] = self.effusion
        if self.pneumothorax is not None:
            found["Pneumothorax"] = self.pneumothorax
        names = {"consolidation": "Consolidation", "pneumonia": "Pneumonia", "opacity": "Lung Opacity"}
        for opacity in self.opacities:
            name = names[opacity.kind]
            found[name] = _merge_sides(found.get(name), opacity.side, name in found)
        if self.edema:
            found["Edema"] = None
        for lesion in self.lesions:
            found["Lung Lesion"] = _merge_sides(found.get("Lung Lesion"), lesion.side, "Lung Lesion" in found)
        if self.atelectasis is not None:
            found["Atelectasis"] = self.atelectasis
        if self.devices:
            found["Support Devices"] = None
        if self.fracture is not None:
            found["Fracture"] = self.fracture
        if self.pleural_thickening is not None:
            found["Pleural Other"] = self.pleural_thickening
        return found

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: sides as their names ("LEFT"), nested findings as dicts."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Side):
                value = value.name
            elif isinstance(value, tuple) and value and isinstance(value[0], (Opacity, Lesion)):
                value = [
                    {k: (v.name if isinstance(v, Side) else v) for k, v in item.__dict__.items()}
                    for item in value
                ]
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FindingSpec:
        def side(v: Any) -> Side | None:
            return None if v is None else Side[v] if isinstance(v, str) else Side(v)

        kw = dict(values)
        for key in ("effusion", "pneumothorax", "atelectasis", "fracture", "pleural_thickening"):
            kw[key] = side(kw.get(key))
        kw["opacities"] = tuple(Opacity(**{**o, "side": side(o["side"])}) for o in kw.get("opacities", ()))
        kw["lesions"] = tuple(Lesion(**{**o, "side": side(o["side"])}) for o in kw.get("lesions", ()))
        kw["devices"] = tuple(kw.get("devices", ()))
        return cls(**kw)


def _merge_sides(old: Side | None, new: Side, seen: bool) -> Side:
    return new if not seen or old == new else Side.BILATERAL


@dataclass
class Rendering:
    """A rendered chest: ``pixels`` uint8 (size, size) and measurements of what was drawn."""

    pixels: np.ndarray
    cardiothoracic_ratio: float
    drawn: dict[str, Side | None] = field(default_factory=dict)


def _exposure(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Film response: transmitted X-rays fall as ``exp(-gain * density)``; the image shows attenuation."""
    gain = rng.uniform(1.2, 1.5)
    image = 1.0 - np.exp(-gain * np.maximum(density, 0.0))
    low, high = rng.uniform(0.04, 0.12), rng.uniform(0.88, 0.98)
    image = np.clip((image - low) * (1.0 / (high - low)), 0.0, 1.0)
    return image ** rng.uniform(0.9, 1.25)


def _patient(
    spec: FindingSpec, seed: int
) -> tuple[Anatomy, Pose, dict[Side, float], list[np.random.Generator]]:
    """The patient for ``seed`` with ``spec``'s anatomical changes applied, and the random streams."""
    anatomy_seed, finding_seed, film_seed = np.random.SeedSequence(seed).spawn(3)
    rng = np.random.default_rng(anatomy_seed)
    anatomy = sample_anatomy(rng)
    pose = sample_pose(rng)
    severity = float(np.clip(spec.severity, 0.0, 1.0))
    if spec.cardiomegaly:
        draw.reshape_cardiomegaly(anatomy, severity)
    if spec.enlarged_mediastinum:
        draw.reshape_mediastinum(anatomy, severity)
    if spec.atelectasis is not None and spec.atelectasis_kind == "lobar":
        for side in draw.sides_of(spec.atelectasis):
            draw.reshape_volume_loss(anatomy, side, severity)
    retract: dict[Side, float] = {}
    if spec.pneumothorax is not None:
        for side in draw.sides_of(spec.pneumothorax):
            retract[side] = 0.06 + 0.07 * severity
    streams = [rng, np.random.default_rng(finding_seed), np.random.default_rng(film_seed)]
    return anatomy, pose, retract, streams


def cardiothoracic_ratio(spec: FindingSpec, seed: int) -> float:
    """The CTR that ``render_cxr(spec, size, seed)`` draws, without drawing it."""
    return round(_patient(spec, seed)[0].cardiothoracic_ratio(), 3)


def render_study(spec: FindingSpec, size: int, seed: int) -> Rendering:
    """Draw one chest radiograph of ``size`` x ``size`` pixels with the findings in ``spec``."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise BadInputError(
            None, f"image size {size} is outside {MIN_SIZE}..{MAX_SIZE}", "pick e.g. 64 or 256"
        )
    anatomy, pose, retract, (rng, finding_rng, film_rng) = _patient(spec, seed)
    severity = float(np.clip(spec.severity, 0.0, 1.0))

    work = size * 2 if size < 128 else size
    canvas = Canvas(work, pose)
    scene = draw_anatomy(anatomy, canvas, rng, retract)

    if spec.effusion is not None:
        draw.draw_effusion(scene, spec.effusion, severity)
    if spec.pneumothorax is not None:
        draw.draw_pneumothorax(scene, spec.pneumothorax)
    for opacity in spec.opacities:
        dense = opacity.kind != "opacity"
        draw.draw_opacity(
            scene, finding_rng, opacity.side, opacity.zone, severity, dense, opacity.bronchograms
        )
    if spec.edema:
        draw.draw_edema(scene, finding_rng, severity, spec.kerley_lines)
    for lesion in spec.lesions:
        draw.draw_lesion(scene, finding_rng, lesion.side, lesion.zone, lesion.kind == "mass")
    if spec.atelectasis is not None:
        draw.draw_atelectasis(scene, finding_rng, spec.atelectasis, spec.atelectasis_kind == "lobar")
    if spec.pleural_thickening is not None:
        draw.draw_pleural_thickening(scene, spec.pleural_thickening)
    if spec.fracture is not None:
        draw.draw_fracture(scene, finding_rng, spec.fracture)
    for device in spec.devices:
        draw.draw_device(scene, finding_rng, device)
    scene.replace_air()

    # the focal spot and screen blur everything a little (this also antialiases the PIL strokes).
    px = work / 256.0
    image = _exposure(scene.smooth + scene.sharp, film_rng)
    image = ndimage.gaussian_filter(image, film_rng.uniform(0.5, 0.9) * px, truncate=3.0)
    image += film_rng.standard_normal(image.shape, dtype=np.float32) * film_rng.uniform(0.006, 0.02)
    if work != size:
        image = image.reshape(size, 2, size, 2).mean(axis=(1, 3))
    pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Rendering(pixels, round(anatomy.cardiothoracic_ratio(), 3), spec.positives())


def render_cxr(spec: FindingSpec, size: int, seed: int) -> np.ndarray:
    """uint8 (size, size) frontal chest radiograph with ``spec``'s findings; same seed, same bytes."""
    return render_study(spec, size, seed).pixels
