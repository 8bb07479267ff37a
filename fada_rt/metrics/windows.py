"""Metrics of long sequences, window by window (docs/design.md §8: an avatar for a whole call).

A 3 s clip hides drift: each chunk's motion frames are the model's own previous output, so an error
that survives one chunk is fed to the next. Here a sequence is cut into windows (10 s by default) and
each window is scored on its own:

* ``identity_error`` against the portrait, ``jitter``, and ``sync_distance`` / ``sync_confidence``
  (the offset search inside the window) as in :mod:`fada_rt.metrics.suite`;
* ``mouth_open_corr`` / ``mouth_width_corr``: how the mouth follows the audio inside the window;
* ``head_sway``: the std of the head's estimated horizontal and vertical offset inside the window (mean of
  the two, in pixels of the frame): how much the head moves (the ground truth sways; a model held to its
  portrait moves less, which lowers its identity error and drift below the ground truth's);
* ``drift``: the mean absolute difference, in 8-bit levels over the pixels outside the mouth box, of
  the window's mean frame against the first window's mean frame. Head sway and blinks average out in
  a window's mean frame (the ground truth's drift is their residue, ~1–2 levels); a background turning
  to noise or a face losing its colours does not.

FID* of a window index is computed over all sequences of a set together (a Fréchet distance needs
many frames), in :mod:`benchmarks.long_run`. Silence (frames labelled silent by the sequence
generator): the mean and 95th percentile of the estimated mouth openness there, and the jitter of
the silent stretches — the mouth should stay shut and the face calm for any length of silence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fada_rt.metrics.identity import identity_error
from fada_rt.metrics.jitter import temporal_jitter
from fada_rt.metrics.mouth import MouthEstimator
from fada_rt.metrics.regions import outside_mouth_mask
from fada_rt.metrics.suite import follow_correlations
from fada_rt.metrics.sync import sync_score

WINDOW_KEYS = ("identity_error", "sync_distance", "sync_confidence", "mouth_open_corr", "mouth_width_corr",
               "jitter", "drift", "head_sway")
MIN_WINDOW = 25  # frames: a shorter tail window is left out (the offset search needs them)


def window_bounds(num_frames: int, window: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive windows of ``window`` frames; a tail shorter than MIN_WINDOW is dropped."""
    if window < MIN_WINDOW:
        raise ValueError(f"a window needs at least {MIN_WINDOW} frames, got {window}")
    return [(a, min(a + window, num_frames)) for a in range(0, num_frames, window)
            if min(a + window, num_frames) - a >= MIN_WINDOW]


def mean_frame(frames: np.ndarray) -> np.ndarray:
    """float64 (H, W, 3) mean of uint8 frames (T, H, W, 3) in 8-bit levels."""
    return np.asarray(frames).mean(axis=0, dtype=np.float64)


def drift_figure(window_mean: np.ndarray, first_mean: np.ndarray) -> float:
    """Mean |window mean frame - first window mean frame| over the pixels outside the mouth box (levels)."""
    if window_mean.shape != first_mean.shape or window_mean.shape[0] != window_mean.shape[1]:
        raise ValueError(f"need square mean frames of one size, got {window_mean.shape} and {first_mean.shape}")
    mask = outside_mouth_mask(window_mean.shape[0])
    return float(np.abs(window_mean - first_mean)[mask].mean())


def sequence_windows(frames: np.ndarray, audio: np.ndarray, *, portrait: np.ndarray, estimator: MouthEstimator,
                     window: int) -> list[dict[str, float]]:
    """Per-window scores of one sequence's frames (T, H, W, 3) with its 16 kHz ``audio``."""
    states = estimator.face_states(frames)  # once for the whole sequence
    seen = np.stack([states["open"], states["width"]], 1)  # (T, 2)
    called = estimator.audio_mouth(audio, frames.shape[0])
    heard = np.stack([called["open"], called["width"]], 1)  # (T, 2)
    size = frames.shape[1]
    bounds = window_bounds(frames.shape[0], window)
    first = mean_frame(frames[bounds[0][0]:bounds[0][1]])
    out = []
    for a, b in bounds:
        s = sync_score(seen[a:b], heard[a:b], max_offset=min(15, (b - a) // 3))
        row = {"start": a, "stop": b, "identity_error": identity_error(frames[a:b], portrait),
               "sync_distance": s.distance, "sync_confidence": s.confidence, "jitter": temporal_jitter(frames[a:b]),
               "drift": drift_figure(mean_frame(frames[a:b]), first),
               "head_sway": float((states["dx"][a:b].std() + states["dy"][a:b].std()) / 2 * size)}
        follow = follow_correlations(seen[a:b], heard[a:b])
        out.append(row | {k: follow.get(k, float("nan")) for k in ("mouth_open_corr", "mouth_width_corr")})
    return out


def silence_scores(frames: np.ndarray, silent: np.ndarray, *, estimator: MouthEstimator) -> dict[str, Any]:
    """Mouth openness (mean, 95th percentile) over the ``silent`` frames and the jitter of silent runs of
    at least 3 frames (weighted by length); NaN where the sequence has no silence."""
    silent = np.asarray(silent, bool)
    if silent.shape[0] != frames.shape[0]:
        raise ValueError(f"silent has {silent.shape[0]} entries for {frames.shape[0]} frames")
    if not silent.any():
        return {"silent_frames": 0, "silence_open": float("nan"), "silence_open_p95": float("nan"),
                "silence_jitter": float("nan")}
    openness = estimator.face_states(frames[silent])["open"]
    runs = _runs(silent)
    jit = [(temporal_jitter(frames[a:b]), b - a) for a, b in runs if b - a >= 3]
    return {"silent_frames": int(silent.sum()), "longest_silence_frames": max(b - a for a, b in runs),
            "silence_open": float(openness.mean()), "silence_open_p95": float(np.percentile(openness, 95)),
            "silence_jitter": float(sum(j * n for j, n in jit) / sum(n for _, n in jit)) if jit else float("nan")}


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in a bool (T,) array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def slope_per_minute(values: list[float], starts: list[int], *, window: int, fps: int) -> float:
    """Least-squares slope of a per-window metric against the windows' centre times, per minute."""
    x = (np.asarray(starts, np.float64) + window / 2) / fps / 60.0
    y = np.asarray(values, np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])
