"""LSE-style audio-visual sync by offset search (after SyncNet's LSE-C / LSE-D).

Given per-frame embeddings of the video ``v`` (T, D) and of the audio ``a`` (T, D), for
every offset ``o`` in [-max_offset, max_offset]::

    d(o) = mean_k || v[k] - a[k + o] ||_2      over frames where both exist

* offset     = argmin_o d(o). Positive: the audio lags the video (the sound of video frame
  k is heard at frame k + offset); a clip whose audio was delayed by 5 frames scores +5.
* distance   (LSE-D) = min_o d(o): lower is better.
* confidence (LSE-C) = median_o d(o) - min_o d(o): higher is better; a mouth that ignores
  the audio (frozen, or unrelated) gives a flat d(o) and a confidence near 0.

Synthetic world: v = estimated mouth openness and width from the frames, a = the openness and
width the audio calls for (both from ``MouthEstimator``), D = 2. Real world: SyncNet's
video and audio embeddings (``extractors.syncnet``) on 5-frame / 0.2 s windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_OFFSET = 15
MIN_OVERLAP = 10


@dataclass(frozen=True)
class SyncResult:
    offset: int
    confidence: float
    distance: float
    distances: np.ndarray  # (2 max_offset + 1,) d(o) for o = -max_offset..max_offset

    def to_dict(self) -> dict:
        return {"offset": self.offset, "confidence": self.confidence, "distance": self.distance}


def offset_distances(video: np.ndarray, audio: np.ndarray, *, max_offset: int = MAX_OFFSET) -> np.ndarray:
    """d(o) for o in -max_offset..max_offset, float64 (2 max_offset + 1,)."""
    video, audio = _as_2d(video), _as_2d(audio)
    if video.shape != audio.shape:
        raise ValueError(f"video and audio embeddings must have the same shape, got {video.shape} and {audio.shape}")
    t = video.shape[0]
    if t - max_offset < MIN_OVERLAP:
        raise ValueError(f"a clip of {t} frames is too short for offsets up to ±{max_offset}: need at least {max_offset + MIN_OVERLAP} frames")
    out = np.empty(2 * max_offset + 1)
    for i, o in enumerate(range(-max_offset, max_offset + 1)):
        v = video[max(0, -o) : t - max(0, o)]
        a = audio[max(0, o) : t - max(0, -o)]
        out[i] = float(np.linalg.norm(v - a, axis=1).mean())
    return out


def sync_score(video: np.ndarray, audio: np.ndarray, *, max_offset: int = MAX_OFFSET) -> SyncResult:
    """Offset, confidence (LSE-C) and distance (LSE-D) of one clip (see module doc)."""
    d = offset_distances(video, audio, max_offset=max_offset)
    best = int(np.argmin(d))
    return SyncResult(
        offset=best - max_offset,
        confidence=float(np.median(d) - d[best]),
        distance=float(d[best]),
        distances=d,
    )


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (T,) or (T, D), got shape {x.shape}")
    return x
