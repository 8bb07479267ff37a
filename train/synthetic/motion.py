"""Per-frame motion of the synthetic world (docs/design.md §6).

The mouth follows the audio's articulation (openness, width) averaged over each frame's
640 samples; head sway, roll and blinks are random processes independent of the audio —
the "details not covered by audio" (paper §3.2) that a model must take from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fada_rt.clips import FPS, SAMPLES_PER_FRAME


@dataclass(frozen=True)
class Motion:
    """Per-frame states, each float32 (T,).

    open, width in [0, 1]; blink in [0, 1] (1 = eyes shut); dx, dy head offset as a fraction
    of the frame; roll in radians; brow raise in [0, 1].
    """

    open: np.ndarray
    width: np.ndarray
    blink: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    roll: np.ndarray
    brow: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.open.shape[0])

    def to_lists(self) -> dict[str, list[float]]:
        return {k: [round(float(v), 5) for v in getattr(self, k)] for k in self.__dataclass_fields__}


def mouth_per_frame(per_sample: np.ndarray, num_frames: int) -> np.ndarray:
    """Mean of a per-sample track over each frame's samples [640 k, 640 (k+1)) -> (T,)."""
    need = num_frames * SAMPLES_PER_FRAME
    x = np.zeros(need, np.float32)
    x[: min(need, per_sample.shape[0])] = per_sample[:need]
    return x.reshape(num_frames, SAMPLES_PER_FRAME).mean(axis=1)


def sample_motion(
    *,
    rng: np.random.Generator,
    openness: np.ndarray,
    width: np.ndarray,
    expressive: bool = False,
    frozen_mouth: bool = False,
) -> Motion:
    """Frame-rate motion for mouth tracks ``openness``/``width`` already at frame rate (T,)."""
    t = openness.shape[0]
    sway = 2.0 if expressive else 1.0
    mouth = openness * (1.15 if expressive else 1.0)
    if frozen_mouth:  # the mouth sticks in one pose while the audio talks on
        mouth = np.full(t, rng.uniform(0.0, 0.35), np.float32)
        width = np.full(t, rng.uniform(0.3, 0.7), np.float32)
    return Motion(
        open=np.clip(mouth, 0, 1).astype(np.float32),
        width=np.clip(width, 0, 1).astype(np.float32),
        blink=_blinks(rng, t),
        dx=_smooth_noise(rng, t, amplitude=0.025 * sway, period_s=(1.5, 5.0)),
        dy=_smooth_noise(rng, t, amplitude=0.015 * sway, period_s=(1.0, 4.0)),
        roll=_smooth_noise(rng, t, amplitude=0.05 * sway, period_s=(2.0, 6.0)),
        brow=np.clip(_smooth_noise(rng, t, amplitude=0.5 * sway, period_s=(1.0, 3.0)), 0, 1),
    )


def still_motion(num_frames: int) -> Motion:
    """A neutral, motionless face (mouth closed, eyes open): for portraits."""
    z = np.zeros(num_frames, np.float32)
    return Motion(open=z, width=z + 0.5, blink=z, dx=z, dy=z, roll=z, brow=z)


def _smooth_noise(rng: np.random.Generator, t: int, *, amplitude: float, period_s: tuple[float, float]) -> np.ndarray:
    """A sum of three sinusoids with random periods and phases, scaled to ``amplitude``."""
    time = np.arange(t) / FPS
    periods = rng.uniform(*period_s, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    weights = rng.uniform(0.3, 1.0, 3)
    x = (weights[:, None] * np.sin(2 * np.pi * time[None] / periods[:, None] + phases[:, None])).sum(0)
    return (amplitude * x / weights.sum() * 1.6).astype(np.float32)


def _blinks(rng: np.random.Generator, t: int) -> np.ndarray:
    """Eye closure (1 = shut): blinks at random intervals (mean 3 s), ~200 ms each."""
    out = np.zeros(t, np.float32)
    frame = rng.uniform(0.0, 3.0) * FPS
    shape = np.array([0.5, 1.0, 1.0, 0.6, 0.25], np.float32)  # fast close, slower open
    while frame < t:
        k = int(frame)
        n = min(len(shape), t - k)
        out[k : k + n] = np.maximum(out[k : k + n], shape[:n])
        frame += rng.uniform(1.2, 5.0) * FPS
    return out
