"""Per-pixel loss weights shared by teacher training (Eq. 1) and distillation (Eq. 7–8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from train.data import ChunkSampler

#: where the motion weight's per-pixel std comes from: each chunk's own frames, or the training set's mean
MOTION_MAPS = ("chunk", "dataset")


def check_motion_weight(strength: float) -> None:
    """The range both training configs accept for ``motion_weight``."""
    if not 0.0 <= strength <= 100.0:
        raise ValueError(f"motion_weight must be in [0, 100] (0: uniform pixels), got {strength}")


def check_motion_map(kind: str) -> None:
    if kind not in MOTION_MAPS:
        raise ValueError(f"motion_map must be one of {MOTION_MAPS}, got {kind!r}")


def motion_weight_map(x0: Tensor, strength: float) -> Tensor:
    """Per-latent-pixel weight of the loss (Eq. 1, Eq. 7) that favours what moves within the chunk: (B, 1, 1, h, w).

    ``s`` = the pixel's std over the chunk's F clean frames (mean over channels), ``w = (1 + k s / mean(s))
    / (1 + k)``: mean 1 per sample (the loss keeps its scale), ``1 / (1 + k)`` on still background. In a
    talking-head chunk the mouth moves most (then eyes and the head's outline), so this is a lip-region
    weighting (as Hallo's lip / face masks) that needs no landmarks: the tiny teacher trained uniformly
    let mouth *width* ignore the audio (correlation with the width the audio calls for ~0 vs 0.65 on
    ground truth), a change of a few pixels the uniform loss barely sees.

    The weight depends on the target itself, so the loss's minimiser is not the conditional mean but
    ``E[w x0 | c] / E[w | c]``: tilted, per pixel, towards samples where that pixel moves more (mouths that
    over-move and sit wider than the audio calls for). :func:`dataset_motion_map` is the unbiased variant.
    """
    if strength == 0.0:
        return torch.ones_like(x0[:, :1, :1])
    return _weights(_pixel_motion(x0), strength)[:, None, None]  # (B, 1, 1, h, w)


def pixel_weights(x0: Tensor, strength: float, fixed: Tensor | None) -> Tensor:
    """The loss's per-pixel weight, (B, 1, 1, h, w): ``fixed`` (a :func:`dataset_motion_map`) for every
    sample, or else each chunk's own :func:`motion_weight_map`."""
    if fixed is None:
        return motion_weight_map(x0, strength)
    return fixed.expand(x0.shape[0], -1, -1, -1, -1)


def fixed_motion_map(kind: str, sampler: ChunkSampler, strength: float) -> Tensor | None:
    """The fixed map a ``motion_map`` setting asks for: None for "chunk" (each chunk's own map)."""
    check_motion_map(kind)
    return dataset_motion_map(sampler, strength) if kind == "dataset" else None


def _pixel_motion(x0: Tensor) -> Tensor:
    """Each latent pixel's std over a chunk's frames, mean over channels: (B, F, C, h, w) -> (B, h, w)."""
    if x0.shape[1] < 2:
        raise ValueError(f"a motion weight needs chunks of >= 2 frames to see motion, got {x0.shape[1]}; "
                         f"use motion_weight 0")
    return x0.float().std(dim=1).mean(dim=1)


def _weights(s: Tensor, strength: float) -> Tensor:
    s = s / s.mean(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    return (1.0 + strength * s) / (1.0 + strength)


def dataset_motion_map(sampler: ChunkSampler, strength: float, *, batches: int = 32, batch_size: int = 8) -> Tensor:
    """The motion weight with ``s`` = the training set's mean per-pixel std over a chunk: (1, 1, 1, h, w).

    One fixed map for every sample, so weighting Eq. 1 with it keeps the conditional mean as the loss's
    minimiser (a per-chunk map does not, see :func:`motion_weight_map`). It is a lip-region weight when
    the faces are aligned, as face-centred crops (``train.prepare``) and the synthetic world's are.
    Deterministic in the sampler's seed: ``batches`` x ``batch_size`` chunks drawn at steps no run reaches.
    """
    if strength == 0.0:
        return torch.ones(1, 1, 1, sampler.config.latent_size, sampler.config.latent_size)
    motion = torch.cat([_pixel_motion(sampler.batch(step=2**41 + i, batch_size=batch_size).x0)
                        for i in range(batches)])  # (batches * batch_size, h, w)
    return _weights(motion.mean(0), strength)[None, None, None]
