"""The drawn chest: the patient geometry of ``anatomy.py`` drawn as X-ray density maps (body, lungs,
heart, bones, vessels, airways) into a ``Scene`` that ``findings.py`` then edits and ``render.py``
tone-maps. Coordinates and the radiological side convention are ``anatomy.py``'s."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from llmcxr.findings import Side
from llmcxr.synth.anatomy import (
    Anatomy,
    Canvas,
    add_spine,
    body_density,
    clavicle_path,
    diaphragm_height,
    heart_mask,
    lung_mask,
    mediastinal_border,
    patches,
    ramp,
    rib_paths,
    scapula_path,
    side_sign,
    vessel_tree,
)


@dataclass
class Scene:
    """A chest being drawn. ``smooth`` and ``sharp`` are (size, size) float32 density maps.

    ``sharp`` holds thin structures (bones, vessels, tubes); ``render.py`` blurs it once with a small
    kernel before adding it to ``smooth``. ``lungs[side]`` is the air space inside each pleura,
    ``aerated[side]`` the part still filled with lung (smaller beside a pneumothorax).
    """

    anatomy: Anatomy
    canvas: Canvas
    smooth: np.ndarray
    sharp: np.ndarray
    lungs: dict[Side, np.ndarray]
    aerated: dict[Side, np.ndarray]
    heart: np.ndarray
    edge: float  # one-pixel edge ramp in normalised units
    retract: dict[Side, float]  # how far each lung has fallen away from the chest wall
    diaphragm: np.ndarray  # (size, size) height of the hemidiaphragm under each pixel
    air: dict[Side, np.ndarray]  # the density each lung's air took away (fluid puts it back)
    fill: np.ndarray  # (size, size) share of the lung air that fluid or tissue has replaced

    def replace_air(self) -> None:
        """Put back the density of the air that opacities replaced (at most all of it).

        Airspace disease fills alveoli with fluid or cells, so an opacity can make the lung as dense
        as soft tissue but never denser: overlapping findings do not stack.
        """
        air = self.air[Side.RIGHT] + self.air[Side.LEFT]
        self.smooth += air * np.minimum(self.fill, 1.0)
        self.fill[:] = 0.0

    def add_layer(self, image: Image.Image, amount: float, sharp: bool = True) -> None:
        target = self.sharp if sharp else self.smooth
        target += Canvas.pixels(image) * amount


SIDES = (Side.RIGHT, Side.LEFT)


def draw_bones(scene: Scene) -> None:
    """Ribs (with brighter cortices), clavicles, scapular borders and humeral heads into ``scene.sharp``.

    Two float layers: later strokes overwrite earlier ones, so a rib's narrower, fainter core drawn
    over it leaves bright cortical edges. Anterior ribs get their own layer: they add where they
    cross the posterior ribs.
    """
    anatomy, canvas = scene.anatomy, scene.canvas
    b = anatomy.bone
    back, draw_back = canvas.float_layer()
    front, draw_front = canvas.float_layer()
    for side in SIDES:  # humeral heads at the top corners, under the ribs and clavicles
        centre = (anatomy.midline + side_sign(side) * (anatomy.half_width + 0.15), anatomy.apex_y - 0.01)
        canvas.ellipse(draw_back, centre, 0.085, fill=0.16 * b)
        canvas.ellipse(draw_back, centre, 0.072, fill=0.11 * b)
    rib_width = 0.026
    # lower ribs are broader.
    widths = [rib_width * (1.0 + 0.04 * index) for index in range(anatomy.rib_count)]
    for side in SIDES:
        posterior, anterior = rib_paths(anatomy, side)
        canvas.polylines(draw_back, posterior, widths, fill=0.1 * b)
        canvas.polylines(draw_back, posterior, [w * 0.45 for w in widths], fill=0.055 * b)
        canvas.polylines(draw_front, anterior, [rib_width * 0.8] * anatomy.rib_count, fill=0.05 * b)
        clavicle = clavicle_path(anatomy, side)
        canvas.polyline(draw_back, clavicle, 0.03, fill=0.18 * b)
        canvas.polyline(draw_back, clavicle, 0.012, fill=0.135 * b)
        canvas.polyline(draw_front, scapula_path(anatomy, side), 0.006, fill=0.05 * b)
    scene.sharp += Canvas.values(back)
    scene.sharp += Canvas.values(front)


def draw_vessels(scene: Scene, rng: np.random.Generator) -> None:
    """Pulmonary vessels branching from each hilum, only where the lung is aerated."""
    canvas, anatomy = scene.canvas, scene.anatomy
    image, draw = canvas.float_layer()
    for side in SIDES:
        for generation, segments in enumerate(vessel_tree(anatomy, side, rng)):
            width = canvas.width(0.014 * (0.72**generation))
            fill = 0.12 * 0.74**generation
            pixels = canvas.pose.to_pixels(segments, canvas.size)
            for segment in pixels.reshape(len(segments), 6).tolist():
                draw.line(segment, fill=fill, width=width)
    aerated = scene.aerated[Side.RIGHT] + scene.aerated[Side.LEFT]
    # interstitium and small vessels below the resolution of the tree: a faint mottled texture.
    texture = patches(canvas, rng, cells=int(rng.integers(24, 36)))
    scene.sharp += (Canvas.values(image) + 0.05 * texture) * aerated
    for side in SIDES:
        # the hilum itself: pulmonary arteries and bronchi in cross-section (a small window).
        i = 0 if side == Side.RIGHT else 1
        hx, hy = anatomy.midline + side_sign(side) * (anatomy.mediastinum + 0.03), anatomy.hilum_y[i]
        rows, cols = canvas.rows(hy - 0.12, hy + 0.12), canvas.columns(hx - 0.12, hx + 0.12)
        r2 = (canvas.X[rows, cols] - hx) ** 2 + (canvas.Y[rows] - hy) ** 2
        scene.smooth[rows, cols] += 0.12 * np.exp(-r2 * (1.0 / 0.0012)) * scene.lungs[side][rows, cols]


def draw_airways(scene: Scene) -> None:
    """Trachea and main bronchi as dark air columns in the mediastinum."""
    anatomy, canvas = scene.anatomy, scene.canvas
    image, draw = canvas.layer()
    m, cy = anatomy.midline, anatomy.carina_y
    trachea = np.array([[m, -0.05], [m + 0.003, cy]])
    canvas.polyline(draw, trachea, 0.032)
    canvas.polyline(draw, np.array([[m, cy], [m - 0.06, cy + 0.06]]), 0.02)
    canvas.polyline(draw, np.array([[m, cy], [m + 0.07, cy + 0.08]]), 0.018)
    scene.add_layer(image, -0.12, sharp=False)


def draw_anatomy(
    anatomy: Anatomy, canvas: Canvas, rng: np.random.Generator, retract: dict[Side, float]
) -> Scene:
    """A healthy chest with the lungs' lateral edges pulled in by ``retract`` (pneumothorax)."""
    edge = 1.2 * canvas.pixel
    X, Y = canvas.X, canvas.Y
    diaphragm = diaphragm_height(anatomy, canvas)
    lungs = {side: lung_mask(anatomy, canvas, diaphragm, side, edge) for side in SIDES}
    aerated = {
        side: lung_mask(anatomy, canvas, diaphragm, side, edge, retract[side])
        if retract.get(side)
        else lungs[side]
        for side in SIDES
    }
    heart = heart_mask(anatomy, canvas, edge)
    smooth = body_density(anatomy, canvas, edge)
    # heart, mediastinum and the abdomen below the domes are one solid soft-tissue silhouette.
    # The mediastinum is a central column (aortic knob on the left): computed on its columns only;
    # the abdomen on the rows below the highest dome only.
    solid = heart.copy()
    cols = canvas.columns(anatomy.midline - 0.25, anatomy.midline + 0.25)
    offset = X[:, cols] - anatomy.midline
    med = ramp(mediastinal_border(anatomy, Y, Side.LEFT) - offset, edge)
    med *= ramp(mediastinal_border(anatomy, Y, Side.RIGHT) + offset, edge)
    np.maximum(solid[:, cols], 0.85 * med, out=solid[:, cols])
    rows = canvas.rows(min(anatomy.dome_y) - 0.02, 2.0)
    flank = (
        anatomy.half_width + 0.01 + 0.8 * (Y[rows] - max(anatomy.cp_y)) - np.abs(X[rows] - anatomy.midline)
    )
    abdomen = ramp(Y[rows] - diaphragm[rows], edge) * ramp(flank, 0.02)
    np.maximum(solid[rows], abdomen, out=solid[rows])
    smooth += 0.3 * solid
    add_spine(anatomy, canvas, edge, smooth)
    # abdomen below the diaphragm is solid soft tissue; with the lungs cut out above it, the domes
    # appear as the edge where lung air stops.
    # lung bases carry more overlying soft tissue: less air contrast low in the chest; the heart
    # hides most of the lung behind it.
    depth = anatomy.lung_air * (1.0 - 0.25 * np.clip((Y - 0.45) * 3.0, 0.0, 1.0))
    behind_heart = 1.0 - heart * 0.75
    air = {side: lungs[side] * behind_heart * depth for side in SIDES}
    for side in SIDES:
        smooth -= air[side]
    for side in SIDES:
        if retract.get(side):
            # the pneumothorax space holds air but no lung tissue: darker still.
            smooth -= 0.2 * (lungs[side] - aerated[side])
    if anatomy.breasts:
        for sign in (-1, 1):
            # a soft shadow over the lower lateral chest that fades upward and ends in a curved edge.
            cx, cy = anatomy.midline + sign * 0.28, anatomy.dome_y[0] - 0.02
            rows, cols = canvas.rows(cy - 0.2, cy + 0.16), canvas.columns(cx - 0.21, cx + 0.21)
            r = np.sqrt((X[rows, cols] - cx) ** 2 + ((Y[rows] - cy) * 1.3) ** 2)
            fade = np.clip((Y[rows] - (cy - 0.2)) * (1.0 / 0.22), 0.0, 1.0)
            smooth[rows, cols] += anatomy.breasts * ramp(0.19 - r, edge * 4) * fade
    if anatomy.gastric_bubble:
        radius = anatomy.gastric_bubble
        gx, gy = anatomy.midline + 0.17, anatomy.dome_y[1] + radius + 0.025
        rows, cols = (
            canvas.rows(gy - radius - 0.01, gy + 0.02),
            canvas.columns(gx - radius - 0.01, gx + radius + 0.01),
        )
        r = np.sqrt((X[rows, cols] - gx) ** 2 + ((Y[rows] - gy) * 1.6) ** 2)
        smooth[rows, cols] -= 0.25 * ramp(radius - r, edge * 2) * ramp(gy + 0.01 - Y[rows], edge)
    scene = Scene(
        anatomy,
        canvas,
        smooth,
        np.zeros_like(smooth),
        lungs,
        aerated,
        heart,
        edge,
        retract,
        diaphragm,
        air,
        np.zeros_like(smooth),
    )
    draw_airways(scene)
    draw_bones(scene)
    scene.sharp *= 1.0 - 0.5 * solid  # bones show through the heart and abdomen less
    draw_vessels(scene, rng)
    return scene
