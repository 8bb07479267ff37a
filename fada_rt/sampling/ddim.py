"""The teacher sampler: deterministic DDIM with multi-CFG (docs/design.md §3.2).

Trailing timestep spacing: step i of n evaluates the teacher at continuous time
``t_i = 1 - i / n`` (network index ``clamp(round(1000 t_i) - 1, 0)``), so the first step is
at index 999, i.e. pure noise, and steps to ``t_{i+1}``; the last step lands on
``abar(0) = abar[0]``. For n dividing 1000 (25 included) this is exactly diffusers'
``DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=False)``.
25 steps x 3 CFG branches = 75 NFE.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from fada_rt.sampling.denoiser import Denoiser, SampleResult
from fada_rt.sampling.guidance import TEACHER_GUIDANCE, Guidance, guided_eps
from fada_rt.sampling.schedule import SD15_SCHEDULE, NoiseSchedule, ddim_coefficients, ddim_step, exact_index


@dataclass(frozen=True)
class DDIMPlan:
    """Per-step coefficients of an n-step trailing DDIM run, computed once (float64 -> Python floats)."""

    timesteps: tuple[float, ...]  # network index per step: 999, 959, ..., 39 for n = 25
    lam: tuple[float, ...]  # z_next = lam z + eta eps
    eta: tuple[float, ...]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @classmethod
    def trailing(cls, *, num_steps: int = 25, schedule: NoiseSchedule = SD15_SCHEDULE) -> DDIMPlan:
        """Trailing spacing over ``schedule``: times ``1 - i/n``, i = 0..n (exact rationals)."""
        d = schedule.num_train_timesteps
        if not 1 <= num_steps <= d:
            raise ValueError(f"num_steps must be in [1, {d}], got {num_steps}")
        times = [1 - Fraction(i, num_steps) for i in range(num_steps + 1)]
        idx = [exact_index(t, d, clamp=True) for t in times]
        if len(set(idx[:-1])) != num_steps:
            raise ValueError(
                f"{num_steps} DDIM steps do not give distinct network indices over {d} timesteps"
            )
        a = schedule.alphas_cumprod[torch.tensor(idx)]
        lam, eta = ddim_coefficients(a[:-1], a[1:])
        return cls(
            timesteps=tuple(float(i) for i in idx[:-1]), lam=tuple(lam.tolist()), eta=tuple(eta.tolist())
        )


@torch.no_grad()
def ddim_sample(
    *,
    denoiser: Denoiser,
    noise: Tensor,
    guidance: Guidance = TEACHER_GUIDANCE,
    plan: DDIMPlan | None = None,
) -> SampleResult:
    """Run deterministic DDIM (eta = 0, trailing spacing) from ``noise`` (B, *S) at t = 1.

    ``plan`` defaults to 25 trailing steps over SD1.5. Returns the latent at t = 0 and the NFE
    per sample (steps x branches: 75 for the default teacher). Runs without autograd.
    """
    plan = plan if plan is not None else DDIMPlan.trailing(num_steps=25)
    z = noise  # (B, *S)
    batch = z.shape[0]
    nfe = 0
    for timestep, lam, eta in zip(plan.timesteps, plan.lam, plan.eta):
        ts = torch.full((batch,), timestep, dtype=torch.float32, device=z.device)
        eps, spent = guided_eps(denoiser=denoiser, z=z, timestep=ts, guidance=guidance)
        z = ddim_step(z, eps, lam=lam, eta=eta)
        nfe += spent
    return SampleResult(z0=z, nfe=nfe)
