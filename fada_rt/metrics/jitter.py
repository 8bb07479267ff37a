"""Temporal jitter: frame-to-frame change that smooth motion does not explain.

jitter = mean |x[t+1] - 2 x[t] + x[t-1]| over frames t, colour channels and the pixels
outside the mouth box (``regions``), with frames area-resized to 64x64 and x in 8-bit levels.
Smooth head sway and blinks have small second differences; flicker, shaking and
frame-independent noise have large ones. Compare a prediction with its reference (the
synthetic ground truth scores ~0.2–1 levels).
"""

from __future__ import annotations

import numpy as np

from fada_rt.metrics.mouth import frames_to_input
from fada_rt.metrics.regions import outside_mouth_mask

SIZE = 64


def temporal_jitter(frames: np.ndarray) -> float:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 3:
        raise ValueError(f"need at least 3 frames (T, H, W, 3), got shape {frames.shape}")
    x = (frames_to_input(frames, SIZE).numpy().astype(np.float64) + 1.0) * 127.5  # (T, 3, 64, 64)
    second = np.abs(x[2:] - 2 * x[1:-1] + x[:-2])  # (T-2, 3, 64, 64)
    return float(second[:, :, outside_mouth_mask(SIZE)].mean())
