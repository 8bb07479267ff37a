"""Per-pixel loss weights shared by teacher training (Eq. 1) and distillation (Eq. 7–8)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_motion_weight(strength: float) -> None:
    """The range both training configs accept for ``motion_weight``."""
    if not 0.0 <= strength <= 100.0:
        raise ValueError(f"motion_weight must be in [0, 100] (0: uniform pixels), got {strength}")


def motion_weight_map(x0: Tensor, strength: float) -> Tensor:
    """Per-latent-pixel weight of the loss (Eq. 1, Eq. 7) that favours what moves within the chunk: (B, 1, 1, h, w).

    ``s`` = the pixel's std over the chunk's F clean frames (mean over channels), ``w = (1 + k s / mean(s))
    / (1 + k)``: mean 1 per sample (the loss keeps its scale), ``1 / (1 + k)`` on still background. In a
    talking-head chunk the mouth moves most (then eyes and the head's outline), so this is a lip-region
    weighting (as Hallo's lip / face masks) that needs no landmarks: the tiny teacher trained uniformly
    let mouth *width* ignore the audio (correlation with the width the audio calls for ~0 vs 0.65 on
    ground truth), a change of a few pixels the uniform loss barely sees.
    """
    if strength == 0.0:
        return torch.ones_like(x0[:, :1, :1])
    if x0.shape[1] < 2:
        raise ValueError(f"a motion weight needs chunks of >= 2 frames to see motion, got {x0.shape[1]}; "
                         f"use motion_weight 0")
    s = x0.float().std(dim=1).mean(dim=1, keepdim=True)  # (B, 1, h, w)
    s = s / s.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    return ((1.0 + strength * s) / (1.0 + strength)).unsqueeze(1)  # (B, 1, 1, h, w)
