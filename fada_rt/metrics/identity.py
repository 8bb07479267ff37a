"""Identity error: how far generated frames drift from the reference portrait's look.

Default embedding: the frame area-resized to 32x32, Gaussian-blurred (sigma 1 px at 32,
which forgives the head's small sway) with the mouth box removed (``regions``), as values in
[0, 1]. identity error = mean over frames of the RMS difference between the frame's and the
reference's embeddings (0 = same look; a different synthetic identity scores ~0.2–0.4).
A real-world face-recognition embedding can be passed as ``embed``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from fada_rt.metrics.regions import outside_mouth_mask

EMBED_SIZE = 32


def appearance_embedding(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, D) blurred non-mouth pixels in [0, 1]."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3), got shape {frames.shape}")
    small = np.stack([cv2.resize(f, (EMBED_SIZE, EMBED_SIZE), interpolation=cv2.INTER_AREA) for f in frames])
    small = gaussian_filter(small.astype(np.float64) / 255.0, sigma=(0, 1.0, 1.0, 0), mode="nearest")
    return small[:, outside_mouth_mask(EMBED_SIZE)].reshape(len(frames), -1)


def identity_error(
    frames: np.ndarray,
    reference: np.ndarray,
    *,
    embed: Callable[[np.ndarray], np.ndarray] = appearance_embedding,
) -> float:
    """Mean RMS embedding difference of ``frames`` (T, H, W, 3) to ``reference`` (H', W', 3)."""
    reference = np.asarray(reference)
    if reference.ndim != 3:
        raise ValueError(f"reference must be one image (H, W, 3), got shape {reference.shape}")
    e = embed(frames)
    r = embed(reference[None])
    return float(np.sqrt(((e - r) ** 2).mean(axis=1)).mean())
