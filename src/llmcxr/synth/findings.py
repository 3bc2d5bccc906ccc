"""Findings drawn into a ``Scene`` the way a radiologist sees them on a frontal chest film.

Each function edits the scene in place: ``scene.fill`` (the share of lung air that fluid or tissue
replaced: effusion, opacities, edema, collapse), ``scene.smooth`` (other broad densities) or
``scene.sharp`` (thin structures: lines, tubes, bone). A pneumothorax is drawn by the anatomy itself
(the aerated lung is retracted) plus its pleural line here. Geometric findings that move anatomy (an enlarged heart, a wide mediastinum, volume loss raising a
hemidiaphragm, a collapsed lung) are applied to the ``Anatomy`` before the scene is drawn, by the
``reshape_*`` functions here. Sizes were chosen so each finding stays visible at 64 px.

Appearances follow standard radiology teaching (e.g. Felson's "Principles of Chest Roentgenology"):
effusions are dependent with a meniscus climbing the lateral wall and blunt the costophrenic angle;
a pneumothorax shows a thin visceral pleural line with no lung markings beyond it; edema is a
bilateral perihilar ("bat-wing") haze with Kerley B lines at the lateral bases; plate-like
atelectasis is a thin horizontal band at the base; lobar collapse raises the hemidiaphragm.
"""

from __future__ import annotations

import math

import numpy as np

from llmcxr.findings import Side
from llmcxr.synth.anatomy import (
    Anatomy,
    Canvas,
    hemithorax,
    lung_mask,
    patches,
    ramp,
    rib_paths,
    side_sign,
    wall_half_width,
)
from llmcxr.synth.scene import SIDES, Scene

ZONES = ("upper", "middle", "lower")


def sides_of(side: Side) -> tuple[Side, ...]:
    return SIDES if side == Side.BILATERAL else (side,)


def zone_centre(anatomy: Anatomy, side: Side, zone: str) -> float:
    """Height of the middle of a lung zone: upper above the hilum, lower toward the base."""
    i = 0 if side == Side.RIGHT else 1
    top, hilum, base = anatomy.apex_y + 0.04, anatomy.hilum_y[i], anatomy.dome_y[i]
    return {"upper": (top + hilum) / 2 - 0.02, "middle": hilum + 0.02, "lower": (hilum + base) / 2 + 0.04}[
        zone
    ]


# ---------------------------------------------------------------------------------------------------
# Anatomy changes (before drawing).


def reshape_cardiomegaly(anatomy: Anatomy, severity: float) -> None:
    """Enlarge the heart so the cardiothoracic ratio reaches 0.54-0.70 (> 0.5 is cardiomegaly)."""
    target = 0.54 + 0.16 * severity
    scale = target / anatomy.cardiothoracic_ratio()
    a, b = anatomy.heart_axes
    hx, hy = anatomy.heart_centre
    old = anatomy.heart_extent()
    anatomy.heart_axes = (a * scale, b * (1.0 + 0.4 * (scale - 1.0)))
    # the heart grows mostly to the left (image right) and sits on the diaphragm.
    anatomy.heart_centre = (hx + 0.55 * (anatomy.heart_extent() - old), hy + 0.02 * (scale - 1.0))


def reshape_mediastinum(anatomy: Anatomy, severity: float) -> None:
    """Widen the upper mediastinum (> 8 cm on a PA film, about 0.25 of the image width)."""
    anatomy.mediastinum *= 1.8 + 0.5 * severity


def reshape_volume_loss(anatomy: Anatomy, side: Side, severity: float) -> None:
    """Lobar collapse pulls the hemidiaphragm up and the heart toward the collapsed side."""
    i = 0 if side == Side.RIGHT else 1
    lift = 0.05 + 0.04 * severity
    dome, cp = list(anatomy.dome_y), list(anatomy.cp_y)
    dome[i] -= lift
    cp[i] -= lift * 0.8
    anatomy.dome_y, anatomy.cp_y = (dome[0], dome[1]), (cp[0], cp[1])
    # the heart follows; the spine stays where it is.
    shift = side_sign(side) * 0.008 * (1 + severity)
    hx, hy = anatomy.heart_centre
    anatomy.heart_centre = (hx + shift, hy)


# ---------------------------------------------------------------------------------------------------
# Densities (after drawing the healthy chest).


def draw_effusion(scene: Scene, side: Side, severity: float) -> None:
    """Dependent fluid filling the base, its meniscus rising along the lateral wall."""
    anatomy, canvas = scene.anatomy, scene.canvas
    for s in sides_of(side):
        i = 0 if s == Side.RIGHT else 1
        # fluid level at the lateral wall, from a blunted angle (small) to mid-chest (large).
        level = anatomy.cp_y[i] - 0.1 - 0.3 * severity
        rows, cols = hemithorax(anatomy, canvas, s)
        rows = slice(max(rows.start, canvas.rows(level - 0.03, level).start), rows.stop)
        X, Y = canvas.X[rows, cols], canvas.Y[rows]
        outward = side_sign(s) * (X - anatomy.midline)
        wall = wall_half_width(anatomy, Y)
        meniscus = level + 0.14 * (1.0 - np.clip(outward / wall, 0.0, 1.0)) ** 1.5
        fluid = ramp(Y - meniscus, 0.03) * ramp(wall + 0.01 - outward, scene.edge * 3) * ramp(outward, 0.02)
        fluid *= scene.lungs[s][rows, cols]
        scene.fill[rows, cols] += fluid
        scene.smooth[rows, cols] += 0.05 * fluid  # fluid layers deeper than the lung


def draw_pneumothorax(scene: Scene, side: Side) -> None:
    """The visceral pleural line along the collapsed lung's edge (markings already stop there)."""
    for s in sides_of(side):
        retract = scene.retract.get(s, 0.0) + 0.011
        inner = lung_mask(scene.anatomy, scene.canvas, scene.diaphragm, s, scene.edge, retract)
        line = np.clip(scene.aerated[s] - inner, 0.0, 1.0)
        scene.sharp += 0.2 * line


def draw_opacity(
    scene: Scene,
    rng: np.random.Generator,
    side: Side,
    zone: str,
    severity: float,
    dense: bool,
    bronchograms: bool,
) -> None:
    """Airspace opacity in one zone: dense and confluent (consolidation) or hazy (ground glass)."""
    anatomy, canvas = scene.anatomy, scene.canvas
    for s in sides_of(side):
        cy = zone_centre(anatomy, s, zone)
        wall = float(wall_half_width(anatomy, np.array([cy]))[0])
        cx = anatomy.midline + side_sign(s) * (
            anatomy.mediastinum + 0.05 + rng.uniform(0.25, 0.55) * wall * 0.7
        )
        rx, ry = rng.uniform(0.09, 0.13), rng.uniform(0.06, 0.09)
        r = np.sqrt(((canvas.X - cx) / rx) ** 2 + ((canvas.Y - cy) / ry) ** 2)
        blob = ramp(1.0 - r, 0.6) * (0.55 + 0.45 * patches(canvas, rng))
        amount = (0.95 if dense else 0.6) * (0.7 + 0.3 * severity)
        opacity = np.clip(blob * 1.3, 0.0, 1.0) * scene.lungs[s] * amount
        scene.fill += opacity
        if bronchograms and dense:
            image, draw = canvas.layer()
            start = np.array([cx - side_sign(s) * rx * 0.7, cy])
            for angle in rng.uniform(-0.6, 0.6, 3):
                mid = start + np.array([side_sign(s) * math.cos(angle), math.sin(angle)]) * rx * 0.7
                end = mid + np.array([side_sign(s) * math.cos(angle * 1.5), math.sin(angle * 1.5)]) * rx * 0.5
                canvas.polyline(draw, np.stack([start, mid, end]), 0.01)
            # bronchi keep their air inside the consolidated lung.
            scene.sharp -= Canvas.pixels(image) * opacity * scene.air[s] * 0.6


def draw_edema(scene: Scene, rng: np.random.Generator, severity: float, kerley: bool) -> None:
    """Bilateral perihilar haze fading to the periphery, with Kerley B lines at the lateral bases."""
    anatomy, canvas = scene.anatomy, scene.canvas
    texture = 0.7 + 0.3 * patches(canvas, rng, cells=16)
    for s in SIDES:
        i = 0 if s == Side.RIGHT else 1
        hx = anatomy.midline + side_sign(s) * (anatomy.mediastinum + 0.05)
        r2 = ((canvas.X - hx) / 0.2) ** 2 + ((canvas.Y - anatomy.hilum_y[i] - 0.04) / 0.2) ** 2
        haze = np.exp(-r2) * texture * scene.lungs[s]
        scene.fill += (0.5 + 0.3 * severity) * haze
    if kerley:
        image, draw = canvas.layer()
        for s in SIDES:
            i = 0 if s == Side.RIGHT else 1
            for k in range(5):
                y = anatomy.cp_y[i] - 0.05 - 0.022 * k
                wall = float(wall_half_width(anatomy, np.array([y]))[0])
                x0 = anatomy.midline + side_sign(s) * wall
                seg = np.array([[x0, y], [x0 - side_sign(s) * 0.05, y]])
                canvas.polyline(draw, seg, 0.007)
        for s in SIDES:
            scene.sharp += Canvas.pixels(image) * scene.lungs[s] * 0.14


def draw_lesion(scene: Scene, rng: np.random.Generator, side: Side, zone: str, mass: bool) -> None:
    """A round soft-tissue nodule (< 3 cm) or a larger lobulated mass (one per side if bilateral).

    Computed in a window around the lesion only.
    """
    anatomy, canvas = scene.anatomy, scene.canvas
    for s in sides_of(side):
        cy = zone_centre(anatomy, s, zone) + rng.uniform(-0.03, 0.03)
        wall = float(wall_half_width(anatomy, np.array([cy]))[0])
        radius = rng.uniform(0.05, 0.075) if mass else rng.uniform(0.026, 0.034)
        low, high = anatomy.mediastinum + 0.04 + radius, wall - radius - 0.01
        cx = anatomy.midline + side_sign(s) * rng.uniform(low, max(low, high))
        reach = radius * 1.2 + 3 * scene.edge
        rows, cols = canvas.rows(cy - reach, cy + reach), canvas.columns(cx - reach, cx + reach)
        dx, dy = canvas.X[rows, cols] - cx, canvas.Y[rows] - cy
        lobes = 1.0 + (0.12 * np.sin(3 * np.arctan2(dy, dx) + rng.uniform(0, 6.3)) if mass else 0.0)
        r = np.sqrt(dx * dx + dy * dy)
        scene.smooth[rows, cols] += (0.5 if mass else 0.45) * ramp(radius * lobes - r, scene.edge * 2.5)


def draw_atelectasis(scene: Scene, rng: np.random.Generator, side: Side, lobar: bool) -> None:
    """Plate-like bands at the base, or a lower-lobe collapse: a dense triangle by the spine."""
    anatomy, canvas = scene.anatomy, scene.canvas
    for s in sides_of(side):
        i = 0 if s == Side.RIGHT else 1
        if lobar:
            outward = side_sign(s) * (canvas.X - anatomy.midline)
            top = anatomy.hilum_y[i] + 0.02
            # a triangle hugging the mediastinum, widening toward the diaphragm.
            width = anatomy.mediastinum + 0.02 + 0.5 * np.clip(canvas.Y - top, 0.0, None)
            tri = ramp(width - outward, 0.01) * ramp(canvas.Y - top, 0.01)
            scene.fill += tri * scene.lungs[s]
            scene.smooth += 0.2 * tri * scene.lungs[s]  # denser than aerated lung behind the heart
            continue
        image, draw = canvas.layer()
        for k in range(int(rng.integers(1, 3))):
            y = anatomy.dome_y[i] - 0.05 - 0.05 * k + rng.uniform(-0.01, 0.01)
            wall = float(wall_half_width(anatomy, np.array([y]))[0])
            low = anatomy.mediastinum + 0.04
            x0 = anatomy.midline + side_sign(s) * rng.uniform(low, max(low + 0.01, 0.35 * wall + 0.06))
            x1 = x0 + side_sign(s) * rng.uniform(0.13, 0.18)
            tilt = rng.uniform(-0.02, 0.02)
            canvas.polyline(
                draw, np.array([[x0, y], [(x0 + x1) / 2, y + tilt + 0.006], [x1, y + tilt]]), 0.016
            )
        scene.sharp += Canvas.pixels(image) * scene.lungs[s] * 0.3


def draw_pleural_thickening(scene: Scene, side: Side) -> None:
    """Pleural Other: a smooth soft-tissue band along the lateral chest wall and an apical cap."""
    anatomy, canvas = scene.anatomy, scene.canvas
    for s in sides_of(side):
        outward = side_sign(s) * (canvas.X - anatomy.midline)
        band = ramp(outward - (wall_half_width(anatomy, canvas.Y) - 0.045), scene.edge * 2)
        cap = ramp(anatomy.apex_y + 0.06 - canvas.Y, scene.edge * 3)
        extent = ramp(anatomy.dome_y[0] - 0.1 - canvas.Y, 0.1)
        scene.fill += 0.9 * np.maximum(band * extent, cap) * scene.lungs[s]


def draw_fracture(scene: Scene, rng: np.random.Generator, side: Side) -> None:
    """A displaced rib fracture: a gap with a step in one lateral rib and a fusiform callus."""
    anatomy, canvas = scene.anatomy, scene.canvas
    for s in sides_of(side):
        index = int(rng.integers(4, 8))
        posterior = rib_paths(anatomy, s, points=28)[0][index]
        cut = int(rng.integers(16, 21))
        x, y = posterior[cut]
        # erase the rib across the gap, then redraw the lateral fragment shifted down.
        gap = np.sqrt((canvas.X - x) ** 2 + (canvas.Y - y) ** 2)
        scene.sharp -= 0.1 * anatomy.bone * ramp(0.025 - gap, scene.edge)
        image, draw = canvas.layer()
        canvas.polyline(draw, posterior[cut + 3 :] + np.array([0.0, 0.02]), 0.028)
        callus, draw_callus = canvas.layer()
        canvas.polyline(draw_callus, posterior[cut - 3 : cut + 4] + np.array([0.0, 0.008]), 0.045)
        scene.sharp += Canvas.pixels(image) * 0.08 * anatomy.bone + Canvas.pixels(callus) * 0.28


# ---------------------------------------------------------------------------------------------------
# Support devices: radio-opaque, so they are drawn bright and sharp.

DEVICES = ("et_tube", "central_line", "ng_tube", "pacemaker", "sternotomy")


def draw_device(scene: Scene, rng: np.random.Generator, device: str) -> None:
    anatomy, canvas = scene.anatomy, scene.canvas
    m, carina = anatomy.midline, anatomy.carina_y
    image, draw = canvas.layer()
    if device == "et_tube":
        # tip 3-7 cm above the carina (about 0.1-0.2 of the chest height on a PA film).
        tip = carina - rng.uniform(0.06, 0.12)
        canvas.polyline(draw, np.array([[m + 0.005, -0.05], [m + 0.003, tip]]), 0.014)
    elif device == "central_line":
        s = side_sign(Side.RIGHT if rng.random() < 0.7 else Side.LEFT)
        start = np.array([m + s * 0.28, anatomy.apex_y + 0.06])
        svc = np.array([m - 0.05, carina + rng.uniform(0.04, 0.1)])
        t = np.linspace(0.0, 1.0, 12)[:, None]
        bend = np.array([m + s * 0.06, anatomy.apex_y + 0.12])
        path = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * svc
        canvas.polyline(draw, path, 0.009)
    elif device == "ng_tube":
        stomach = np.array([m + 0.16, anatomy.dome_y[1] + 0.1])
        path = np.array(
            [
                [m + 0.01, -0.05],
                [m + 0.012, carina],
                [m + 0.02, anatomy.dome_y[1]],
                [m + 0.09, stomach[1] + 0.02],
                stomach,
            ]
        )
        canvas.polyline(draw, path, 0.009)
    elif device == "pacemaker":
        gen = (m + 0.24, anatomy.apex_y + 0.12)
        x, y = canvas.pose.to_pixels(np.array(gen), canvas.size).tolist()
        w = 0.05 * canvas.size * canvas.pose.zoom
        draw.rounded_rectangle((x - w, y - 0.7 * w, x + w, y + 0.7 * w), radius=w * 0.4, fill=255)
        ra = np.array([m - 0.05, anatomy.heart_centre[1] - 0.06])
        rv = np.array([anatomy.heart_centre[0] + 0.04, anatomy.heart_centre[1] + 0.04])
        for tip in (ra, rv):
            path = np.array([gen, [m + 0.1, anatomy.apex_y + 0.09], [m - 0.03, carina + 0.04], tip])
            canvas.polyline(draw, path, 0.008)
    elif device == "sternotomy":
        for k in range(5):
            y = carina - 0.06 + k * 0.055
            canvas.ellipse(draw, (m + 0.004 * k, y), 0.011)
    else:
        raise ValueError(f"unknown device {device!r}; known: {DEVICES}")
    scene.sharp += Canvas.pixels(image) * 0.9
