"""Adaptive mixed supervision: the ground-truth loss weight W(R) (paper Eq. 7–8, docs/design.md §3.5).

``R = L_GT / L_distill`` per sample, detached. Eq. 8 ("adaptive")::

    W = W0 R**s                                  if R <  R_p
    W = W0 R_p**s (R_d - R) / (R_d - R_p)        if R_p <= R < R_d
    W = 0                                        if R >= R_d

continuous at R_p, zero from R_d on. Table 3's ablations: ``"fixed"`` (W = W0, e.g. 0, 0.2,
1.0) and ``"unlimited"`` (W0 R**s, no peak/dead thresholds). ``L_total = L_distill + W L_GT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

WeightMode = Literal["fixed", "unlimited", "adaptive"]
_MODES = ("fixed", "unlimited", "adaptive")

#: Guard for ``R = L_GT / max(L_distill, RATIO_EPS)``: a sample the student already matches
#: perfectly on the teacher target (L_distill = 0) gets a huge R instead of inf/nan.
RATIO_EPS = 1e-12


@dataclass(frozen=True)
class GTWeightConfig:
    """Hyper-parameters of W(R); defaults are the paper's (s = 0.25, W0 = 0.2, R_p = 30, R_d = 100)."""

    mode: WeightMode = "adaptive"
    w0: float = 0.2
    s: float = 0.25
    r_peak: float = 30.0
    r_dead: float = 100.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"GTWeightConfig.mode must be one of {_MODES}, got {self.mode!r}")
        if self.w0 < 0 or self.s < 0:
            raise ValueError(f"w0 and s must be >= 0, got w0={self.w0}, s={self.s}")
        if not 0 < self.r_peak < self.r_dead:
            raise ValueError(f"need 0 < r_peak < r_dead, got r_peak={self.r_peak}, r_dead={self.r_dead}")


def loss_ratio(l_gt: Tensor, l_distill: Tensor, *, eps: float = RATIO_EPS) -> Tensor:
    """Per-sample ``R = L_GT / max(L_distill, eps)``, detached. Losses are (B,) and non-negative."""
    if l_gt.shape != l_distill.shape:
        raise ValueError(f"L_GT {tuple(l_gt.shape)} and L_distill {tuple(l_distill.shape)} must match")
    return l_gt.detach() / l_distill.detach().clamp_min(eps)


def gt_weight(ratio: Tensor, config: GTWeightConfig) -> Tensor:
    """W(R) per sample (same shape as ``ratio``), detached: no gradient ever flows through W."""
    r = ratio.detach()
    if bool((r < 0).any()) or bool(torch.isnan(r).any()):
        raise ValueError(
            "the loss ratio R must be >= 0 and not NaN; compute it with loss_ratio(L_GT, L_distill)"
        )
    if config.mode == "fixed":
        return torch.full_like(r, config.w0)
    rising = config.w0 * r**config.s
    if config.mode == "unlimited":
        return rising
    peak = config.w0 * config.r_peak**config.s
    falling = peak * (config.r_dead - r) / (config.r_dead - config.r_peak)
    return torch.where(
        r < config.r_peak, rising, torch.where(r < config.r_dead, falling, torch.zeros_like(r))
    )


@dataclass(frozen=True, eq=False)
class MixedLoss:
    """Eq. 7 reduced over the batch, plus the per-sample weight and ratio for logging."""

    total: Tensor  # () mean over samples of L_distill + W L_GT
    weight: Tensor  # (B,) W, detached
    ratio: Tensor  # (B,) R, detached


def mixed_supervision_loss(*, l_distill: Tensor, l_gt: Tensor, config: GTWeightConfig) -> MixedLoss:
    """``L_total = mean(L_distill + W(R) L_GT)`` from per-sample (B,) losses (Eq. 5–8)."""
    ratio = loss_ratio(l_gt, l_distill)
    weight = gt_weight(ratio, config)
    return MixedLoss(total=(l_distill + weight * l_gt).mean(), weight=weight, ratio=ratio)
