"""Pixel measurements of the demo benchmark: 8 visual features and 5 conflict features.

Everything here reads the rendered pixels (H, W, 3 uint8); nothing is copied from
the render spec. The conflict detectors know the renderer's palette (as a trained
detector would know what ice or a lime wedge looks like) but not the candidate's spec.
"""
from __future__ import annotations

import numpy as np

from .render import GARNISH_RGB, GLASS_RGB, ICE_EDGE_RGB, ICE_RGB, STEAM_RGB, WHITE_RGB

VISUAL_COLUMNS = ("subject_ratio", "object_area", "aspect_ratio", "brightness", "contrast",
                  "saturation", "hue_variance", "edge_density")
CONFLICT_COLUMNS = ("color_delta_e", "temperature_conflict", "clarity_conflict", "garnish_mismatch",
                    "overall_conflict_prob")

_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                     [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] (..., 3) -> CIE L*a*b* (D65) (..., 3)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (lin @ _RGB2XYZ.T) / _D65
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) of Lab arrays (..., 3) -> (...)."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar ** 7 / (c_bar ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    zero = (c1p * c2p) == 0

    dl = L2 - L1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(zero, 0.0, dh)
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)

    l_bar = (L1 + L2) / 2
    cp_bar = (c1p + c2p) / 2
    h_sum = h1p + h2p
    hp_bar = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2,
                      np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    hp_bar = np.where(zero, h_sum, hp_bar)
    t = (1 - 0.17 * np.cos(np.radians(hp_bar - 30)) + 0.24 * np.cos(np.radians(2 * hp_bar))
         + 0.32 * np.cos(np.radians(3 * hp_bar + 6)) - 0.20 * np.cos(np.radians(4 * hp_bar - 63)))
    d_theta = 30 * np.exp(-(((hp_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_bar ** 7 / (cp_bar ** 7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dc / s_c) * (dH / s_h))


# --- visual features -------------------------------------------------------------------

def luminance(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float luma in [0, 255] (Rec. 601)."""
    return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def hsv_saturation(img: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) HSV saturation in [0, 1]."""
    mx = img.max(-1).astype(np.float32)
    return (mx - img.min(-1)) / np.maximum(mx, 1.0)


def hue_radians(img: np.ndarray) -> np.ndarray:
    """HSV hue as an angle (H, W) in radians, via the opponent-colour atan2 form."""
    f = img.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)


def subject_mask(img: np.ndarray, threshold: float = 35.0) -> np.ndarray:
    """Pixels whose colour differs from the median border colour by > threshold (RGB)."""
    f = img.astype(np.float32)
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
    return np.linalg.norm(f - np.median(border, 0), axis=-1) > threshold


def visual_features(img: np.ndarray, subj: np.ndarray | None = None) -> dict[str, float]:
    """The 8 visual features of an (H, W, 3) uint8 image (definitions in docs/demo_benchmark.md)."""
    h, w, _ = img.shape
    subj = subject_mask(img) if subj is None else subj
    lum = luminance(img)
    sat = hsv_saturation(img)
    if subj.any():
        ys, xs = np.nonzero(subj)
        bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    else:
        bh = bw = 0
    coloured = sat > 0.2
    hue = hue_radians(img)[coloured]
    hue_var = 1.0 - float(np.abs(np.exp(1j * hue).mean())) if hue.size else 0.0
    gx = lum[1:-1, 2:] - lum[1:-1, :-2]
    gy = lum[2:, 1:-1] - lum[:-2, 1:-1]
    return {
        "subject_ratio": float(subj.mean()),
        "object_area": float(bh * bw) / (h * w),
        "aspect_ratio": float(bh) / bw if bw else 0.0,
        "brightness": float(lum.mean()) / 255.0,
        "contrast": float(lum.std()) / 255.0,
        "saturation": float(sat.mean()),
        "hue_variance": hue_var,
        "edge_density": float((np.hypot(gx, gy) > 40.0).mean()),
    }


# --- conflict detectors ----------------------------------------------------------------

def _near(px: np.ndarray, rgb: tuple[int, int, int], tol: float = 28.0) -> np.ndarray:
    """(N, 3) pixels -> (N,) bool: within `tol` (RGB Euclidean) of `rgb`."""
    d = px - np.asarray(rgb, np.float32)
    return np.einsum("ij,ij->i", d, d) < tol * tol


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


_GARNISH_NAMES = tuple(GARNISH_RGB)
_GARNISH_LAB = rgb_to_lab(np.array([GARNISH_RGB[g] for g in _GARNISH_NAMES], np.float64))


def detect(img: np.ndarray, subj: np.ndarray | None = None) -> dict:
    """Raw detections: liquid colour, ice/steam/frost/highlight shares, texture, garnish pixels."""
    subj = subject_mask(img) if subj is None else subj
    if not subj.any():
        subj = np.ones_like(subj)
    ys, xs = np.nonzero(subj)
    px = img[ys, xs].astype(np.float32)  # (N, 3) subject pixels only
    n = len(px)
    ice = _near(px, ICE_RGB) | _near(px, ICE_EDGE_RGB, 20.0)
    steam = _near(px, STEAM_RGB, 12.0)
    white = _near(px, WHITE_RGB, 12.0)
    rest = ~(ice | steam | white | _near(px, GLASS_RGB, 25.0))
    if rest.sum() < 10:
        rest = np.ones(n, bool)
    median = np.median(px[rest], 0)
    d = px - median
    dist2 = np.einsum("ij,ij->i", d, d)
    liquid = rest & (dist2 < 45.0 ** 2)
    height = np.ptp(ys[liquid]) + 1 if liquid.any() else 1
    top = np.bincount(xs[white]).max() if white.any() else 0  # tallest white column = highlight
    lum = px @ np.array([0.299, 0.587, 0.114], np.float32)
    sat = hsv_saturation(px)
    garnish = rest & (dist2 > 60.0 ** 2) & (sat > 0.3)
    liq_lum = lum[liquid]
    return {
        "liquid_rgb": px[liquid].mean(0) if liquid.any() else median,
        "ice": ice.sum() / n, "steam": steam.sum() / n,
        "frost": (white.sum() - top) / n, "highlight": top / height,
        "texture": 1.4826 * float(np.median(np.abs(liq_lum - np.median(liq_lum)))) if liq_lum.size else 0.0,
        "garnish_count": int(garnish.sum()),
        "garnish_rgb": px[garnish].mean(0) if garnish.any() else None,
    }


def temperature_probs(d: dict) -> dict[str, float]:
    """Detector probabilities of each serving temperature from ice/steam/frost shares."""
    p_rocks = _sigmoid((d["ice"] - 0.04) / 0.01)
    p_hot = _sigmoid((d["steam"] - 0.015) / 0.004)
    p_frozen = _sigmoid((d["frost"] - 0.03) / 0.008)
    p = {"rocks": p_rocks, "hot": p_hot, "frozen": p_frozen,
         "up": (1 - p_rocks) * (1 - p_hot) * (1 - p_frozen)}
    total = sum(p.values())
    return {k: v / total for k, v in p.items()}


def clarity_probs(d: dict) -> dict[str, float]:
    """Detector probabilities of clear (highlight), cloudy (speckle) and opaque (neither)."""
    p_clear = _sigmoid((d["highlight"] - 0.2) * 20)
    p_cloudy = (1 - p_clear) * _sigmoid((d["texture"] - 7.0) / 1.5)
    return {"clear": p_clear, "cloudy": p_cloudy, "opaque": max(0.0, 1 - p_clear - p_cloudy)}


def garnish_mismatch(d: dict, expected: str) -> float:
    """Probability that the garnish seen is not `expected` (colour prototypes in Lab)."""
    seen = d["garnish_count"] >= 4 and d["garnish_rgb"] is not None
    if expected == "none":
        return _sigmoid((d["garnish_count"] - 6) / 2)
    if not seen:
        return 0.9
    de = ciede2000(rgb_to_lab(d["garnish_rgb"])[None], _GARNISH_LAB)
    k = _GARNISH_NAMES.index(expected)
    other = np.delete(de, k).min()
    return _sigmoid((de[k] - other) / 4.0)


def conflict_features(img: np.ndarray, expected: dict, rng: np.random.Generator,
                      subj: np.ndarray | None = None) -> dict[str, float]:
    """Compare detections in `img` with the query's requirements.

    expected: {"colour": rgb, "clarity"/"temperature"/"garnish": value or None (unconstrained)}.
    Detector noise is drawn from `rng`; `subj` is an optional precomputed subject_mask.
    """
    d = detect(img, subj)
    de = float(ciede2000(rgb_to_lab(d["liquid_rgb"]), rgb_to_lab(np.asarray(expected["colour"], float))))
    de = max(0.0, de * (1 + rng.normal(0, 0.08)) + rng.normal(0, 1.0))
    temp = 1 - temperature_probs(d)[expected["temperature"]] if expected.get("temperature") else 0.0
    clar = 1 - clarity_probs(d)[expected["clarity"]] if expected.get("clarity") else 0.0
    garn = garnish_mismatch(d, expected["garnish"]) if expected.get("garnish") else 0.0
    temp, clar, garn = (float(np.clip(v + rng.normal(0, 0.06), 0, 1)) for v in (temp, clar, garn))
    overall = _sigmoid(-3.0 + 0.12 * de + 2.5 * temp + 2.0 * clar + 2.0 * garn)
    return {"color_delta_e": de, "temperature_conflict": temp, "clarity_conflict": clar,
            "garnish_mismatch": garn, "overall_conflict_prob": overall}
