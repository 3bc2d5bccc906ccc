"""Reports composed from templates for a drawn ``FindingSpec``, and specs sampled for template worlds.

Used where no real (IU X-ray) reports are available. Each positive finding has several phrasings;
negatives are mentioned the way radiologists write them ("No pneumothorax or pleural effusion.",
"The heart size is normal."), never for a finding that is drawn. Phrasings avoid words that the
CheXpert labeler would read as another observation (e.g. "opacity" only for Lung Opacity), so that
``label_report`` on the composed text gives back the drawn findings; ``build_world`` counts any
disagreement.
"""

from __future__ import annotations

import random

from llmcxr.findings import Side
from llmcxr.synth.findings import ZONES
from llmcxr.synth.render import FindingSpec, Lesion, Opacity

# --- positive phrasings ------------------------------------------------------------------------

_CARDIOMEGALY = (
    "The heart is enlarged.",
    "The cardiac silhouette is enlarged.",
    "There is cardiomegaly.",
    "Cardiomegaly is present.",
    "The heart size is enlarged.",
)
_MEDIASTINUM = (
    "The mediastinum is widened.",
    "There is a widened mediastinum.",
    "Mediastinal widening is noted.",
    "The superior mediastinum is widened.",
)
_EFFUSION = (
    "{Size} {side} pleural effusion.",
    "There is a {size} {side} pleural effusion.",
    "{Size} {side} pleural effusion with blunting of the costophrenic angle.",
    "A {size} {side} pleural effusion is present.",
)
_EFFUSION_BOTH = (
    "{Size} bilateral pleural effusions.",
    "There are {size} bilateral pleural effusions.",
    "Bilateral pleural effusions, {size}.",
)
_PNEUMOTHORAX = (
    "There is a {size} {side} pneumothorax.",
    "{Size} {side} pneumothorax with a visible pleural line.",
    "A {side} apical pneumothorax is present.",
    "{Side} pneumothorax is seen.",
)
_PNEUMOTHORAX_BOTH = ("Bilateral pneumothoraces.", "There are small bilateral pneumothoraces.")
_CONSOLIDATION = (
    "There is consolidation in the {side} {lobe}.",
    "{Side} {lobe} consolidation.",
    "Focal consolidation in the {side} {lobe}.",
    "Dense consolidation is present in the {side} {lobe}.",
)
_PNEUMONIA = (
    "{Side} {lobe} pneumonia.",
    "Findings are consistent with {side} {lobe} pneumonia.",
    "There is {side} {lobe} pneumonia.",
)
_OPACITY = (
    "Patchy opacity in the {side} {zone}.",
    "There is a hazy opacity in the {side} {zone}.",
    "Ill-defined {side} {zone} opacity.",
    "Increased opacity projects over the {side} {zone}.",
)
_EDEMA = (
    "There is pulmonary edema.",
    "Bilateral perihilar pulmonary edema.",
    "Interstitial pulmonary edema is present.",
    "The findings are consistent with pulmonary edema.",
)
_KERLEY = ("Kerley B lines are present at the bases.", "Septal Kerley lines are seen laterally.")
_NODULE = (
    "A {mm} mm nodule is seen in the {side} {zone}.",
    "There is a rounded nodule in the {side} {zone}.",
    "{Side} {zone} pulmonary nodule.",
)
_MASS = (
    "There is a {cm} cm mass in the {side} {zone}.",
    "{Side} {zone} lung mass.",
    "A lobulated mass is present in the {side} {zone}.",
)
_ATELECTASIS_PLATE = (
    "Plate-like atelectasis at the {side} base.",
    "{Side} basilar atelectasis.",
    "Linear atelectasis in the {side} lower lung.",
    "There is subsegmental atelectasis at the {side} lung base.",
)
_ATELECTASIS_BOTH = ("Bibasilar atelectasis.", "There is bibasilar plate-like atelectasis.")
_ATELECTASIS_LOBAR = (
    "{Side} lower lobe collapse with volume loss.",
    "{Side} lower lobe atelectasis with elevation of the {side} hemidiaphragm.",
    "There is {side} lower lobe collapse.",
)
_FRACTURE = (
    "There is a displaced fracture of the {side} {rib} rib.",
    "{Side} {rib} rib fracture with callus formation.",
    "Healing fracture of the {side} lateral {rib} rib.",
)
_PLEURAL_OTHER = (
    "{Side} pleural thickening.",
    "Pleural thickening along the {side} lateral chest wall.",
    "There is {side} apical and lateral pleural thickening.",
)
_DEVICES = {
    "et_tube": (
        "An endotracheal tube terminates {cm} cm above the carina.",
        "Endotracheal tube tip is {cm} cm above the carina.",
    ),
    "central_line": (
        "A right subclavian central venous catheter terminates in the superior vena cava.",
        "Central venous catheter with its tip in the SVC.",
    ),
    "ng_tube": (
        "A nasogastric tube courses below the diaphragm into the stomach.",
        "Enteric tube tip is in the stomach.",
    ),
    "pacemaker": (
        "A left-sided pacemaker with leads in the right atrium and right ventricle.",
        "Dual-chamber pacemaker in place.",
    ),
    "sternotomy": ("Median sternotomy wires are intact.", "Postsurgical sternotomy wires."),
}
# --- negatives ------------------------------------------------------------------------------------

_HEART_NORMAL = (
    "The heart size is normal.",
    "Heart size is within normal limits.",
    "Normal heart size.",
    "The cardiac silhouette is normal.",
)
_MEDIASTINUM_NORMAL = ("The mediastinal contours are normal.", "Mediastinal contours are unremarkable.")
_BOTH_NORMAL = ("The cardiomediastinal silhouette is normal.", "Normal cardiomediastinal silhouette.")
_LUNGS_CLEAR = (
    "The lungs are clear.",
    "Lungs are clear bilaterally.",
    "The lungs are well expanded and clear.",
)
_BONES = ("No acute osseous abnormality.", "The visualized osseous structures are unremarkable.", "")
_IMPRESSION_NORMAL = (
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No active disease.",
)

_SIDE_WORD = {Side.LEFT: "left", Side.RIGHT: "right", Side.BILATERAL: "bilateral"}
_ZONE_WORD = {"upper": "upper lung zone", "middle": "mid lung zone", "lower": "lower lung zone"}
_RIBS = ("fifth", "sixth", "seventh", "eighth", "ninth")


def _lobe(side: Side, zone: str) -> str:
    if zone == "middle":
        return "lingula" if side == Side.LEFT else "middle lobe"
    return f"{zone} lobe"


def _size_word(severity: float) -> str:
    return "small" if severity < 0.4 else "moderate" if severity < 0.8 else "large"


def _fill(rng: random.Random, phrasings: tuple[str, ...], **words: str) -> str:
    text = rng.choice(phrasings)
    words |= {k.capitalize(): v.capitalize() for k, v in words.items()}
    return text.format(**words)


def _lateral_sides(side: Side) -> list[Side]:
    return [Side.RIGHT, Side.LEFT] if side == Side.BILATERAL else [side]


def _positive_sentences(spec: FindingSpec, rng: random.Random) -> list[str]:
    size = _size_word(spec.severity)
    out: list[str] = []
    if spec.cardiomegaly:
        out.append(rng.choice(_CARDIOMEGALY))
    if spec.enlarged_mediastinum:
        out.append(rng.choice(_MEDIASTINUM))
    if spec.effusion is not None:
        pool = _EFFUSION_BOTH if spec.effusion == Side.BILATERAL else _EFFUSION
        out.append(_fill(rng, pool, size=size, side=_SIDE_WORD[spec.effusion]))
    if spec.pneumothorax is not None:
        if spec.pneumothorax == Side.BILATERAL:
            out.append(rng.choice(_PNEUMOTHORAX_BOTH))
        else:
            out.append(_fill(rng, _PNEUMOTHORAX, size=size, side=_SIDE_WORD[spec.pneumothorax]))
    for opacity in spec.opacities:
        for side in _lateral_sides(opacity.side):
            words = {
                "side": _SIDE_WORD[side],
                "lobe": _lobe(side, opacity.zone),
                "zone": _ZONE_WORD[opacity.zone],
            }
            pool = {"consolidation": _CONSOLIDATION, "pneumonia": _PNEUMONIA, "opacity": _OPACITY}[
                opacity.kind
            ]
            sentence = _fill(rng, pool, **words)
            if opacity.bronchograms and opacity.kind == "consolidation":
                sentence = sentence[:-1] + " with air bronchograms."
            out.append(sentence)
    if spec.edema:
        out.append(rng.choice(_EDEMA))
        if spec.kerley_lines:
            out.append(rng.choice(_KERLEY))
    for lesion in spec.lesions:
        words = {"side": _SIDE_WORD[lesion.side], "zone": _ZONE_WORD[lesion.zone]}
        if lesion.kind == "mass":
            out.append(_fill(rng, _MASS, cm=str(rng.randint(4, 7)), **words))
        else:
            out.append(_fill(rng, _NODULE, mm=str(rng.randint(12, 25)), **words))
    if spec.atelectasis is not None:
        if spec.atelectasis_kind == "lobar":
            for side in _lateral_sides(spec.atelectasis):
                out.append(_fill(rng, _ATELECTASIS_LOBAR, side=_SIDE_WORD[side]))
        elif spec.atelectasis == Side.BILATERAL:
            out.append(rng.choice(_ATELECTASIS_BOTH))
        else:
            out.append(_fill(rng, _ATELECTASIS_PLATE, side=_SIDE_WORD[spec.atelectasis]))
    for device in spec.devices:
        out.append(_fill(rng, _DEVICES[device], cm=str(rng.randint(3, 6))))
    if spec.fracture is not None:
        for side in _lateral_sides(spec.fracture):
            out.append(_fill(rng, _FRACTURE, side=_SIDE_WORD[side], rib=rng.choice(_RIBS)))
    if spec.pleural_thickening is not None:
        for side in _lateral_sides(spec.pleural_thickening):
            out.append(_fill(rng, _PLEURAL_OTHER, side=_SIDE_WORD[side]))
    return out


def _negative_sentences(spec: FindingSpec, rng: random.Random) -> list[str]:
    """What a radiologist states as absent: heart, mediastinum, lungs, pleura, bones."""
    out: list[str] = []
    if not spec.cardiomegaly and not spec.enlarged_mediastinum and rng.random() < 0.5:
        out.append(rng.choice(_BOTH_NORMAL))
    else:
        if not spec.cardiomegaly:
            out.append(rng.choice(_HEART_NORMAL))
        if not spec.enlarged_mediastinum and rng.random() < 0.6:
            out.append(rng.choice(_MEDIASTINUM_NORMAL))
    parenchyma = spec.opacities or spec.edema or spec.lesions or spec.atelectasis is not None
    if not parenchyma and spec.effusion is None and spec.pneumothorax is None:
        out.append(rng.choice(_LUNGS_CLEAR))
    elif not spec.opacities and rng.random() < 0.6:
        out.append("No focal consolidation.")
    pleura = []
    if spec.pneumothorax is None:
        pleura.append("pneumothorax")
    if spec.effusion is None:
        pleura.append("pleural effusion")
    if pleura:
        out.append(f"No {' or '.join(pleura)}.")
    if not spec.edema and rng.random() < 0.4:
        out.append("No pulmonary edema.")
    if spec.fracture is None:
        out.append(rng.choice(_BONES))
    return [s for s in out if s]


def compose_report(spec: FindingSpec, rng: random.Random) -> tuple[str, str]:
    """(findings, impression) text for ``spec``: positives first, then pertinent negatives."""
    positives = _positive_sentences(spec, rng)
    negatives = _negative_sentences(spec, rng)
    findings = " ".join(positives + negatives)
    if not positives:
        return findings, rng.choice(_IMPRESSION_NORMAL)
    # the impression repeats the main findings (at most three), as a radiologist summarises.
    impression = " ".join(positives[:3])
    return findings, impression


# --- sampling specs for template worlds ------------------------------------------------------------

# Rough prevalence of each drawable finding among abnormal IU X-ray studies (by eye from the MeSH
# tags): used when the world is not balanced.
PREVALENCE: dict[str, float] = {
    "Cardiomegaly": 0.16,
    "Lung Opacity": 0.12,
    "Atelectasis": 0.12,
    "Pleural Effusion": 0.09,
    "Support Devices": 0.08,
    "Lung Lesion": 0.08,
    "Edema": 0.05,
    "Consolidation": 0.05,
    "Pneumonia": 0.04,
    "Pneumothorax": 0.04,
    "Enlarged Cardiomediastinum": 0.05,
    "Fracture": 0.06,
    "Pleural Other": 0.06,
}
DRAWABLE: tuple[str, ...] = tuple(PREVALENCE)


def _side(rng: random.Random, bilateral: float = 0.0) -> Side:
    if rng.random() < bilateral:
        return Side.BILATERAL
    return Side.LEFT if rng.random() < 0.5 else Side.RIGHT


def add_finding(
    spec: FindingSpec, name: str, rng: random.Random, side: Side | None = None, zone: str | None = None
) -> None:
    """Put CheXpert observation ``name`` into ``spec`` (random side/zone/kind where not given)."""
    zone = zone or rng.choice(ZONES)
    if name == "Cardiomegaly":
        spec.cardiomegaly = True
    elif name == "Enlarged Cardiomediastinum":
        spec.enlarged_mediastinum = True
    elif name == "Pleural Effusion":
        spec.effusion = side or _side(rng, bilateral=0.3)
    elif name == "Pneumothorax":
        spec.pneumothorax = side or _side(rng)
    elif name in ("Consolidation", "Pneumonia", "Lung Opacity"):
        kind = {"Consolidation": "consolidation", "Pneumonia": "pneumonia", "Lung Opacity": "opacity"}[name]
        opacity_side = side or _side(rng)
        bronchograms = kind == "consolidation" and rng.random() < 0.4
        spec.opacities = (*spec.opacities, Opacity(opacity_side, zone, kind, bronchograms))
    elif name == "Edema":
        spec.edema = True
        spec.kerley_lines = rng.random() < 0.5
    elif name == "Lung Lesion":
        kind = "mass" if rng.random() < 0.35 else "nodule"
        lesion_sides = _lateral_sides(side or _side(rng))  # "bilateral nodules": one on each side
        spec.lesions = (*spec.lesions, *(Lesion(s, zone, kind) for s in lesion_sides))
    elif name == "Atelectasis":
        # lobar collapse is one-sided; bibasilar atelectasis is plate-like.
        lobar = side != Side.BILATERAL and rng.random() < 0.3
        spec.atelectasis_kind = "lobar" if lobar else "plate"
        spec.atelectasis = side or _side(rng, bilateral=0.0 if lobar else 0.3)
    elif name == "Support Devices":
        count = 1 if rng.random() < 0.7 else 2
        spec.devices = tuple(sorted(rng.sample(("et_tube", "central_line", "ng_tube", "pacemaker"), count)))
        if rng.random() < 0.2:
            spec.devices = (*spec.devices, "sternotomy")
    elif name == "Fracture":
        spec.fracture = side or _side(rng)
    elif name == "Pleural Other":
        spec.pleural_thickening = side or _side(rng)
    else:
        raise ValueError(f"cannot draw {name!r}; drawable: {DRAWABLE}")


def sample_spec(rng: random.Random, balance: bool) -> FindingSpec:
    """A random spec: mostly normal like real studies, or every finding equally often (``balance``)."""
    spec = FindingSpec(severity=rng.uniform(0.3, 1.0))
    normal_share = 1.0 / (len(DRAWABLE) + 1) if balance else 0.45
    if rng.random() < normal_share:
        return spec
    count = 1 if rng.random() < 0.65 else 2 if rng.random() < 0.75 else 3
    if balance:
        names = rng.sample(DRAWABLE, count)
    else:
        names = []
        while len(names) < count:
            name = rng.choices(DRAWABLE, weights=list(PREVALENCE.values()))[0]
            if name not in names:
                names.append(name)
    for name in names:
        add_finding(spec, name, rng)
    return spec
