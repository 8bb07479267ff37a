"""How the mouth closes when speech stops, from a per-frame estimate of its openness.

Input: the mouth openness of each frame (e.g. ``MouthEstimator.face_states(frames)["open"]``, in the
synthetic generator's units: 0 is shut, ~0.6-1 wide open) and the clip's spoken stretches
``[(start_s, stop_s), ...]`` in the video's time (the labels' ``speech_segments`` of world speech v2).
Frame ``i`` is at time ``i / fps`` (its presentation time; it shows the samples ``[i / fps, (i + 1) / fps)``),
the clip ends at ``T / fps``.

* **Closure delay**, for every segment end followed by at least ``min_gap`` s of silence (up to the next
  segment's start or the clip's end): the time from the end to the first frame at or after it whose
  openness is ``<= threshold``. A mouth that stays open through the whole silence counts as the silence's
  length and is flagged ``never_closed``.
* **Silence openness**: the mean and 95th percentile over the frames of the silences proper — at least
  0.2 s after a segment end and at least 0.1 s before the next segment's start; before the first segment,
  from the clip start to 0.1 s before it; a clip without segments is silent throughout.

:func:`closure_events` collects one clip's raw events, :func:`summarize_closure` pools the events of any
number of clips (every end and every silent frame weighs the same), :func:`mouth_closure` does both for
one clip. Scores with nothing to score (no qualifying end, no silent frame) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SETTLE_AFTER = 0.2  # s after a segment end before a frame counts as silence proper
SETTLE_BEFORE = 0.1  # s before a segment start (a mouth may open for the coming sound)
CLOSED_WITHIN = 0.2  # s: the "closed_within_0.2s" score
_EPS = 1e-9  # float slack for comparing frame times with segment bounds

Segments = Sequence[Sequence[float]]


@dataclass(frozen=True)
class ClosureEvents:
    """One clip's raw closure events: a delay per qualifying segment end (s), whether that mouth never
    closed, and the openness of the silent frames."""

    delays: np.ndarray  # (E,) float64
    never: np.ndarray  # (E,) bool
    silence_open: np.ndarray  # (N,) float64


def cut_segments(segments: Segments, duration: float) -> list[tuple[float, float]]:
    """The segments inside ``[0, duration]`` s (a clip cut to its first frames): later ones dropped, the
    last one cut at ``duration``."""
    return [(float(a), min(float(b), duration)) for a, b in segments if float(a) < duration]


def check_segments(segments: Segments, duration: float, *, fps: int) -> list[tuple[float, float]]:
    """``segments`` as sorted, non-overlapping ``(start, stop)`` pairs of seconds inside the clip (half a frame
    of slack at its end, for labels rounded to 0.1 ms); ValueError otherwise."""
    out: list[tuple[float, float]] = []
    for k, seg in enumerate(segments):
        if len(seg) != 2:
            raise ValueError(f"segment {k} must be a (start_s, stop_s) pair, got {seg!r}")
        a, b = float(seg[0]), float(seg[1])
        if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b <= a:
            raise ValueError(f"segment {k} must have 0 <= start < stop (seconds), got ({a}, {b})")
        if out and a < out[-1][1]:
            raise ValueError(f"segments must be sorted and not overlap: segment {k} ({a}, {b}) starts before "
                             f"segment {k - 1} ends ({out[-1][1]})")
        if b > duration + 0.5 / fps:
            raise ValueError(f"segment {k} ({a}, {b}) ends after the clip's {duration:g} s; cut the segments to "
                             f"the frames scored first (cut_segments)")
        out.append((a, min(b, duration)))
    return out


def closure_events(openness: np.ndarray, segments: Segments, *, fps: int, threshold: float = 0.1,
                   min_gap: float = 0.3) -> ClosureEvents:
    """One clip's closure delays and silent-frame openness (see the module docstring)."""
    openness = np.asarray(openness)
    if openness.ndim != 1 or openness.size == 0:
        raise ValueError(f"openness must be a non-empty (T,) array, got shape {openness.shape}")
    if not np.issubdtype(openness.dtype, np.number) or not np.isfinite(openness).all():
        raise ValueError("openness must hold finite numbers (one per frame)")
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    if not (math.isfinite(min_gap) and min_gap >= 0):
        raise ValueError(f"min_gap must be >= 0 seconds, got {min_gap!r}")
    openness = openness.astype(np.float64)
    duration = openness.size / fps
    segs = check_segments(segments, duration, fps=fps)
    times = np.arange(openness.size) / fps
    delays, never = [], []
    silent = np.zeros(openness.size, bool)
    if segs:
        silent |= times <= segs[0][0] - SETTLE_BEFORE + _EPS
    else:
        silent[:] = True
    for k, (_, end) in enumerate(segs):
        until = segs[k + 1][0] if k + 1 < len(segs) else duration
        margin = SETTLE_BEFORE if k + 1 < len(segs) else 0.0
        silent |= (times >= end + SETTLE_AFTER - _EPS) & (times <= until - margin + _EPS)
        gap = until - end
        if gap < min_gap - _EPS:
            continue
        window = (times >= end - _EPS) & (times < until - _EPS)
        closed = np.flatnonzero(window & (openness <= threshold))
        delays.append(min(max(times[closed[0]] - end, 0.0), gap) if closed.size else gap)
        never.append(not closed.size)
    return ClosureEvents(delays=np.asarray(delays, np.float64), never=np.asarray(never, bool),
                         silence_open=openness[silent])


def summarize_closure(events: Sequence[ClosureEvents]) -> dict[str, float | int]:
    """The closure scores of one or more clips' events, pooled (NaN where there is nothing to score)."""
    delays = np.concatenate([e.delays for e in events]) if events else np.zeros(0)
    never = np.concatenate([e.never for e in events]) if events else np.zeros(0, bool)
    silence = np.concatenate([e.silence_open for e in events]) if events else np.zeros(0)
    nan = float("nan")
    return {
        "closure_delay_mean": float(delays.mean()) if delays.size else nan,
        "closure_delay_p90": float(np.percentile(delays, 90)) if delays.size else nan,
        "closed_within_0.2s": float(np.mean(~never & (delays <= CLOSED_WITHIN + _EPS))) if delays.size else nan,
        "never_closed": int(never.sum()),
        "ends": int(delays.size),
        "silence_open_mean": float(silence.mean()) if silence.size else nan,
        "silence_open_p95": float(np.percentile(silence, 95)) if silence.size else nan,
        "silence_frames": int(silence.size),
    }


def mouth_closure(openness: np.ndarray, segments: Segments, *, fps: int, threshold: float = 0.1,
                  min_gap: float = 0.3) -> dict[str, float | int]:
    """How one clip's mouth closes when speech stops: ``closure_delay_mean`` / ``_p90`` (s),
    ``closed_within_0.2s`` (fraction of ends), ``never_closed`` and ``ends`` (counts), ``silence_open_mean`` /
    ``_p95`` and ``silence_frames``. ``openness`` (T,) per frame at ``fps``; ``segments``: the spoken
    ``(start_s, stop_s)`` stretches, sorted, inside the clip."""
    return summarize_closure([closure_events(openness, segments, fps=fps, threshold=threshold, min_gap=min_gap)])
