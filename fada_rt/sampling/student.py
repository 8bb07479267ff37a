"""The PeRFlow student sampler (docs/design.md §3.4, paper §4.1).

``n`` steps over ``K`` windows, the leftovers going to the windows nearest t = 1:
``m_i = n // K + (1 if i < n % K else 0)`` (i = 0 is the noisiest window) and per window
``timesteps = int(1000 * linspace(t_start, t_end, m_i, endpoint=False))``. The truncation is
done in exact rational arithmetic, so e.g. 0.29 gives 290, never 289 from float error.
n = 6 gives [1000, 875, 750, 625, 500, 250] (two steps in each of the two windows near t = 1).

Per step at ``t_c`` in window ``(t_e, t_s]`` (student network timestep ``1000 t_c``)::

    den   = lam_s (t_c - t_s) + (t_e - t_c)
    lam_t = lam_s (t_e - t_s) / den ;  eta_t = eta_s (t_e - t_c) / den
    z_end = lam_t z + eta_t eps
    z     = z + (t_next - t_c) (z_end - z) / (t_e - t_c)      # t_next = 0 after the last step

(lam_s, eta_s) are the window's Eq. 4 coefficients in the windows' target parameterisation.
If the student predicted the window target exactly, every window end is hit exactly.
Balanced student: 6 steps x 3 branches = 18 NFE; fast (CFG-distilled): 6 x 1 = 6 NFE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from fada_rt.sampling.denoiser import Denoiser, SampleResult
from fada_rt.sampling.guidance import Guidance, guided_eps
from fada_rt.sampling.perflow import PerflowWindows


@dataclass(frozen=True)
class StudentStep:
    """One precomputed student step: network timestep, window, and the update coefficients."""

    timestep: float  # student network timestep 1000 t_c
    window: int  # k, t_c in (t_{k-1}, t_k]
    lam_t: float
    eta_t: float
    frac: float  # (t_next - t_c) / (t_e - t_c); 1.0 on a window's last step


@dataclass(frozen=True)
class StudentPlan:
    """All steps of an n-step student run over K windows, computed once (float64 -> Python floats)."""

    steps: tuple[StudentStep, ...]

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def timesteps(self) -> tuple[int, ...]:
        """The integer timesteps, e.g. (1000, 875, 750, 625, 500, 250) for n = 6, K = 4."""
        return tuple(int(s.timestep) for s in self.steps)

    @classmethod
    def make(cls, *, num_steps: int = 6, windows: PerflowWindows | None = None) -> StudentPlan:
        """Distribute ``num_steps`` over the windows (noisiest first) and precompute every update."""
        windows = windows if windows is not None else PerflowWindows()
        k_all, d = windows.num_windows, windows.schedule.num_train_timesteps
        if num_steps < k_all:
            raise ValueError(
                f"num_steps={num_steps} must be >= num_windows={k_all} (at least one step per window)"
            )
        ints: list[int] = []
        wins: list[int] = []
        for i in range(k_all):
            k = k_all - i  # i = 0 is the window nearest t = 1
            m = num_steps // k_all + (1 if i < num_steps % k_all else 0)
            t_s, t_e = Fraction(k, k_all), Fraction(k - 1, k_all)
            for j in range(m):
                ints.append(math.floor(d * (t_s + j * (t_e - t_s) / m)))
                wins.append(k)
        in_own_window = all(math.ceil(Fraction(ts * k_all, d)) == k for ts, k in zip(ints, wins))
        if not in_own_window or len(set(ints)) != len(ints):
            raise ValueError(
                f"num_steps={num_steps} is too many for {k_all} windows over {d} timesteps: steps collide"
            )
        steps = []
        for i, (ts, k) in enumerate(zip(ints, wins)):
            t_c, t_s, t_e = ts / d, k / k_all, (k - 1) / k_all
            last_in_window = i + 1 == len(ints) or wins[i + 1] != k  # then t_next = t_e exactly
            lam_s, eta_s = float(windows.lam[k - 1]), float(windows.eta[k - 1])
            den = lam_s * (t_c - t_s) + (t_e - t_c)
            steps.append(
                StudentStep(
                    timestep=float(ts),
                    window=k,
                    lam_t=lam_s * (t_e - t_s) / den,
                    eta_t=eta_s * (t_e - t_c) / den,
                    frac=1.0 if last_in_window else (ints[i + 1] / d - t_c) / (t_e - t_c),
                )
            )
        return cls(steps=tuple(steps))


def student_step(z: Tensor, eps: Tensor, step: StudentStep) -> Tensor:
    """One PeRFlow step: predict the window end from ``eps`` and move along the straight segment."""
    z_end = step.lam_t * z + step.eta_t * eps
    return z + step.frac * (z_end - z)


@torch.no_grad()
def student_sample(
    *,
    denoiser: Denoiser,
    noise: Tensor,
    guidance: Guidance,
    plan: StudentPlan | None = None,
) -> SampleResult:
    """Run the student from ``noise`` (B, *S) at t = 1 to t = 0; returns the latent and NFE per sample.

    ``plan`` defaults to 6 steps over 4 SD1.5 windows. Use ``BALANCED_GUIDANCE`` (multi-CFG, 18
    NFE) for a student without CFG distillation, ``FAST_GUIDANCE`` (6 NFE) for a
    ``cfg_conditioned`` one. Runs without autograd.
    """
    plan = plan if plan is not None else StudentPlan.make(num_steps=6)
    z = noise  # (B, *S)
    batch = z.shape[0]
    nfe = 0
    for step in plan.steps:
        ts = torch.full((batch,), step.timestep, dtype=torch.float32, device=z.device)
        eps, spent = guided_eps(denoiser=denoiser, z=z, timestep=ts, guidance=guidance)
        z = student_step(z, eps, step)
        nfe += spent
    return SampleResult(z0=z, nfe=nfe)
