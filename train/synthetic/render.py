"""Vectorised, anti-aliased renderer of the synthetic face (docs/design.md §6).

Every shape is a soft mask from an approximate signed distance (first-order ellipse
distance), blended over a ~1.2 pixel band, so edges are smooth at 64x64 and sharp at 512.
Frames are drawn in batches as (T, H, W) arrays: no per-pixel Python loops. The background
stays still; everything else follows the head pose (dx, dy, roll about the face centre).
"""

from __future__ import annotations

import numpy as np

from train.synthetic.identity import Identity
from train.synthetic.motion import Motion

_MAX_PIXELS_PER_BATCH = 1 << 20


def render_frames(identity: Identity, motion: Motion, *, size: int) -> np.ndarray:
    """Render all frames of ``motion`` -> uint8 (T, size, size, 3)."""
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    t = motion.num_frames
    out = np.empty((t, size, size, 3), np.uint8)
    batch = max(1, _MAX_PIXELS_PER_BATCH // (size * size))
    background = _background(identity, size)
    for start in range(0, t, batch):
        sl = slice(start, min(t, start + batch))
        img = _draw(identity, motion, sl, size, background)
        out[sl] = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


class _Canvas:
    """Pixel-centre coordinates and soft-mask helpers for one batch of frames."""

    def __init__(self, size: int, frames: int):
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.x = c[None, None, :]  # (1, 1, W)
        self.y = c[None, :, None]  # (1, H, 1)
        self.edge = 1.2 / size  # width of the anti-aliasing band
        self.frames = frames

    def soft(self, d: np.ndarray) -> np.ndarray:
        """Coverage from a signed distance (negative inside)."""
        return np.clip(0.5 - d / self.edge, 0.0, 1.0)


def _ellipse_sd(u: np.ndarray, v: np.ndarray, rx, ry) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse centred at the origin."""
    a, b = u / rx, v / ry
    f = np.sqrt(a * a + b * b) + 1e-6
    g = np.sqrt((a / rx) ** 2 + (b / ry) ** 2) / f + 1e-6
    # The first-order estimate fails far from flat ellipses; the bounding box bounds it.
    return np.maximum((f - 1.0) / g, np.maximum(np.abs(u) - rx, np.abs(v) - ry))


def _blend(img: np.ndarray, alpha: np.ndarray, colour) -> None:
    """img (T, H, W, 3) <- img * (1 - alpha) + colour * alpha, in place."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(colour, np.float32)


def _col(v) -> np.ndarray:
    """A per-frame vector (T,) as (T, 1, 1) for broadcasting against (T, H, W)."""
    return np.asarray(v, np.float32)[:, None, None]


def _background(idn: Identity, size: int) -> np.ndarray:
    cv = _Canvas(size, 1)
    x, y = cv.x[0], cv.y[0]  # (1, W), (H, 1)
    top, bottom, accent = (np.asarray(c, np.float32) for c in (idn.bg_top, idn.bg_bottom, idn.bg_accent))
    img = (1 - y)[..., None] * top + y[..., None] * bottom + 0 * x[..., None]  # (H, W, 3)
    if idn.bg_kind == "stripes":
        w = 0.5 + 0.5 * np.sin(2 * np.pi * idn.bg_freq * (0.8 * x + 0.6 * y) + idn.bg_phase)
        img = img * (1 - 0.35 * w[..., None]) + 0.35 * w[..., None] * accent
    elif idn.bg_kind == "blobs":
        for k in range(3):
            bx = 0.5 + 0.42 * np.cos(idn.bg_phase + 2.1 * k)
            by = 0.35 + 0.3 * np.sin(idn.bg_phase * 1.7 + 2.1 * k)
            w = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * (0.04 + 0.02 * k) ** 2 * idn.bg_freq / 3))
            img = img * (1 - 0.6 * w[..., None]) + 0.6 * w[..., None] * accent
    elif idn.bg_kind == "vignette":
        r = (x - 0.5) ** 2 + (y - 0.5) ** 2
        img = img * (1 - 0.9 * r[..., None])
    return img.astype(np.float32)


def _draw(idn: Identity, m: Motion, sl: slice, size: int, background: np.ndarray) -> np.ndarray:
    n = sl.stop - sl.start
    cv = _Canvas(size, n)
    img = np.broadcast_to(background, (n, size, size, 3)).copy()
    dx, dy, roll = _col(m.dx[sl]), _col(m.dy[sl]), _col(m.roll[sl])
    rx, ry = idn.face_rx, idn.face_ry
    skin = np.asarray(idn.skin, np.float32)

    # Face-local coordinates: u right, v down, origin at the face centre.
    px, py = cv.x - idn.face_cx - dx, cv.y - idn.face_cy - dy
    cos, sin = np.cos(roll), np.sin(roll)
    u, v = cos * px + sin * py, -sin * px + cos * py
    hair = np.asarray(idn.hair, np.float32)
    if idn.hair_style == "long":  # behind neck and shoulders: a tall rounded shape
        back = _ellipse_sd(u, v - 0.35 * ry, rx * 1.3, ry * 1.55)
        _blend(img, cv.soft(back), hair * 0.8)

    # Shoulders follow the head half-way and do not roll.
    sh = _ellipse_sd(cv.x - idn.face_cx - 0.5 * dx, cv.y - (idn.face_cy + 1.55 * ry) - 0.5 * dy, 0.46, 0.2 + ry * 0.3)
    _blend(img, cv.soft(sh), idn.shirt)

    neck = np.maximum(np.abs(u) - 0.55 * rx, np.maximum(0.5 * ry - v, v - 1.6 * ry))
    _blend(img, cv.soft(neck), skin * 0.82)
    if idn.hair_style == "bun":
        _blend(img, cv.soft(_ellipse_sd(u, v + 1.08 * ry, 0.45 * rx, 0.3 * ry)), hair * 0.9)
    for s in (-1.0, 1.0):  # ears
        _blend(img, cv.soft(_ellipse_sd(u - s * 0.97 * rx, v + 0.05 * ry, 0.17 * rx, 0.24 * ry)), skin * 0.88)

    # Face: an ellipse whose lower half narrows towards the chin; soft shading from one side.
    narrow = 1.0 - idn.jaw * 0.32 * np.clip(v / ry, 0.0, 1.0) ** 2
    face = cv.soft(_ellipse_sd(u / narrow, v, rx, ry))
    shade = 1.0 + 0.12 * idn.light * u / rx - 0.10 * ((u / rx) ** 2 + (v / ry) ** 2)
    a = face[..., None]
    img *= 1.0 - a
    img += a * (shade[..., None] * skin)

    if idn.hair_style != "bald":
        line = -ry * (0.3 if idn.hair_style == "fringe" else idn.hairline) + ry * 1.1 * (u / rx) ** 4
        cap = np.maximum(_ellipse_sd(u, v + 0.04 * ry, rx * 1.09, ry * 1.08), v - line)
        _blend(img, cv.soft(cap), hair)

    # Small features are drawn inside boxes that hold them in every frame of the batch.
    for s in (-1.0, 1.0):
        box = _box(idn, m, sl, size, s * idn.eye_dx * rx, idn.eye_y * ry - idn.eye_ry, 1.6 * idn.eye_rx + 0.02)
        _draw_eye(img[box], cv, idn, m, sl, u[box], v[box], s)
    nose_y = (idn.eye_y + idn.nose_len * 1.9) * ry
    box = _box(idn, m, sl, size, 0.0, nose_y, 0.08 * rx * 1.6 + 0.03)
    nose = cv.soft(_ellipse_sd(u[box] - 0.015 * idn.light, v[box] - nose_y, 0.07 * rx * 1.6, 0.045 * ry)) * 0.45
    _blend(img[box], nose, skin * 0.6)
    box = _box(idn, m, sl, size, 0.0, idn.mouth_y * ry, idn.mouth_w * 1.45 + idn.lip_thick + 0.02)
    _draw_mouth(img[box], cv, idn, m, sl, u[box], v[box])
    return img


def _box(idn: Identity, m: Motion, sl: slice, size: int, fu: float, fv: float, radius: float):
    """Index (all frames, rows, cols) of a square around face point (fu, fv) in every frame."""
    roll = m.roll[sl]
    radius += 2.0 / size  # room for the anti-aliasing band
    gx = idn.face_cx + m.dx[sl] + np.cos(roll) * fu - np.sin(roll) * fv
    gy = idn.face_cy + m.dy[sl] + np.sin(roll) * fu + np.cos(roll) * fv
    r0, r1 = (int(np.floor((gy.min() - radius) * size)), int(np.ceil((gy.max() + radius) * size)))
    c0, c1 = (int(np.floor((gx.min() - radius) * size)), int(np.ceil((gx.max() + radius) * size)))
    return (slice(None), slice(max(r0, 0), max(min(r1, size), 0)), slice(max(c0, 0), max(min(c1, size), 0)))


def _draw_eye(img, cv: _Canvas, idn: Identity, m: Motion, sl: slice, u, v, s: float) -> None:
    """One eye (s = -1 left, +1 right in the image) with iris, pupil, lid line and brow."""
    rx, ry = idn.face_rx, idn.face_ry
    openness = 1.0 - _col(m.blink[sl])
    ey = idn.eye_y * ry
    dark = np.asarray(idn.skin, np.float32) * 0.25
    eu, ev = u - s * idn.eye_dx * rx, v - ey
    h = idn.eye_ry * openness
    _blend(img, cv.soft(_ellipse_sd(eu, ev, idn.eye_rx * 1.15, np.maximum(h * 1.25, 0.006))), dark)
    sclera = cv.soft(_ellipse_sd(eu, ev, idn.eye_rx, np.maximum(h, 1e-4)))
    _blend(img, sclera, (0.95, 0.94, 0.92))
    iris = cv.soft(_ellipse_sd(eu, ev, idn.eye_ry * 0.85, idn.eye_ry * 0.85)) * sclera
    _blend(img, iris, idn.iris)
    _blend(img, cv.soft(_ellipse_sd(eu, ev, idn.eye_ry * 0.38, idn.eye_ry * 0.38)) * sclera, (0.03, 0.03, 0.03))
    # Brow: a thin tilted ellipse that rises with m.brow.
    bu = eu
    bv = ev + idn.brow_dy * idn.eye_ry + 0.012 * _col(m.brow[sl])
    c, sn = np.cos(s * idn.brow_tilt), np.sin(s * idn.brow_tilt)
    _blend(img, cv.soft(_ellipse_sd(c * bu + sn * bv, -sn * bu + c * bv, idn.eye_rx * 1.35, idn.brow_thick)), idn.brow)


def _draw_mouth(img, cv: _Canvas, idn: Identity, m: Motion, sl: slice, u, v) -> None:
    """Lips, dark cavity, teeth and tongue; size from openness and width (0..1)."""
    o, w = _col(m.open[sl]), _col(m.width[sl])
    mv = v - idn.mouth_y * idn.face_ry
    hw = idn.mouth_w * (0.85 + 0.45 * w) * (1.0 + 0.08 * o)
    hh = 0.004 + 0.072 * o
    lip = np.asarray(idn.lip, np.float32)
    outer = cv.soft(_ellipse_sd(u, mv, hw + 0.4 * idn.lip_thick, hh + idn.lip_thick))
    _blend(img, outer, lip)
    upper_shadow = outer * cv.soft(mv + 0.2 * hh) * 0.35
    _blend(img, upper_shadow, lip * 0.6)
    cavity = cv.soft(_ellipse_sd(u, mv, hw * 0.92, hh))
    _blend(img, cavity, (0.22, 0.04, 0.06))
    teeth = cavity * cv.soft(mv + hh * 0.45)
    _blend(img, teeth, (0.93, 0.92, 0.86))
    tongue = cavity * cv.soft(_ellipse_sd(u, mv - hh * 0.75, hw * 0.55, hh * 0.5))
    _blend(img, tongue, (0.72, 0.28, 0.3))
