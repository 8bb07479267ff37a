"""The teacher's window solve and one distillation batch (paper Eq. 2–6, docs/design.md §3.3, §3.5).

Teacher solve from ``t_k`` to ``t_{k-1}``: DDIM with ``S`` substeps evaluated at times
``t_i = t_k + i (t_{k-1} - t_k) / S`` (i = 0..S-1), network index
``n_i = clamp(round(1000 t_i) - 1, 0)`` (round half up), each substep using the guided
(multi-CFG) prediction with the sample's own (cfg_a, cfg_r). As in PeRFlow's solver, each
substep steps from ``abar[n_i]`` to ``abar[n_i - stride]`` with the integer stride
``stride = D // (K S)`` (an index below 0 means ``abar[0]``); consecutive substeps may
therefore overlap or gap by one index. Whether the last substep lands exactly on the window
end ``round(1000 t_{k-1}) - 1`` depends on S: for K = 4, S in {5, 8, 10} do for every window,
S in {4, 6, 12, 16} end one index off. Plans assert it and raise a ValueError naming the S
values that work.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from fada_rt.sampling.denoiser import Denoiser
from fada_rt.sampling.guidance import Guidance, guided_eps
from fada_rt.sampling.perflow import (
    PerflowWindows,
    ground_truth_end,
    perflow_target,
    student_input,
    window_rows,
    window_start_latent,
)
from fada_rt.sampling.schedule import ddim_coefficients, ddim_step, exact_index


def substep_indices(*, window: int, num_windows: int, substeps: int, num_train_timesteps: int) -> list[int]:
    """Evaluation indices n_0..n_{S-1} and the final target index (unclamped, -1 = abar[0]) of one window."""
    t_start, t_end = Fraction(window, num_windows), Fraction(window - 1, num_windows)
    stride = num_train_timesteps // (num_windows * substeps)
    evals = [
        exact_index(t_start + i * (t_end - t_start) / substeps, num_train_timesteps, clamp=True)
        for i in range(substeps)
    ]
    return [*evals, evals[-1] - stride]


def exact_substep_counts(
    *, num_windows: int, num_train_timesteps: int = 1000, max_substeps: int = 32
) -> tuple[int, ...]:
    """The substep counts S <= max_substeps whose last substep lands on every window's end index."""
    return tuple(
        s
        for s in range(1, max_substeps + 1)
        if num_train_timesteps // (num_windows * s) > 0
        and _lands_on_window_ends(
            substeps=s, num_windows=num_windows, num_train_timesteps=num_train_timesteps
        )
    )


def _lands_on_window_ends(*, substeps: int, num_windows: int, num_train_timesteps: int) -> bool:
    for k in range(1, num_windows + 1):
        final = substep_indices(
            window=k, num_windows=num_windows, substeps=substeps, num_train_timesteps=num_train_timesteps
        )[-1]
        if final != exact_index(Fraction(k - 1, num_windows), num_train_timesteps, clamp=False):
            return False
    return True


@dataclass(frozen=True, eq=False)
class WindowSolvePlan:
    """Per-window, per-substep teacher timesteps and DDIM coefficients, computed once.

    Row ``k-1`` is window ``k``; columns are substeps (float64 coefficients, float32 timesteps).
    """

    windows: PerflowWindows
    substeps: int
    timesteps: Tensor  # (K, S) float32 teacher network index
    lam: Tensor  # (K, S) float64
    eta: Tensor  # (K, S) float64

    @classmethod
    def make(cls, *, windows: PerflowWindows, substeps: int = 8) -> WindowSolvePlan:
        """Build the plan; raise ValueError if ``substeps`` misses a window end (lists the S that work)."""
        k_all, d = windows.num_windows, windows.schedule.num_train_timesteps
        valid = exact_substep_counts(num_windows=k_all, num_train_timesteps=d, max_substeps=max(32, substeps))
        if substeps not in valid:
            raise ValueError(
                f"substeps={substeps} does not land exactly on every window end for K={k_all}, D={d} "
                f"(integer-index rounding); use one of {list(valid)}"
            )
        stride = d // (k_all * substeps)
        evals = torch.tensor(
            [
                substep_indices(window=k, num_windows=k_all, substeps=substeps, num_train_timesteps=d)[:-1]
                for k in range(1, k_all + 1)
            ]
        )  # (K, S) network index per substep
        targets = (evals - stride).clamp(min=0)  # index -1 means abar[0]
        abar = windows.schedule.alphas_cumprod
        lam, eta = ddim_coefficients(abar[evals], abar[targets])
        return cls(windows=windows, substeps=substeps, timesteps=evals.to(torch.float32), lam=lam, eta=eta)


@dataclass(frozen=True, eq=False)
class WindowSolveResult:
    """The teacher's window end ``zhat_{t_{k-1}}`` and the NFE spent per sample (S x branches)."""

    z_end: Tensor  # (B, *S)
    nfe: int


def teacher_window_solve(
    *,
    denoiser: Denoiser,
    z_start: Tensor,
    window: Tensor,
    guidance: Guidance,
    plan: WindowSolvePlan,
) -> WindowSolveResult:
    """Eq. 2: solve each sample's window from ``z_{t_k}`` to ``zhat_{t_{k-1}}`` with the teacher (no grad).

    z_start: (B, *S); window: (B,) int64 window numbers (may differ per sample); guidance:
    usually ``Guidance("multi", cfg_a=(B,), cfg_r=(B,))`` with the sample's own scales.
    """
    if window.shape != (z_start.shape[0],):
        raise ValueError(f"window must have shape ({z_start.shape[0]},), got {tuple(window.shape)}")
    r = window_rows(window, plan.windows.num_windows)
    timesteps = plan.timesteps.to(z_start.device)[r.to(z_start.device)]  # (B, S)
    lam = plan.lam.to(window.device)[r]  # (B, S)
    eta = plan.eta.to(window.device)[r]
    z = z_start
    nfe = 0
    with torch.no_grad():
        for i in range(plan.substeps):
            eps, spent = guided_eps(denoiser=denoiser, z=z, timestep=timesteps[:, i], guidance=guidance)
            z = ddim_step(z, eps, lam=lam[:, i], eta=eta[:, i])
            nfe += spent
    return WindowSolveResult(z_end=z, nfe=nfe)


@dataclass(frozen=True, eq=False)
class DistillationBatch:
    """Everything one PeRFlow + mixed-supervision step needs (docs/design.md §3.3 steps 2–5, §3.5)."""

    z_t: Tensor  # (B, *S) student input on the teacher segment (fixed Eq. 3)
    target: Tensor  # (B, *S) epshat (Eq. 4)
    z_t_gt: Tensor | None  # (B, *S) student input on the ground-truth segment (None: ground_truth=False)
    target_gt: Tensor | None  # (B, *S) eps* (= eps for "ddim_eps"; None: ground_truth=False)
    timestep: Tensor  # (B,) student network timestep 1000 t, float32
    teacher_nfe: int  # teacher evaluations per sample spent on the window solve (0: z_end was given)
    z_end: Tensor  # (B, *S) the teacher's window end zhat_{t_{k-1}} (Eq. 2), e.g. to cache


def make_distillation_batch(
    *,
    teacher: Denoiser | None,
    x0: Tensor,
    eps: Tensor,
    t: Tensor,
    window: Tensor,
    guidance: Guidance | None,
    plan: WindowSolvePlan,
    z_end: Tensor | None = None,
    ground_truth: bool = True,
) -> DistillationBatch:
    """Noise ``x0`` to the window start, solve the window with the teacher and build both targets.

    x0, eps: (B, *S); t: (B,) training time in its window; window: (B,) int64 (see
    ``draw_training_times``). ``z_end``: the teacher's window end when it is known already (a cache
    of solves): the teacher is not called (``teacher`` and ``guidance`` may be None). ``ground_truth``:
    False leaves out the ground-truth segment (a student without mixed supervision). No gradient flows
    into any returned tensor.
    """
    windows = plan.windows
    if z_end is None and (teacher is None or guidance is None):
        raise ValueError("solving the window needs the teacher and its guidance (or give z_end)")
    with torch.no_grad():
        z_start = window_start_latent(x0=x0, eps=eps, window=window, windows=windows)
        nfe = 0
        if z_end is None:
            solved = teacher_window_solve(
                denoiser=teacher, z_start=z_start, window=window, guidance=guidance, plan=plan
            )
            z_end, nfe = solved.z_end, solved.nfe
        z_t_gt = target_gt = None
        if ground_truth:
            z_end_gt = ground_truth_end(x0=x0, eps=eps, window=window, windows=windows)
            z_t_gt = student_input(z_start=z_start, z_end=z_end_gt, t=t, window=window, windows=windows)
            target_gt = perflow_target(z_start=z_start, z_end=z_end_gt, window=window, windows=windows)
        return DistillationBatch(
            z_t=student_input(z_start=z_start, z_end=z_end, t=t, window=window, windows=windows),
            target=perflow_target(z_start=z_start, z_end=z_end, window=window, windows=windows),
            z_t_gt=z_t_gt,
            target_gt=target_gt,
            timestep=(t.to(torch.float32) * windows.schedule.num_train_timesteps).to(x0.device),
            teacher_nfe=nfe,
            z_end=z_end,
        )
