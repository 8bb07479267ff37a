"""SD1.5 noise schedule, the continuous-time mapping and the DDIM step (docs/design.md §3).

Continuous time ``t in [0, 1]`` with t = 1 pure noise. The discrete table has
``D = 1000`` entries and ``abar(t) = abar[round(D t) - 1]`` with the index clamped at 0, so
``abar(0) = abar[0] = 0.99915`` (not 1). ``round`` is round-half-up, i.e.
``floor(D t + 1/2)``; it only matters at exact halves (e.g. PeRFlow substep times such as
t = 0.8125), where it decides which substep counts land on a window end (see
``window_solve.py``).

Tables live in float64 on the CPU; functions cast them to the input's dtype/device at use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete DDPM schedule: ``abar[i] = prod_{j<=i} (1 - beta_j)``, i = 0..D-1 (float64)."""

    alphas_cumprod: Tensor  # (D,) float64, CPU

    def __post_init__(self) -> None:
        a = self.alphas_cumprod
        if a.dim() != 1 or a.numel() < 2 or a.dtype != torch.float64:
            raise ValueError(
                f"alphas_cumprod must be a 1-D float64 tensor with >= 2 entries, got shape "
                f"{tuple(a.shape)} dtype {a.dtype}; build it with NoiseSchedule.scaled_linear(...)"
            )
        if not bool(((a > 0) & (a < 1)).all()) or not bool((a[1:] < a[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing inside (0, 1)")

    @classmethod
    def scaled_linear(
        cls, *, beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000
    ) -> NoiseSchedule:
        """``betas = linspace(sqrt(beta_start), sqrt(beta_end), D)**2`` (SD1.5's "scaled_linear")."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls(alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_train_timesteps(self) -> int:
        """D, the number of discrete training timesteps (1000 for SD1.5)."""
        return int(self.alphas_cumprod.numel())

    def index(self, t: Tensor) -> Tensor:
        """Teacher network index ``clamp(round(D t) - 1, 0)`` (round half up) as int64, shape of ``t``."""
        d = self.num_train_timesteps
        return (torch.floor(t.to(torch.float64) * d + 0.5).long() - 1).clamp(0, d - 1)

    def teacher_timestep(self, t: Tensor) -> Tensor:
        """The teacher's network timestep for continuous ``t``: the integer index as float32."""
        return self.index(t).to(torch.float32)

    def abar(self, t: Tensor) -> Tensor:
        """``abar(t)`` for continuous ``t`` (any shape), float64 on ``t``'s device."""
        return self.alphas_cumprod.to(t.device)[self.index(t).to(t.device)]

    def abar_at_fraction(self, t: Fraction | int) -> float:
        """``abar(t)`` for an exact rational ``t`` (plan construction, no float rounding)."""
        return float(self.alphas_cumprod[exact_index(t, self.num_train_timesteps, clamp=True)])

    def start_latent(self, noise: Tensor, estimate: Tensor) -> Tensor:
        """The sampler's start at t = 1: ``sqrt(abar(1)) estimate + sqrt(1 - abar(1)) noise``.

        SD1.5's schedule never reaches zero SNR: every training ``z_1`` still holds
        ``sqrt(abar[999]) x0 = 0.068 x0``, and a network trained on it leans on that trace.
        Sampling from pure noise takes it away; a model trained from scratch (the tiny teacher) then
        produced noise frames. The chunk's best estimate of ``x0`` at the runtime is the avatar's
        reference latent (frames differ from it only by mouth and pose), so the chunk starts from the
        forward-noised reference (Lin et al. 2024 discuss the non-zero terminal SNR).
        ``noise`` (B, F, C, h, w), ``estimate`` (B, C, h, w) -> (B, F, C, h, w).
        """
        a = self.abar_at_fraction(1)
        return math.sqrt(a) * estimate[:, None].to(noise.dtype) + math.sqrt(1.0 - a) * noise

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Forward noising ``z_t = sqrt(abar(t)) x0 + sqrt(1 - abar(t)) eps``; ``t`` is (B,) or scalar."""
        a = per_sample(self.abar(t.to(x0.device)), x0)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


def exact_index(t: Fraction | int, num_train_timesteps: int, *, clamp: bool) -> int:
    """``round(D t) - 1`` (round half up) in exact rational arithmetic; ``clamp`` clips at 0."""
    i = math.floor(Fraction(t) * num_train_timesteps + Fraction(1, 2)) - 1
    return max(i, 0) if clamp else i


def ddim_coefficients(abar_from: Tensor, abar_to: Tensor) -> tuple[Tensor, Tensor]:
    """(lam, eta) with ``z_to = lam z_from + eta eps`` for a deterministic DDIM step (eta_DDIM = 0).

    ``lam = sqrt(abar_to / abar_from)``,
    ``eta = sqrt(1 - abar_to) - sqrt(abar_to (1 - abar_from) / abar_from)`` (negative when
    stepping towards the data). These are also PeRFlow's (lam_k, eta_k) of Eq. 4, docs/design.md §3.3.
    """
    lam = (abar_to / abar_from).sqrt()
    eta = (1.0 - abar_to).sqrt() - (abar_to * (1.0 - abar_from) / abar_from).sqrt()
    return lam, eta


def ddim_step(z: Tensor, eps: Tensor, *, lam: Tensor | float, eta: Tensor | float) -> Tensor:
    """One DDIM update ``z_to = lam z + eta eps`` (equivalent to x0-prediction then re-noising)."""
    return per_sample(lam, z) * z + per_sample(eta, z) * eps


def per_sample(value: Tensor | float, like: Tensor) -> Tensor | float:
    """Broadcast a scalar, per-sample (B,) or per-frame (B, F) coefficient over ``like`` (B, *S) or (B, F, *S)
    in its dtype/device."""
    if not isinstance(value, Tensor):
        return float(value)
    if value.dim() == 0:
        return value.to(device=like.device, dtype=like.dtype)
    if value.dim() > 2 or value.dim() >= like.dim() or tuple(value.shape) != tuple(like.shape[: value.dim()]):
        raise ValueError(
            f"per-sample coefficient must be a scalar, shape ({like.shape[0]},) per sample or "
            f"{tuple(like.shape[:2])} per frame for a batch of shape {tuple(like.shape)}, got shape {tuple(value.shape)}"
        )
    return value.to(device=like.device, dtype=like.dtype).reshape(*value.shape, *([1] * (like.dim() - value.dim())))


#: The schedule every preset uses (SD1.5's scaled-linear betas, D = 1000).
SD15_SCHEDULE = NoiseSchedule.scaled_linear()
