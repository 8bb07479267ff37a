"""Quality tiers of the synthetic world (docs/design.md §6, paper §3.2).

Tier A holds clean, synced clips only; tier B ⊇ A adds four kinds of imperfect clips:
desynced (audio shifted by 0.2–1 s), expressive (sustained vowels, larger motion),
degraded (noise, blur, JPEG) and frozen-mouth. The teacher trains on A, the student
distils on B. A clip's kind is drawn from its own seed, so clip i is the same clip whatever
the number of clips or workers.
"""

from __future__ import annotations

import numpy as np

KINDS = ("clean", "desynced", "expressive", "degraded", "frozen")
TIERS = ("A", "B")
# Tier B mix: half clean (these are tier A too), the rest split over the imperfect kinds.
B_MIX = {"clean": 0.5, "desynced": 0.125, "expressive": 0.125, "degraded": 0.125, "frozen": 0.125}
MIN_OFFSET_FRAMES, MAX_OFFSET_FRAMES = 5, 25  # 0.2 s .. 1.0 s at 25 fps


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    return tier


def choose_kind(rng: np.random.Generator, tier: str) -> str:
    """The kind of one clip: always "clean" in tier A, drawn from ``B_MIX`` in tier B."""
    check_tier(tier)
    draw = float(rng.random())  # drawn in both tiers so later draws do not depend on the tier
    if tier == "A":
        return "clean"
    edges = np.cumsum(list(B_MIX.values()))
    return KINDS[int(np.searchsorted(edges, draw, side="right"))]


def tier_of(kind: str) -> str:
    """The smallest tier holding a clip of this kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return "A" if kind == "clean" else "B"


def draw_offset_frames(rng: np.random.Generator) -> int:
    """A desync offset in frames, 5..25 (0.2..1 s), either sign.

    Positive: the audio lags the video (the sound of frame k is heard at frame k + offset).
    """
    magnitude = int(rng.integers(MIN_OFFSET_FRAMES, MAX_OFFSET_FRAMES + 1))
    return magnitude if rng.random() < 0.5 else -magnitude
