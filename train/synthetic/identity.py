"""Seeded identities of the synthetic world (docs/design.md §6): the look of one talking face.

All geometry is in normalised image units (x, y in [0, 1], y down) so one identity renders
the same at any resolution. Colours are RGB floats in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Skin tones from light to dark; an identity interpolates between two neighbours.
_SKIN = np.array(
    [
        [0.98, 0.85, 0.74],
        [0.94, 0.76, 0.62],
        [0.85, 0.64, 0.48],
        [0.72, 0.52, 0.37],
        [0.55, 0.38, 0.26],
        [0.40, 0.27, 0.18],
    ]
)
_HAIR = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.25, 0.15, 0.08],
        [0.50, 0.32, 0.15],
        [0.85, 0.70, 0.40],
        [0.60, 0.22, 0.10],
        [0.55, 0.55, 0.55],
        [0.90, 0.90, 0.88],
    ]
)
_IRIS = np.array([[0.25, 0.15, 0.07], [0.35, 0.50, 0.75], [0.30, 0.50, 0.30], [0.10, 0.07, 0.05]])
HAIR_STYLES = ("short", "long", "bald", "fringe", "bun")
BACKGROUNDS = ("gradient", "stripes", "blobs", "vignette")


@dataclass(frozen=True)
class Identity:
    """The static look of one face. Lengths are fractions of the frame size."""

    bg_kind: str
    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    bg_accent: tuple[float, float, float]
    bg_freq: float
    bg_phase: float
    shirt: tuple[float, float, float]
    face_cx: float
    face_cy: float
    face_rx: float
    face_ry: float
    jaw: float  # 0 = round chin, 1 = narrow chin
    skin: tuple[float, float, float]
    light: float  # horizontal light direction in [-1, 1]
    hair_style: str
    hair: tuple[float, float, float]
    hairline: float  # how far the hair comes down the forehead, fraction of face_ry
    eye_y: float  # relative to face centre, fraction of face_ry (negative = up)
    eye_dx: float  # half distance between eyes, fraction of face_rx
    eye_rx: float
    eye_ry: float
    iris: tuple[float, float, float]
    brow_dy: float  # brow height above the eye centre, in eye_ry units
    brow_thick: float
    brow_tilt: float
    brow: tuple[float, float, float]
    nose_len: float
    mouth_y: float  # relative to face centre, fraction of face_ry
    mouth_w: float  # half-width of a neutral mouth, fraction of the frame
    lip: tuple[float, float, float]
    lip_thick: float

    def to_dict(self) -> dict:
        return asdict(self)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity. Every field comes from ``rng``, so the seed fixes the face."""

    def mix(table: np.ndarray) -> tuple[float, float, float]:
        i = int(rng.integers(0, len(table) - 1))
        a = float(rng.random())
        c = (1 - a) * table[i] + a * table[i + 1]
        return _rgb(c * rng.uniform(0.93, 1.07, 3))

    def colour(lo: float = 0.05, hi: float = 0.95) -> tuple[float, float, float]:
        return _rgb(rng.uniform(lo, hi, 3))

    skin = mix(_SKIN)
    bg_top = colour()
    face_rx = float(rng.uniform(0.25, 0.31))
    return Identity(
        bg_kind=str(rng.choice(BACKGROUNDS)),
        bg_top=bg_top,
        bg_bottom=_rgb(np.array(bg_top) * rng.uniform(0.45, 1.0) + rng.uniform(-0.1, 0.1, 3)),
        bg_accent=colour(),
        bg_freq=float(rng.uniform(2.0, 7.0)),
        bg_phase=float(rng.uniform(0, 2 * np.pi)),
        shirt=colour(),
        face_cx=float(rng.uniform(0.47, 0.53)),
        face_cy=float(rng.uniform(0.47, 0.52)),
        face_rx=face_rx,
        face_ry=float(face_rx * rng.uniform(1.18, 1.40)),
        jaw=float(rng.uniform(0.0, 1.0)),
        skin=skin,
        light=float(rng.uniform(-1, 1)),
        hair_style=str(rng.choice(HAIR_STYLES)),
        hair=mix(_HAIR),
        hairline=float(rng.uniform(0.45, 0.75)),
        eye_y=float(rng.uniform(-0.22, -0.10)),
        eye_dx=float(rng.uniform(0.36, 0.46)),
        eye_rx=float(rng.uniform(0.040, 0.055)),
        eye_ry=float(rng.uniform(0.022, 0.032)),
        iris=mix(_IRIS),
        brow_dy=float(rng.uniform(1.6, 2.4)),
        brow_thick=float(rng.uniform(0.008, 0.017)),
        brow_tilt=float(rng.uniform(-0.25, 0.25)),
        brow=_rgb(np.array(mix(_HAIR)) * rng.uniform(0.6, 0.9)),
        nose_len=float(rng.uniform(0.16, 0.26)),
        mouth_y=float(rng.uniform(0.45, 0.55)),
        mouth_w=float(rng.uniform(0.11, 0.14)),
        lip=_rgb(np.array(skin) * np.array([0.95, 0.55, 0.55]) * rng.uniform(0.75, 1.05) + [0.08, 0.0, 0.02]),
        lip_thick=float(rng.uniform(0.010, 0.018)),
    )


def _rgb(c: np.ndarray) -> tuple[float, float, float]:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))
