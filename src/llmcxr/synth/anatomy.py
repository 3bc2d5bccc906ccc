"""Patient geometry for the synthetic chest radiograph: sampled from a seed, drawn as X-ray density.

Coordinates are normalised: ``x`` runs 0..1 from the image's left to its right, ``y`` 0..1 from top to
bottom. Radiological convention: the patient faces the viewer, so the patient's RIGHT side is on the
image's LEFT (x < midline) and the heart bulges to the image's right. ``side_sign(Side.RIGHT) == -1``.

The image is a density map ``D`` (higher = more attenuation = brighter) that ``render.py`` tone-maps
as an exposure ``1 - exp(-gain * D)``. Big smooth structures (body, lungs, heart, mediastinum,
diaphragm, spine) are implicit functions of the pixel grid with linear edge ramps, so they are
antialiased at any resolution for a handful of numpy operations each. Thin structures (ribs,
clavicles, vessels, tubes) are drawn as polylines with PIL, which is a fast C rasteriser.

Typical proportions follow standard PA chest radiograph anatomy: cardiothoracic ratio 0.41-0.48 in
health (Danzer's ratio, normal < 0.5), right hemidiaphragm 1.5-2.5 cm above the left, carina at
T4-T5, ten posterior ribs above the diaphragm on a good inspiration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from llmcxr.findings import Side


def side_sign(side: Side) -> int:
    """-1 for the patient's right (image left), +1 for the patient's left (image right)."""
    return -1 if side == Side.RIGHT else 1


def ramp(distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance (positive inside): a linear ramp ``edge`` wide."""
    out = distance * np.float32(1.0 / edge)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass
class Pose:
    """Where the patient stands in the image: midline shift, tilt and zoom (positioning varies)."""

    shift_x: float
    shift_y: float
    tilt: float  # small lean of the patient on the detector, applied as a horizontal shear
    zoom: float  # > 1 = patient larger in the field of view

    def to_pixels(self, points: np.ndarray, size: int) -> np.ndarray:
        """Anatomy coordinates (..., 2) -> pixel coordinates (..., 2) (inverse of ``Canvas``)."""
        gy = (points[..., 1] - 0.5) * self.zoom + 0.5 + self.shift_y
        gx = (points[..., 0] - 0.5) * self.zoom + 0.5 + self.shift_x + self.tilt * (gy - 0.5)
        return np.stack([gx, gy], axis=-1) * size


class Canvas:
    """The pixel grid in anatomy coordinates plus PIL layers for thin structures.

    ``X``: (size, size) and ``Y``: (size, 1) float32 anatomy coordinates of each pixel centre. The
    patient's lean is a shear rather than a rotation, so ``Y`` depends on the row only and every
    function of height alone (rib cage width, mediastinum, spine) costs one column, not a full image.
    """

    def __init__(self, size: int, pose: Pose) -> None:
        self.size = size
        self.pose = pose
        self.pixel = 1.0 / size  # one pixel in normalised units
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        inv = 1.0 / pose.zoom
        self.Y = ((grid[:, None] - pose.shift_y) * inv + 0.5).astype(np.float32)
        self.X = ((grid[None, :] - pose.shift_x - pose.tilt * grid[:, None]) * inv + 0.5).astype(np.float32)

    def columns(self, low: float, high: float) -> slice:
        """The pixel columns where x may lie in [low, high] on some row (for narrow structures)."""
        first, last = self.X[0], self.X[-1]
        start = min(np.searchsorted(first, low), np.searchsorted(last, low))
        stop = max(np.searchsorted(first, high), np.searchsorted(last, high))
        return slice(int(max(start - 1, 0)), int(min(stop + 1, self.size)))

    def rows(self, low: float, high: float) -> slice:
        """The pixel rows whose y lies in [low, high]."""
        column = self.Y[:, 0]
        return slice(int(np.searchsorted(column, low)), int(np.searchsorted(column, high)) + 1)

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """An 8-bit layer: draw with fill 0..255, read back with ``pixels`` as 0..1."""
        image = Image.new("L", (self.size, self.size), 0)
        return image, ImageDraw.Draw(image)

    def float_layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """A float32 layer: draw densities directly as fill values, read back with ``values``."""
        image = Image.new("F", (self.size, self.size), 0.0)
        return image, ImageDraw.Draw(image)

    def width(self, normalised: float) -> int:
        """A stroke width in pixels, never below one pixel so thin things survive at 64 px."""
        return max(1, round(normalised * self.size * self.pose.zoom))

    def polyline(
        self, draw: ImageDraw.ImageDraw, points: np.ndarray, width: float, fill: float = 255
    ) -> None:
        draw.line(self.pose.to_pixels(points, self.size).ravel().tolist(), fill=fill, width=self.width(width))

    def polylines(
        self, draw: ImageDraw.ImageDraw, lines: np.ndarray, widths: list[float], fill: float = 255
    ) -> None:
        """Several polylines (count, points, 2) at once (one coordinate transform for all).

        PIL takes a flat [x0, y0, x1, y1, ...] list, the cheapest form to build from numpy.
        """
        flat = self.pose.to_pixels(lines, self.size).reshape(len(lines), -1).tolist()
        for line, width in zip(flat, widths, strict=True):
            draw.line(line, fill=fill, width=self.width(width))

    def ellipse(
        self, draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, fill: float = 255
    ) -> None:
        x, y = self.pose.to_pixels(np.array(centre), self.size).tolist()
        r = radius * self.size * self.pose.zoom
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)

    @staticmethod
    def values(image: Image.Image) -> np.ndarray:
        """A PIL "F" layer as float32 (size, size)."""
        return np.asarray(image, dtype=np.float32)

    @staticmethod
    def pixels(image: Image.Image) -> np.ndarray:
        """A PIL "L" layer as float32 (size, size) in [0, 1]."""
        return np.asarray(image, dtype=np.float32) * (1.0 / 255.0)


@dataclass
class Anatomy:
    """One patient's chest, all lengths normalised to the image width. Findings may edit it."""

    midline: float  # x of the spine
    apex_y: float  # top of the lung apices
    half_width: float  # inner half-width of the rib cage at its widest
    margin: float  # soft tissue outside the ribs
    cp_y: tuple[float, float]  # costophrenic angle height (patient right, left)
    dome_y: tuple[float, float]  # hemidiaphragm dome peak height (right, left); right is higher
    mediastinum: float  # half-width of the upper mediastinum
    heart_centre: tuple[float, float]
    heart_axes: tuple[float, float]  # semi-axes (long, short) of the heart ellipse
    heart_angle: float  # radians; long axis from the right border down to the apex (image right)
    hilum_y: tuple[float, float]  # the left hilum sits higher than the right
    carina_y: float
    rib_top: float  # y of the first posterior rib at the spine
    rib_gap: float  # spacing of posterior ribs at the spine
    rib_count: int
    lung_air: float  # how dark the lungs are (inspiration depth, habitus)
    soft_tissue: float  # body density (habitus)
    breasts: float  # 0 = none, else density of breast shadows over the bases
    bone: float  # bone density (age)
    gastric_bubble: float  # 0 = none, else radius

    def heart_extent(self) -> float:
        """Horizontal half-extent of the heart shadow (rotated ellipse)."""
        a, b = self.heart_axes
        c, s = math.cos(self.heart_angle), math.sin(self.heart_angle)
        return math.sqrt((a * c) ** 2 + (b * s) ** 2)

    def cardiothoracic_ratio(self) -> float:
        """Widest heart diameter over widest inner thoracic diameter (Danzer 1919)."""
        return self.heart_extent() / self.half_width


def sample_pose(rng: np.random.Generator) -> Pose:
    return Pose(
        shift_x=float(rng.uniform(-0.025, 0.025)),
        shift_y=float(rng.uniform(-0.03, 0.03)),
        tilt=float(rng.uniform(-0.045, 0.045)),
        zoom=float(rng.uniform(0.93, 1.06)),
    )


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random healthy chest. Ranges chosen by eye against real PA radiographs."""
    half_width = float(rng.uniform(0.33, 0.38))
    mid = float(0.5 + rng.uniform(-0.01, 0.01))
    dome_r = float(rng.uniform(0.66, 0.72))
    dome_l = dome_r + float(rng.uniform(0.015, 0.04))
    ctr = float(rng.uniform(0.41, 0.48))
    short_axis = float(rng.uniform(0.115, 0.135))
    angle = float(rng.uniform(0.25, 0.4))
    # choose the long axis so that the heart's horizontal extent gives the sampled CTR.
    extent = ctr * half_width
    c, s = math.cos(angle), math.sin(angle)
    long_axis = math.sqrt(max(extent**2 - (short_axis * s) ** 2, 0.0)) / c
    # about a third of the heart lies right of the midline (image left).
    heart_x = mid + extent - float(rng.uniform(0.08, 0.11))
    hilum_r = float(rng.uniform(0.42, 0.47))
    return Anatomy(
        midline=mid,
        apex_y=float(rng.uniform(0.07, 0.11)),
        half_width=half_width,
        margin=float(rng.uniform(0.05, 0.14)),
        cp_y=(dome_r + float(rng.uniform(0.09, 0.13)), dome_l + float(rng.uniform(0.08, 0.12))),
        dome_y=(dome_r, dome_l),
        mediastinum=float(rng.uniform(0.055, 0.07)),
        heart_centre=(heart_x, dome_l - float(rng.uniform(0.065, 0.09))),
        heart_axes=(long_axis, short_axis),
        heart_angle=angle,
        hilum_y=(hilum_r, hilum_r - float(rng.uniform(0.01, 0.03))),
        carina_y=float(rng.uniform(0.28, 0.33)),
        rib_top=float(rng.uniform(0.09, 0.115)),
        rib_gap=float(rng.uniform(0.054, 0.062)),
        rib_count=10,
        lung_air=float(rng.uniform(0.5, 0.6)),
        soft_tissue=float(rng.uniform(0.85, 1.05)),
        breasts=float(rng.uniform(0.04, 0.1)) if rng.random() < 0.35 else 0.0,
        bone=float(rng.uniform(0.8, 1.15)),
        gastric_bubble=float(rng.uniform(0.025, 0.045)) if rng.random() < 0.6 else 0.0,
    )


def patches(canvas: Canvas, rng: np.random.Generator, cells: int = 10) -> np.ndarray:
    """Smooth random blotches (size, size) in [0, 1]: bilinear upsampling of a coarse noise grid."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray(coarse, mode="F").resize((canvas.size, canvas.size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# Implicit shapes. Each takes the canvas grids and returns a (size, size) float32 mask in [0, 1].


def wall_half_width(anatomy: Anatomy, y: np.ndarray) -> np.ndarray:
    """Inner half-width of the rib cage at height ``y``: narrow at the apices, widest at the bases."""
    t = np.maximum(y - anatomy.apex_y, 0.0)
    return anatomy.half_width * (1.0 - 0.55 * np.exp(-t * (1.0 / 0.16)))


def diaphragm_height(anatomy: Anatomy, canvas: Canvas) -> np.ndarray:
    """Height of the hemidiaphragm under each pixel (the right one left of the midline in the image):
    a parabola from each dome down to its costophrenic angle, gentler toward the heart."""
    left = canvas.X > anatomy.midline
    outward = np.abs(canvas.X - anatomy.midline)
    peak_at = 0.45 * anatomy.half_width
    slopes = [
        (cp - dome) / (anatomy.half_width - peak_at) ** 2
        for cp, dome in zip(anatomy.cp_y, anatomy.dome_y, strict=True)
    ]
    d = outward - peak_at
    slope = np.where(left, np.float32(slopes[1]), np.float32(slopes[0]))
    slope *= np.where(d > 0, np.float32(1.0), np.float32(0.8))  # medial slope to the cardiophrenic angle
    dome = np.where(left, np.float32(anatomy.dome_y[1]), np.float32(anatomy.dome_y[0]))
    return dome + slope * d * d


def mediastinal_border(anatomy: Anatomy, y: np.ndarray, side: Side) -> np.ndarray:
    """Half-width of the mediastinum at height ``y`` on one side (the aortic knob bulges left)."""
    border = np.full_like(y, anatomy.mediastinum)
    if side == Side.LEFT:
        border = border + 0.03 * np.exp(-(((y - (anatomy.carina_y - 0.03)) / 0.035) ** 2))
    return border


def heart_mask(anatomy: Anatomy, canvas: Canvas, edge: float) -> np.ndarray:
    """The cardiac silhouette: an ellipse for the ventricles joined to the mediastinum above.

    Computed inside the heart's bounding box only (it covers a sixth of the image).
    """
    (hx, hy), (a, b), t = anatomy.heart_centre, anatomy.heart_axes, anatomy.heart_angle
    reach = max(a, b) + 0.02
    top = anatomy.carina_y + 0.02
    rows = canvas.rows(top - 0.01, hy + reach)
    cols = canvas.columns(min(anatomy.midline - anatomy.mediastinum, hx - reach) - 0.02, hx + reach)
    X, Y = canvas.X[rows, cols], canvas.Y[rows]
    dx, dy = X - hx, Y - hy
    c, s = math.cos(t), math.sin(t)
    u = (c * dx + s * dy) * (1.0 / a)
    v = (-s * dx + c * dy) * (1.0 / b)
    ellipse = ramp((1.0 - np.sqrt(u * u + v * v)) * min(a, b), edge)
    # the cardiac silhouette widens from the mediastinum down to the ventricles: the left border
    # runs in a long convex line from below the aortic knob to the widest point; the right atrium
    # bulges only low down.
    h = np.clip((Y - top) * (1.0 / max(hy - top, 1e-3)), 0.0, 1.0)
    extent = anatomy.heart_extent()
    offset = X - anatomy.midline
    left = anatomy.mediastinum + np.sqrt(h) * (hx + extent - anatomy.midline - anatomy.mediastinum)
    right = anatomy.mediastinum + h**3 * (anatomy.midline - (hx - extent) - anatomy.mediastinum)
    cone = ramp(left - offset, edge) * ramp(offset + right, edge) * ramp(hy - Y, edge) * ramp(Y - top, edge)
    heart = np.zeros_like(canvas.X)
    heart[rows, cols] = np.maximum(ellipse, cone)
    return heart


def lung_mask(
    anatomy: Anatomy, canvas: Canvas, diaphragm: np.ndarray, side: Side, edge: float, retract: float = 0.0
) -> np.ndarray:
    """One lung: inside the rib cage, above its hemidiaphragm, beside the mediastinum, below the apex.

    ``retract`` pulls the lateral and apical edges in (a collapsed lung beside a pneumothorax).
    Computed inside the lung's bounding box (its half of the chest, apex to costophrenic angle).
    """
    rows, cols = hemithorax(anatomy, canvas, side)
    X, Y = canvas.X[rows, cols], canvas.Y[rows]
    outward = side_sign(side) * (X - anatomy.midline)
    lateral = ramp(wall_half_width(anatomy, Y) - retract - outward, edge * 3)
    medial = ramp(outward - mediastinal_border(anatomy, Y, side), edge)
    base = ramp(diaphragm[rows, cols] - Y, edge)
    apex_x = 0.45 * anatomy.half_width
    apex = ramp(Y - (anatomy.apex_y + retract * 1.5) - 1.6 * (outward - apex_x) ** 2, edge * 2)
    lung = np.zeros_like(canvas.X)
    lung[rows, cols] = lateral * medial * base * apex
    return lung


def hemithorax(anatomy: Anatomy, canvas: Canvas, side: Side) -> tuple[slice, slice]:
    """Rows and columns of one side of the chest, from the lung apex to below the costophrenic angle."""
    rows = canvas.rows(anatomy.apex_y - 0.02, max(anatomy.cp_y) + 0.02)
    if side == Side.RIGHT:
        cols = canvas.columns(anatomy.midline - anatomy.half_width - 0.03, anatomy.midline + 0.01)
    else:
        cols = canvas.columns(anatomy.midline - 0.01, anatomy.midline + anatomy.half_width + 0.03)
    return rows, cols


def body_density(anatomy: Anatomy, canvas: Canvas, edge: float) -> np.ndarray:
    """Soft tissue path length: a cylinder's chord ``sqrt(1 - r^2)``, with a neck and shoulders."""
    X, Y = canvas.X, canvas.Y
    half = anatomy.half_width + anatomy.margin
    # shoulders slope down from the neck at the top of the image.
    top = np.clip((Y + 0.05) * (1.0 / 0.2), 0.0, 1.0)
    width = half * (0.9 + 0.1 * np.sqrt(top))
    r = np.abs(X - anatomy.midline) * (1.0 / np.maximum(width, 1e-3))
    chord = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    return anatomy.soft_tissue * (0.4 + 0.55 * chord) * ramp(1.0 - r, edge * 4)


def add_spine(anatomy: Anatomy, canvas: Canvas, edge: float, density: np.ndarray) -> None:
    """Vertebral column into ``density``: a bright band, darker disc spaces, brighter cortices.

    Computed only on the columns the spine can cover, as it is a narrow structure.
    """
    cols = canvas.columns(anatomy.midline - 0.06, anatomy.midline + 0.06)
    X, Y = canvas.X[:, cols], canvas.Y
    width = 0.032 + 0.012 * np.clip(Y, 0.0, 1.0)  # vertebral bodies widen caudally
    d = width - np.abs(X - anatomy.midline)
    body = ramp(d, edge)
    cortex = ramp(0.006 - np.abs(d - 0.004), edge)
    phase = (Y - anatomy.rib_top) * (1.0 / (anatomy.rib_gap * 0.95))
    discs = 1.0 - 0.35 * np.clip(1.0 - np.abs(phase - np.round(phase)) * 8.0, 0.0, 1.0)
    density[:, cols] += anatomy.bone * (0.08 * body * discs + 0.04 * cortex)


# ---------------------------------------------------------------------------------------------------
# Polyline structures: ribs, clavicles, scapulae, vessels.


def rib_paths(anatomy: Anatomy, side: Side, points: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """All posterior ribs (count, points, 2) and their anterior continuations (count, points // 2, 2).

    Posterior ribs leave the spine, rise a little, then sweep out and down to the lateral wall;
    anterior ribs run back medially and downward from there (they are fainter on a PA film).
    Rib spacing widens caudally.
    """
    sign = side_sign(side)
    index = np.arange(anatomy.rib_count, dtype=np.float64)[:, None]  # (count, 1)
    y0 = anatomy.rib_top + index * anatomy.rib_gap * (1.0 + 0.035 * index)
    t = np.linspace(0.0, 1.0, points)[None, :]  # (1, points)
    wall = wall_half_width(anatomy, y0 + 0.08 + 0.02 * index) + 0.01
    reach = 0.03 + (wall - 0.03) * t
    rise = 0.025 * np.sin(np.pi * np.minimum(t * 2.0, 1.0))
    fall = (0.12 + 0.006 * index) * t**1.8
    posterior = np.stack([anatomy.midline + sign * reach, y0 - rise + fall], axis=2)
    u = np.linspace(0.0, 1.0, points // 2)[None, :]
    end_x, end_y = posterior[:, -1:, 0], posterior[:, -1:, 1]
    anterior = np.stack(
        [end_x - sign * (0.05 + (wall * 0.55) * u), end_y + 0.02 + 0.11 * u**1.3 - 0.02 * (1 - u) ** 2],
        axis=2,
    )
    return posterior, anterior


def clavicle_path(anatomy: Anatomy, side: Side) -> np.ndarray:
    """An S-shaped clavicle from the sternal notch out and up to the shoulder."""
    sign = side_sign(side)
    t = np.linspace(0.0, 1.0, 12)
    x = anatomy.midline + sign * (0.035 + (anatomy.half_width + 0.02) * t)
    y = anatomy.apex_y + 0.1 - 0.08 * t + 0.015 * np.sin(2 * np.pi * t)
    return np.stack([x, y], axis=1)


def scapula_path(anatomy: Anatomy, side: Side) -> np.ndarray:
    """Medial border of the scapula, projecting over the upper lateral lung."""
    sign = side_sign(side)
    t = np.linspace(0.0, 1.0, 8)
    x = anatomy.midline + sign * (anatomy.half_width * (0.98 - 0.28 * np.sin(np.pi * t * 0.8)))
    y = anatomy.apex_y + 0.01 + 0.30 * t
    return np.stack([x, y], axis=1)


def vessel_tree(anatomy: Anatomy, side: Side, rng: np.random.Generator, depth: int = 4) -> list[np.ndarray]:
    """A branching pulmonary vascular tree from the hilum: one (N, 3, 2) array of gently bent
    segments (start, bend, end) per generation.

    Trunks leave from along the hilum and fan from the apex to the base; each vessel then forks into
    a main branch that runs on nearly straight and a side branch at a wider angle, both shorter, so
    vessels taper and markings fade toward the periphery, as on real films. Built a generation at a
    time to stay vectorised.
    """
    sign = side_sign(side)
    i = 0 if side == Side.RIGHT else 1
    # main trunks fan from up to down (angles from the outward horizontal, y pointing down).
    angles = np.array([-1.3, -0.8, -0.3, 0.2, 0.7, 1.1, 1.45]) + rng.uniform(-0.15, 0.15, 7)
    lengths = 0.1 * rng.uniform(0.7, 1.2, 7)
    along = np.linspace(-0.04, 0.05, 7)  # upper trunks leave from the top of the hilum
    starts = np.stack(
        [np.full(7, anatomy.midline + sign * (anatomy.mediastinum + 0.04)), anatomy.hilum_y[i] + along],
        axis=1,
    )
    starts += rng.normal(0.0, 0.006, (7, 2))
    generations = []
    for _ in range(depth):
        direction = np.stack([sign * np.cos(angles), np.sin(angles)], axis=1)
        ends = starts + direction * lengths[:, None]
        normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
        bends = (starts + ends) / 2 + normal * (rng.normal(0.0, 0.1, len(angles)) * lengths)[:, None]
        generations.append(np.stack([starts, bends, ends], axis=1))
        n = len(angles)
        # per fork: a main branch (small turn, long) and a side branch (wide turn, short).
        turn = np.stack([rng.uniform(0.05, 0.25, n), rng.uniform(0.35, 0.75, n)], axis=1)
        turn *= np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None] * np.array([1.0, -1.0])
        scale = np.stack([rng.uniform(0.7, 0.85, n), rng.uniform(0.5, 0.7, n)], axis=1)
        angles = (angles[:, None] + turn).ravel()
        lengths = (lengths[:, None] * scale).ravel()
        starts = np.repeat(ends, 2, axis=0)
    return generations


# ---------------------------------------------------------------------------------------------------
