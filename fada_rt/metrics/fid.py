"""FID analogue: Fréchet distance of per-frame features of two sets of clips.

With the default ``FixedFrameFeatures`` this is the synthetic world's FID analogue; pass an
``extractors.inception.InceptionFeatures`` (pool3, 2048-d) for the real FID.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fada_rt.metrics.features import FixedFrameFeatures
from fada_rt.metrics.frechet import frechet_distance_of

FrameExtractor = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> (N, D)


def frame_features(clips: Sequence[np.ndarray], extractor: FrameExtractor, *, frame_stride: int = 1) -> np.ndarray:
    """Features of every ``frame_stride``-th frame of every clip, stacked: (sum N_i, D)."""
    if not clips:
        raise ValueError("no clips given")
    return np.concatenate([extractor(np.asarray(c)[::frame_stride]) for c in clips])


def fid(
    pred: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    *,
    extractor: FrameExtractor | None = None,
    frame_stride: int = 1,
) -> float:
    """Fréchet distance between the frame-feature Gaussians of ``pred`` and ``ref`` clips."""
    extractor = extractor or FixedFrameFeatures()
    return frechet_distance_of(
        frame_features(pred, extractor, frame_stride=frame_stride),
        frame_features(ref, extractor, frame_stride=frame_stride),
    )
