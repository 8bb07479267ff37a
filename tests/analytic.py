"""An exact denoiser for Gaussian data: a reference :class:`Denoiser` with no network.

For ``x0 ~ N(mu, sigma^2 I)`` and ``z = sqrt(a) x0 + sqrt(1 - a) eps`` the MSE-optimal
eps-predictor is ``E[eps | z] = sqrt(1 - a) (z - sqrt(a) mu) / (a sigma^2 + 1 - a)``.
Each CFG branch gets its own mean (same sigma), so the multi-CFG combination (Eq. 9) of the
branches is again the optimal predictor for ``N(mu_cfg, sigma^2)`` with
``mu_cfg = mu_b + cfg_r (mu_r - mu_b) + cfg_a (mu_a - mu_r)``; a ``cfg_conditioned`` instance
returns exactly that in one branch (a perfectly CFG-distilled student).

Used by the sampler tests (tests/test_sampling*.py) to check samplers against closed forms; only tests use
it, so it lives here and not in the fada_rt package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from fada_rt.sampling.denoiser import BRANCHES
from fada_rt.sampling.schedule import SD15_SCHEDULE, NoiseSchedule, per_sample


class GaussianDenoiser:
    """Optimal eps-prediction for per-branch Gaussian data; implements ``Denoiser``.

    means: {"a": mu_a, "r": mu_r, "b": mu_b}, floats or tensors broadcastable to (*S);
    timestep_convention: "teacher" (integer index) or "student" (1000 t) network timesteps.
    """

    def __init__(
        self,
        *,
        means: Mapping[str, float | Tensor],
        std: float,
        schedule: NoiseSchedule = SD15_SCHEDULE,
        timestep_convention: Literal["teacher", "student"] = "teacher",
        cfg_conditioned: bool = False,
    ) -> None:
        if set(means) != set(BRANCHES):
            raise ValueError(f"means must have exactly the branches {BRANCHES}, got {sorted(means)}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        if timestep_convention not in ("teacher", "student"):
            raise ValueError(
                f"timestep_convention must be 'teacher' or 'student', got {timestep_convention!r}"
            )
        self.means = dict(means)
        self.std = float(std)
        self.schedule = schedule
        self.timestep_convention = timestep_convention
        self.cfg_conditioned = cfg_conditioned

    def abar(self, timestep: Tensor) -> Tensor:
        """abar for the network timestep (B,), float64."""
        if self.timestep_convention == "teacher":
            idx = timestep.round().long()
            if not bool(((idx >= 0) & (idx < self.schedule.num_train_timesteps)).all()):
                raise ValueError(
                    f"teacher timesteps must be indices in [0, {self.schedule.num_train_timesteps})"
                )
            return self.schedule.alphas_cumprod.to(timestep.device)[idx]
        return self.schedule.abar(timestep.to(torch.float64) / self.schedule.num_train_timesteps)

    def optimal_eps(self, z: Tensor, timestep: Tensor, mean: float | Tensor) -> Tensor:
        """``sqrt(1 - a) (z - sqrt(a) mean) / (a sigma^2 + 1 - a)`` per sample; z: (B, *S)."""
        a = per_sample(self.abar(timestep), z)
        mean = mean.to(device=z.device, dtype=z.dtype) if isinstance(mean, Tensor) else mean
        return (1 - a).sqrt() * (z - a.sqrt() * mean) / (a * self.std**2 + 1 - a)

    def __call__(
        self, z: Tensor, timestep: Tensor, *, branches: Sequence[str], cfg: Tensor | None = None
    ) -> Tensor:
        if self.cfg_conditioned:
            if cfg is None or tuple(cfg.shape) != (z.shape[0], 2):
                raise ValueError(f"a cfg_conditioned denoiser needs cfg of shape ({z.shape[0]}, 2)")
            cfg_a, cfg_r = per_sample(cfg[:, 0], z), per_sample(cfg[:, 1], z)
            m = {k: (v.to(z) if isinstance(v, Tensor) else v) for k, v in self.means.items()}
            mean = m["b"] + cfg_r * (m["r"] - m["b"]) + cfg_a * (m["a"] - m["r"])
            return torch.stack([self.optimal_eps(z, timestep, mean) for _ in branches])
        if cfg is not None:
            raise ValueError("cfg was passed to a denoiser that is not cfg_conditioned")
        return torch.stack([self.optimal_eps(z, timestep, self.means[b]) for b in branches])  # (n, B, *S)
