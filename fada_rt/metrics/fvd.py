"""FVD analogue: Fréchet distance of features of 16-frame windows of two sets of clips.

Windows of ``frames_per_clip`` frames (16) are taken every ``stride`` frames (default 8)
from every clip. With the default ``FixedClipFeatures`` this is the synthetic world's FVD
analogue; pass an ``extractors.i3d.I3DFeatures`` for the real FVD (I3D logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fada_rt.metrics.features import FixedClipFeatures, clip_windows
from fada_rt.metrics.frechet import frechet_distance_of


def window_features(clips: Sequence[np.ndarray], extractor, *, stride: int | None = None) -> np.ndarray:
    """Features of all windows of all clips: (N_windows, D)."""
    length = extractor.frames_per_clip
    stride = stride or length // 2
    feats = [extractor(w) for w in (clip_windows(np.asarray(c), length=length, stride=stride) for c in clips) if len(w)]
    if sum(len(f) for f in feats) < 2:
        raise ValueError(f"need at least two windows of {length} frames across the clips; the clips are too short or too few")
    return np.concatenate(feats)


def fvd(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray], *, extractor=None, stride: int | None = None) -> float:
    """Fréchet distance between the window-feature Gaussians of ``pred`` and ``ref`` clips."""
    extractor = extractor or FixedClipFeatures()
    return frechet_distance_of(window_features(pred, extractor, stride=stride), window_features(ref, extractor, stride=stride))
