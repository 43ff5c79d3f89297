"""Render a candidate cocktail photo (small RGB image) from its JSON-able spec.

A spec holds: cocktail, liquid_rgb, clarity, temperature, glass, garnish,
background_rgb, fill (0..1 of the bowl height), scale, dx, dy, noise_std, size, seed.
Rendering is deterministic for a spec: all randomness comes from spec["seed"].
The palette constants below are shared with the pixel detectors in demo_features.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

GLASS_RGB = (150, 165, 180)  # glass outline, stem and base
ICE_RGB = (195, 225, 240)
ICE_EDGE_RGB = (160, 190, 210)
STEAM_RGB = (228, 228, 232)
WHITE_RGB = (250, 250, 250)  # specular highlight of clear drinks, frost crystals

GARNISH_RGB = {
    "orange_peel": (240, 125, 20), "lemon_twist": (245, 215, 30), "lime_wedge": (100, 185, 40),
    "lemon_wheel": (250, 225, 70), "orange_wheel": (250, 150, 30), "cherry": (160, 10, 30),
    "olive": (115, 140, 35), "mint": (35, 150, 55), "raspberry": (200, 30, 85),
    "coffee_beans": (75, 40, 15), "pineapple_wedge": (240, 205, 55), "celery": (130, 200, 80),
}

Point = tuple[float, float]


def _ellipse_arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 12) -> list[Point]:
    t = np.linspace(a0, a1, n)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


def _stem(top: float) -> list[tuple[Point, Point]]:
    return [((0.5, top), (0.5, 0.86)), ((0.38, 0.88), (0.62, 0.88))]


# Per glass: bowl polygon (holds the liquid) and extra outline segments, unit square, y down.
GLASS_SHAPES: dict[str, tuple[list[Point], list[tuple[Point, Point]]]] = {
    "rocks": ([(0.27, 0.45), (0.73, 0.45), (0.70, 0.88), (0.30, 0.88)], []),
    "highball": ([(0.33, 0.22), (0.67, 0.22), (0.65, 0.90), (0.35, 0.90)], []),
    "collins": ([(0.38, 0.12), (0.62, 0.12), (0.61, 0.90), (0.39, 0.90)], []),
    "martini": ([(0.20, 0.25), (0.80, 0.25), (0.5, 0.56)], _stem(0.56)),
    "coupe": (_ellipse_arc(0.5, 0.35, 0.26, 0.2, 0.0, np.pi, 14), _stem(0.55)),
    "wine": (_ellipse_arc(0.5, 0.38, 0.18, 0.22, -0.958, np.pi + 0.958, 18), _stem(0.6)),
    "mug": ([(0.30, 0.35), (0.68, 0.35), (0.68, 0.88), (0.30, 0.88)], []),
    "hurricane": ([(0.37, 0.12), (0.63, 0.12), (0.59, 0.35), (0.66, 0.62), (0.57, 0.80),
                   (0.43, 0.80), (0.34, 0.62), (0.41, 0.35)], [((0.5, 0.80), (0.5, 0.86)), ((0.38, 0.88), (0.62, 0.88))]),
    "flute": ([(0.42, 0.12), (0.58, 0.12), (0.56, 0.60), (0.44, 0.60)], _stem(0.6)),
}


MAX_SIZE = 256  # pixels a side: a thumbnail; an uploaded spec must not make the app render a poster


def render_candidate_image(render_spec: dict) -> Image.Image:
    """Render the spec to a (size, size) RGB PIL image; same spec -> same pixels.

    Raises ValueError for a size that is not an integer in [8, MAX_SIZE].
    """
    size = render_spec.get("size", 64)
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_SIZE:
        raise ValueError(f"render_spec.size must be an integer in [8, {MAX_SIZE}], got {size!r}")
    rng = np.random.default_rng(int(render_spec["seed"]))
    to_px = _projector(render_spec, size)
    bowl, extras = GLASS_SHAPES[render_spec["glass"]]
    bowl_px = [to_px(p) for p in bowl]
    bowl_mask = _polygon_mask(bowl_px, size)
    liquid_mask = _below(bowl_mask, bowl_px, float(render_spec["fill"]))

    img = np.empty((size, size, 3), np.float32)
    img[:] = render_spec["background_rgb"]
    _paint_liquid(img, liquid_mask, render_spec, rng)
    if render_spec["temperature"] == "rocks":
        _paint_ice(img, bowl_mask, liquid_mask, rng, size)
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    _draw_glass(draw, render_spec["glass"], bowl_px, extras, to_px)
    _draw_garnish(draw, render_spec["garnish"], bowl_px, liquid_mask, size)
    if render_spec["temperature"] == "hot":
        _draw_steam(draw, bowl_px, rng, size)
    out = np.asarray(pil, np.float32) + rng.normal(0, float(render_spec["noise_std"]), (size, size, 3))
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8))


def _projector(spec: dict, size: int):
    s, dx, dy = float(spec["scale"]), float(spec["dx"]), float(spec["dy"])

    def to_px(p: Point) -> Point:
        return (size * (0.5 + (p[0] - 0.5) * s) + dx, size * (0.5 + (p[1] - 0.5) * s) + dy)
    return to_px


def _polygon_mask(points: list[Point], size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    return np.asarray(mask) > 0


def _below(mask: np.ndarray, poly: list[Point], fill: float) -> np.ndarray:
    """Part of `mask` below the fill line (fill = share of the bowl height)."""
    ys = [p[1] for p in poly]
    level = max(ys) - fill * (max(ys) - min(ys))
    rows = np.arange(mask.shape[0])[:, None] + 0.5
    return mask & (rows >= level)


def _paint_liquid(img: np.ndarray, mask: np.ndarray, spec: dict, rng: np.random.Generator) -> None:
    colour = np.asarray(spec["liquid_rgb"], np.float32)
    n = int(mask.sum())
    if spec["temperature"] == "frozen":  # slush: whitened, with frost crystals
        colour = 0.7 * colour + 0.3 * 245
    if spec["clarity"] == "cloudy" or spec["temperature"] == "frozen":
        colour = 0.85 * colour + 0.15 * 240
        img[mask] = colour + rng.normal(0, 14, (n, 1))  # luminance speckle of suspended matter
    else:
        img[mask] = colour
    if spec["temperature"] == "frozen":
        ys, xs = np.nonzero(mask)
        pick = rng.random(n) < 0.12
        img[ys[pick], xs[pick]] = WHITE_RGB
    elif spec["clarity"] == "clear" and n:
        ys, xs = np.nonzero(mask)
        col = xs.min() + max(1, int(0.22 * (xs.max() - xs.min())))
        img[ys[xs == col], col] = WHITE_RGB  # specular highlight seen through clear liquid


def _paint_ice(img: np.ndarray, bowl: np.ndarray, liquid: np.ndarray, rng: np.random.Generator, size: int) -> None:
    ys, xs = np.nonzero(liquid)
    if len(ys) == 0:
        return
    side = max(4, int(round(size * 0.11)))
    for _ in range(int(rng.integers(2, 5))):
        y0 = int(rng.integers(ys.min() - side // 3, max(ys.min() + 1, ys.min() + (ys.max() - ys.min()) // 2)))
        x0 = int(rng.integers(xs.min(), max(xs.min() + 1, xs.max() - side + 1)))
        cube = np.zeros_like(bowl)
        cube[max(y0, 0):y0 + side, max(x0, 0):x0 + side] = True
        cube &= bowl
        inner = np.zeros_like(bowl)
        inner[max(y0 + 1, 0):y0 + side - 1, max(x0 + 1, 0):x0 + side - 1] = True
        img[cube] = ICE_EDGE_RGB
        img[cube & inner] = ICE_RGB


def _draw_glass(draw: ImageDraw.ImageDraw, glass: str, bowl_px: list[Point], extras, to_px) -> None:
    draw.polygon(bowl_px, outline=GLASS_RGB)
    for a, b in extras:
        draw.line([to_px(a), to_px(b)], fill=GLASS_RGB, width=1)
    if glass == "mug":
        (x0, y0), (_, y1) = bowl_px[1], bowl_px[2]
        h = y1 - y0
        draw.arc([x0 - 0.15 * h, y0 + 0.2 * h, x0 + 0.3 * h, y0 + 0.7 * h], -90, 90, fill=GLASS_RGB, width=2)


def _draw_garnish(draw: ImageDraw.ImageDraw, garnish: str, bowl_px: list[Point], liquid: np.ndarray, size: int) -> None:
    if garnish == "none":
        return
    c = GARNISH_RGB[garnish]
    u = size / 64.0
    xs = [p[0] for p in bowl_px]
    top = min(p[1] for p in bowl_px)
    x, y = max(xs), top  # right-hand rim
    if garnish in ("orange_peel", "lemon_twist"):
        draw.arc([x - 7 * u, y - 9 * u, x + 3 * u, y + 3 * u], 180, 360, fill=c, width=max(1, int(2 * u)))
    elif garnish in ("lime_wedge", "pineapple_wedge"):
        draw.polygon([(x - 4 * u, y + 2 * u), (x + 5 * u, y - 7 * u), (x + 6 * u, y + 2 * u)], fill=c)
        if garnish == "pineapple_wedge":
            draw.line([(x + 5 * u, y - 7 * u), (x + 7 * u, y - 12 * u)], fill=(40, 130, 40), width=max(1, int(2 * u)))
    elif garnish in ("lemon_wheel", "orange_wheel"):
        draw.ellipse([x - 5 * u, y - 7 * u, x + 5 * u, y + 3 * u], fill=c, outline=(255, 245, 200))
    elif garnish in ("cherry", "olive"):
        draw.line([(x - 8 * u, y - 8 * u), (x - 2 * u, y + 4 * u)], fill=(120, 80, 50), width=1)
        draw.ellipse([x - 11 * u, y - 11 * u, x - 4 * u, y - 4 * u], fill=c)
    elif garnish == "mint":
        for ox, oy in ((-4, -6), (0, -9), (3, -5)):
            draw.ellipse([x + (ox - 3) * u, y + (oy - 2) * u, x + (ox + 3) * u, y + (oy + 2) * u], fill=c)
    elif garnish == "raspberry":
        for ox, oy in ((-3, -4), (1, -6), (2, -2)):
            draw.ellipse([x + (ox - 2) * u, y + (oy - 2) * u, x + (ox + 2) * u, y + (oy + 2) * u], fill=c)
    elif garnish == "coffee_beans":
        ys, _ = np.nonzero(liquid)
        cy = ys.min() + 1 if len(ys) else top + 4 * u
        cx = (min(xs) + max(xs)) / 2
        for ox in (-4, 0, 4):
            draw.ellipse([cx + (ox - 1.5) * u, cy - 1.2 * u, cx + (ox + 1.5) * u, cy + 1.2 * u], fill=c)
    elif garnish == "celery":
        draw.line([(x - 6 * u, y + 8 * u), (x - 1 * u, y - 14 * u)], fill=c, width=max(2, int(3 * u)))


def _draw_steam(draw: ImageDraw.ImageDraw, bowl_px: list[Point], rng: np.random.Generator, size: int) -> None:
    xs = [p[0] for p in bowl_px]
    top = min(p[1] for p in bowl_px)
    u = size / 64.0
    for k in range(3):
        x0 = min(xs) + (k + 1) * (max(xs) - min(xs)) / 4 + rng.uniform(-u, u)
        pts = [(x0 + 1.5 * u * np.sin(t + k), top - 2 * u - t * 1.6 * u) for t in np.linspace(0, 6, 10)]
        draw.line(pts, fill=STEAM_RGB, width=1)
