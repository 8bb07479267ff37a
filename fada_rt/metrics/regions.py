"""Face regions shared by the identity and jitter metrics (frames are face-centred crops).

The mouth box (normalised coordinates) holds the mouth of every synthetic identity in every
pose, and the lower-middle of a face-centred real crop; metrics that must not count speech
motion leave it out.
"""

from __future__ import annotations

import numpy as np

MOUTH_ROWS = (0.55, 0.88)
MOUTH_COLS = (0.22, 0.78)


def outside_mouth_mask(size: int) -> np.ndarray:
    """bool (size, size): True outside the mouth box."""
    c = (np.arange(size) + 0.5) / size
    rows = (c >= MOUTH_ROWS[0]) & (c <= MOUTH_ROWS[1])
    cols = (c >= MOUTH_COLS[0]) & (c <= MOUTH_COLS[1])
    return ~(rows[:, None] & cols[None, :])
