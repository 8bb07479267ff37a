"""PeRFlow windows, teacher window solve, student input/targets and the student sampler (docs/design.md §3.3–3.5)."""

from __future__ import annotations

import math

import pytest
import torch
from analytic import GaussianDenoiser

from fada_rt.sampling import (
    SD15_SCHEDULE,
    Guidance,
    PerflowWindows,
    StudentPlan,
    WindowSolvePlan,
    draw_training_times,
    exact_substep_counts,
    ground_truth_end,
    make_distillation_batch,
    perflow_target,
    student_input,
    student_sample,
    teacher_window_solve,
    window_start_latent,
)

MEANS = {"a": 0.3, "r": 0.2, "b": 0.0}
WINDOWS = PerflowWindows(num_windows=4)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- windows and coefficients


def test_sd15_k4_lambda_eta_table():
    """docs/design.md §3.3's table (row order there: window 4 first). eta is negative."""
    table = {  # window: (abar start, abar end, lam, eta)
        4: (0.004660, 0.056623, 3.4858, -2.5064),
        3: (0.056623, 0.277669, 2.2145, -1.3009),
        2: (0.277669, 0.675432, 1.5596, -0.7558),
        1: (0.675432, 0.999150, 1.2163, -0.6638),
    }
    for k, (a_s, a_e, lam, eta) in table.items():  # the table's 6 / 4 printed decimals
        assert WINDOWS.abar_start[k - 1].item() == pytest.approx(a_s, abs=1e-6)
        assert WINDOWS.abar_end[k - 1].item() == pytest.approx(a_e, abs=1e-6)
        assert WINDOWS.lam[k - 1].item() == pytest.approx(lam, abs=5e-5)
        assert WINDOWS.eta[k - 1].item() == pytest.approx(eta, abs=5e-5)


def test_window_of_contains_its_start():
    t = torch.tensor([1.0, 0.751, 0.75, 0.501, 0.5, 0.25, 0.001, 0.0])
    assert WINDOWS.window_of(t).tolist() == [4, 4, 3, 3, 2, 1, 1, 1]
    with pytest.raises(ValueError, match="num_windows"):
        PerflowWindows(num_windows=0)
    with pytest.raises(ValueError, match="target"):
        PerflowWindows(target="velocity")


def test_draw_training_times_grid_and_windows():
    t, window = draw_training_times(4000, windows=WINDOWS, generator=torch.Generator().manual_seed(0))
    t2, _ = draw_training_times(4000, windows=WINDOWS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t2) and t.dtype == torch.float32 and window.dtype == torch.int64
    steps = (t.double() * 1000).round()
    assert torch.allclose(t.double() * 1000, steps, atol=1e-4)  # t = j / 1000
    assert steps.min() >= 1 and steps.max() <= 1000
    assert bool(((t > (window - 1) / 4) & (t <= window / 4 + 1e-7)).all())  # t in (t_{k-1}, t_k]
    assert torch.equal(window, WINDOWS.window_of(t))
    counts = torch.bincount(window, minlength=5)[1:]
    assert counts.min() > 900  # ~1000 each (binomial sd ~27)


# ---------------------------------------------------------------- student input (fixed Eq. 3) and targets (Eq. 4)


def test_student_input_is_the_fixed_eq3_segment():
    z_s, z_e = _randn(3, 2, 4, seed=1), _randn(3, 2, 4, seed=2)
    window = torch.tensor([4, 2, 1])
    t_k = window / 4.0
    # at t_k the input is the start point (the paper's Eq. 3 without the leading term would give 0 there)
    torch.testing.assert_close(
        student_input(z_start=z_s, z_end=z_e, t=t_k, window=window, windows=WINDOWS), z_s
    )
    mid = student_input(z_start=z_s, z_end=z_e, t=t_k - 0.125, window=window, windows=WINDOWS)
    torch.testing.assert_close(mid, (z_s + z_e) / 2, rtol=0, atol=1e-6)
    near_end = student_input(z_start=z_s, z_end=z_e, t=t_k - 0.249, window=window, windows=WINDOWS)
    torch.testing.assert_close(near_end, z_e + (z_s - z_e) * 0.004, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="outside its window"):
        student_input(z_start=z_s, z_end=z_e, t=torch.tensor([0.7, 0.5, 0.2]), window=window, windows=WINDOWS)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        perflow_target(z_start=z_s, z_end=z_e, window=torch.tensor([0, 1, 5]), windows=WINDOWS)


def test_ground_truth_target_is_eps_for_ddim_eps():
    x0, eps = _randn(4, 3, 5, seed=3), _randn(4, 3, 5, seed=4)
    window = torch.tensor([1, 2, 3, 4])
    z_s = window_start_latent(x0=x0, eps=eps, window=window, windows=WINDOWS)
    torch.testing.assert_close(z_s, SD15_SCHEDULE.add_noise(x0, eps, window / 4.0))
    z_e = ground_truth_end(x0=x0, eps=eps, window=window, windows=WINDOWS)
    torch.testing.assert_close(z_e, SD15_SCHEDULE.add_noise(x0, eps, (window - 1) / 4.0))
    eps_star = perflow_target(z_start=z_s, z_end=z_e, window=window, windows=WINDOWS)
    torch.testing.assert_close(eps_star, eps, rtol=0, atol=2e-6)


def test_diff_eps_target_is_the_forward_diffusion_noise():
    """ "diff_eps": z_start = sqrt(abar_s/abar_e) z_end + sqrt(1 - abar_s/abar_e) eps_target."""
    windows = PerflowWindows(target="diff_eps")
    assert torch.equal(windows.lam, WINDOWS.lam) and bool((windows.eta < 0).all())
    z_s, z_e = _randn(4, 6, seed=5, dtype=torch.float64), _randn(4, 6, seed=6, dtype=torch.float64)
    window = torch.tensor([1, 2, 3, 4])
    target = perflow_target(z_start=z_s, z_end=z_e, window=window, windows=windows)
    ratio = (windows.abar_start / windows.abar_end)[window - 1][:, None]
    torch.testing.assert_close(z_s, ratio.sqrt() * z_e + (1 - ratio).sqrt() * target, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- teacher window solve


def test_substep_plan_indices_and_exactness():
    assert {5, 8, 10} <= set(exact_substep_counts(num_windows=4))
    assert not {4, 6, 12, 16} & set(exact_substep_counts(num_windows=4))
    plan = WindowSolvePlan.make(windows=WINDOWS, substeps=8)
    assert plan.timesteps[3].tolist() == [
        999,
        968,
        937,
        905,
        874,
        843,
        812,
        780,
    ]  # window 4; stride 31 -> 749
    assert plan.timesteps[0].tolist() == [249, 218, 187, 155, 124, 93, 62, 30]  # window 1; 30 - 31 -> abar[0]
    a = SD15_SCHEDULE.alphas_cumprod
    assert plan.lam[3, -1].item() == pytest.approx(math.sqrt(a[749].item() / a[780].item()), rel=1e-12)
    assert plan.lam[0, -1].item() == pytest.approx(math.sqrt(a[0].item() / a[30].item()), rel=1e-12)
    for bad in (4, 6, 12, 16):
        with pytest.raises(ValueError, match=r"\[1, 2, 3, 5, 8, 10"):
            WindowSolvePlan.make(windows=WINDOWS, substeps=bad)


def test_window_solve_mixes_windows_and_per_sample_cfg():
    teacher = GaussianDenoiser(means=MEANS, std=1.0)
    plan = WindowSolvePlan.make(windows=WINDOWS, substeps=8)
    z = _randn(4, 2, 3, 3, seed=7).requires_grad_(True)
    window = torch.tensor([4, 1, 3, 2])
    cfg_a, cfg_r = torch.tensor([6.5, 1.0, 3.0, 5.0]), torch.tensor([2.5, 1.0, 2.0, 1.5])
    out = teacher_window_solve(
        denoiser=teacher,
        z_start=z,
        window=window,
        guidance=Guidance("multi", cfg_a=cfg_a, cfg_r=cfg_r),
        plan=plan,
    )
    assert out.nfe == 24 and not out.z_end.requires_grad  # S=8 x 3 branches, no graph
    for i in range(4):
        single = teacher_window_solve(
            denoiser=teacher,
            z_start=z[i : i + 1].detach(),
            window=window[i : i + 1],
            guidance=Guidance("multi", cfg_a=cfg_a[i].item(), cfg_r=cfg_r[i].item()),
            plan=plan,
        )
        torch.testing.assert_close(out.z_end[i : i + 1], single.z_end, rtol=0, atol=1e-6)


def test_chained_window_solves_follow_the_probability_flow():
    """4 windows x 8 substeps of the Gaussian teacher land near the exact ODE endpoint (cf. DDIM test)."""
    mu, sigma = 1.0, 2.0
    teacher = GaussianDenoiser(means={"a": mu, "r": 0.0, "b": 0.0}, std=sigma)
    plan = WindowSolvePlan.make(windows=WINDOWS, substeps=8)
    z = _randn(2048, 64, seed=8, dtype=torch.float64)
    for k in (4, 3, 2, 1):
        z = teacher_window_solve(
            denoiser=teacher,
            z_start=z,
            window=torch.full((2048,), k),
            guidance=Guidance("conditional"),
            plan=plan,
        ).z_end
    a0, a1 = SD15_SCHEDULE.alphas_cumprod[0].item(), SD15_SCHEDULE.alphas_cumprod[999].item()
    s0, s1 = math.sqrt(a0 * sigma**2 + 1 - a0), math.sqrt(a1 * sigma**2 + 1 - a1)
    mean_ode, var_ode = math.sqrt(a0) * mu - s0 / s1 * math.sqrt(a1) * mu, (s0 / s1) ** 2
    assert z.dtype == torch.float64
    # measured: 0.005 and 0.071 (32 evaluations; DDIM with 25 steps: 0.003, 0.077)
    assert abs(z.mean().item() - mean_ode) < 0.02 and abs(z.var().item() / var_ode - 1) < 0.10


def test_distillation_batch_composes_the_steps():
    teacher = GaussianDenoiser(means=MEANS, std=1.0)
    plan = WindowSolvePlan.make(windows=WINDOWS, substeps=5)
    x0, eps = _randn(4, 2, 3, seed=9).requires_grad_(True), _randn(4, 2, 3, seed=10)
    t, window = draw_training_times(4, windows=WINDOWS, generator=torch.Generator().manual_seed(3))
    guidance = Guidance("multi", cfg_a=torch.full((4,), 6.5), cfg_r=torch.full((4,), 2.5))
    batch = make_distillation_batch(
        teacher=teacher, x0=x0, eps=eps, t=t, window=window, guidance=guidance, plan=plan
    )
    assert batch.teacher_nfe == 15 and not batch.target.requires_grad and not batch.z_t.requires_grad
    torch.testing.assert_close(batch.timestep, t * 1000)
    torch.testing.assert_close(batch.target_gt, eps, rtol=0, atol=2e-6)  # eps* = eps
    z_s = window_start_latent(x0=x0.detach(), eps=eps, window=window, windows=WINDOWS)
    z_e = teacher_window_solve(
        denoiser=teacher, z_start=z_s, window=window, guidance=guidance, plan=plan
    ).z_end
    torch.testing.assert_close(
        batch.target, perflow_target(z_start=z_s, z_end=z_e, window=window, windows=WINDOWS)
    )
    torch.testing.assert_close(
        batch.z_t, student_input(z_start=z_s, z_end=z_e, t=t, window=window, windows=WINDOWS)
    )


# ---------------------------------------------------------------- student scheduler and sampler


def test_student_timesteps():
    assert StudentPlan.make(num_steps=6).timesteps == (1000, 875, 750, 625, 500, 250)
    assert StudentPlan.make(num_steps=4).timesteps == (1000, 750, 500, 250)
    assert StudentPlan.make(num_steps=8).timesteps == (1000, 875, 750, 625, 500, 375, 250, 125)
    assert StudentPlan.make(num_steps=7).timesteps == (1000, 875, 750, 625, 500, 375, 250)
    assert StudentPlan.make(num_steps=10).timesteps[:3] == (
        1000,
        916,
        833,
    )  # int() truncation, 3 steps in window 4
    with pytest.raises(ValueError, match="at least one step per window"):
        StudentPlan.make(num_steps=3)


class PerfectStudent:
    """Returns the exact window target along a given piecewise-linear path P[k] = z at t_k.

    Also checks that every input it receives lies on that path (max error recorded), which
    checks every window end the sampler passes through.
    """

    cfg_conditioned = True

    def __init__(self, path: torch.Tensor, windows: PerflowWindows):
        self.path, self.windows = path, windows  # (K + 1, B, *S)
        self.max_input_error = 0.0
        self.timesteps: list[float] = []

    def __call__(self, z, timestep, *, branches, cfg=None):
        assert cfg is not None and cfg.shape == (z.shape[0], 2)
        self.timesteps.append(timestep[0].item())
        t = timestep / 1000  # student convention
        k = self.windows.window_of(t)
        rows = torch.arange(z.shape[0])
        z_s, z_e = self.path[k, rows], self.path[k - 1, rows]
        expected = student_input(z_start=z_s, z_end=z_e, t=t, window=k, windows=self.windows)
        self.max_input_error = max(self.max_input_error, (z - expected).abs().max().item())
        target = perflow_target(z_start=z_s, z_end=z_e, window=k, windows=self.windows)
        return target.unsqueeze(0).expand(len(branches), *z.shape)


@pytest.mark.parametrize("target", ["ddim_eps", "diff_eps"])
@pytest.mark.parametrize("num_steps", [4, 6, 8])
def test_perfect_student_lands_on_every_window_end(num_steps, target):
    windows = PerflowWindows(num_windows=4, target=target)
    teacher = GaussianDenoiser(means=MEANS, std=0.8)
    solve = WindowSolvePlan.make(windows=windows, substeps=8)
    noise = _randn(3, 2, 4, 4, 4, seed=11)  # (B, F, C, h, w)
    guidance = Guidance("multi", cfg_a=6.5, cfg_r=2.5)
    path = [noise]
    for k in (4, 3, 2, 1):  # ground-truth piecewise-linear path from the teacher
        window = torch.full((3,), k)
        path.append(
            teacher_window_solve(
                denoiser=teacher, z_start=path[-1], window=window, guidance=guidance, plan=solve
            ).z_end
        )
    path_t = torch.stack(path[::-1])  # (K + 1, B, ...): index k is t_k
    student = PerfectStudent(path_t, windows)
    plan = StudentPlan.make(num_steps=num_steps, windows=windows)
    out = student_sample(denoiser=student, noise=noise, guidance=Guidance("distilled"), plan=plan)
    assert student.timesteps == [float(ts) for ts in plan.timesteps]
    assert student.max_input_error < 1e-5  # every step input, incl. each window start = previous end
    assert (out.z0 - path_t[0]).abs().max().item() < 1e-5  # the last window end, t = 0
    assert out.nfe == num_steps
