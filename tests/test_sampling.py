"""Noise schedule, multi-CFG (Eq. 9), the DDIM teacher sampler and NFE accounting (docs/design.md §3.1–3.2)."""

from __future__ import annotations

import math

import pytest
import torch
from analytic import GaussianDenoiser

from fada_rt.sampling import (
    BALANCED_GUIDANCE,
    FAST_GUIDANCE,
    SD15_SCHEDULE,
    TEACHER_GUIDANCE,
    DDIMPlan,
    Guidance,
    StudentPlan,
    ddim_sample,
    guided_eps,
    multi_cfg,
    student_sample,
)

MEANS = {"a": 0.3, "r": 0.2, "b": 0.0}


class CountingDenoiser:
    """Wraps a denoiser and records every call: (branches, batch, cfg passed?)."""

    def __init__(self, inner):
        self.inner = inner
        self.cfg_conditioned = inner.cfg_conditioned
        self.calls: list[tuple[tuple[str, ...], int, bool]] = []

    def __call__(self, z, timestep, *, branches, cfg=None):
        self.calls.append((tuple(branches), z.shape[0], cfg is not None))
        return self.inner(z, timestep, branches=branches, cfg=cfg)

    @property
    def branch_evals_per_sample(self) -> int:
        return sum(len(b) for b, _, _ in self.calls)


# ---------------------------------------------------------------- schedule


def test_sd15_schedule_continuous_mapping():
    a = SD15_SCHEDULE.alphas_cumprod
    assert a.shape == (1000,) and a.dtype == torch.float64
    # abar[0] = 1 - beta_0 = 0.99915, abar[999] = 0.004660 (docs/design.md §3 and the §3.3 table)
    assert a[0].item() == pytest.approx(0.99915, abs=1e-12)
    assert a[999].item() == pytest.approx(0.004660, abs=5e-7)
    t = torch.tensor([0.0, 0.0004, 0.001, 0.25, 0.96, 1.0], dtype=torch.float32)
    assert SD15_SCHEDULE.index(t).tolist() == [0, 0, 0, 249, 959, 999]  # clamp at 0; float32 0.96 -> 959
    assert SD15_SCHEDULE.teacher_timestep(t).dtype == torch.float32
    assert SD15_SCHEDULE.abar(torch.tensor([0.0])).item() == a[0].item()  # abar(0) = abar[0], not 1


def test_add_noise_matches_definition_per_sample():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    t = torch.tensor([1.0, 0.5, 0.001])
    z = SD15_SCHEDULE.add_noise(x0, eps, t)
    for i, idx in enumerate([999, 499, 0]):
        a = SD15_SCHEDULE.alphas_cumprod[idx].item()
        torch.testing.assert_close(z[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- multi-CFG (Eq. 9)


def _eps_triplet(shape=(2, 3, 4, 5, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(3)]


def test_multi_cfg_unit_scales_equal_eps_a_exactly():
    ea, er, eb = _eps_triplet()
    assert torch.equal(multi_cfg(ea, er, eb, cfg_a=1.0, cfg_r=1.0), ea)
    ones = torch.ones(ea.shape[0])
    assert torch.equal(multi_cfg(ea, er, eb, cfg_a=ones, cfg_r=ones), ea)


def test_multi_cfg_is_eq9_and_affine_in_each_branch():
    ea, er, eb = _eps_triplet()
    d = _eps_triplet(seed=1)[0]
    ca, cr = 6.5, 2.5
    f = multi_cfg(ea, er, eb, cfg_a=ca, cfg_r=cr)
    torch.testing.assert_close(f, eb + cr * (er - eb) + ca * (ea - er), rtol=0, atol=1e-5)  # literal Eq. 9
    # affine: moving one branch by d moves the result by (its coefficient) * d
    torch.testing.assert_close(multi_cfg(ea + d, er, eb, cfg_a=ca, cfg_r=cr) - f, ca * d, rtol=0, atol=5e-5)
    torch.testing.assert_close(
        multi_cfg(ea, er + d, eb, cfg_a=ca, cfg_r=cr) - f, (cr - ca) * d, rtol=0, atol=5e-5
    )
    torch.testing.assert_close(
        multi_cfg(ea, er, eb + d, cfg_a=ca, cfg_r=cr) - f, (1 - cr) * d, rtol=0, atol=5e-5
    )


def test_multi_cfg_per_sample_scales_broadcast():
    ea, er, eb = _eps_triplet()  # (B=2, F, C, h, w)
    ca, cr = torch.tensor([6.5, 1.0]), torch.tensor([2.5, 4.0])
    out = multi_cfg(ea, er, eb, cfg_a=ca, cfg_r=cr)
    for i in range(2):
        ref = multi_cfg(ea[i : i + 1], er[i : i + 1], eb[i : i + 1], cfg_a=ca[i].item(), cfg_r=cr[i].item())
        torch.testing.assert_close(out[i : i + 1], ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="per-sample"):
        multi_cfg(ea, er, eb, cfg_a=torch.ones(3), cfg_r=2.0)


def test_guided_eps_one_batched_call_and_nfe():
    z = torch.randn(2, 4, 3)
    ts = torch.full((2,), 500.0)
    teacher = CountingDenoiser(GaussianDenoiser(means=MEANS, std=1.0))
    eps, nfe = guided_eps(denoiser=teacher, z=z, timestep=ts, guidance=TEACHER_GUIDANCE)
    assert nfe == 3 and teacher.calls == [(("a", "r", "b"), 2, False)]
    branches = teacher.inner(z, ts, branches=("a", "r", "b"))
    torch.testing.assert_close(eps, multi_cfg(*branches, cfg_a=6.5, cfg_r=2.5))

    eps_c, nfe_c = guided_eps(denoiser=teacher, z=z, timestep=ts, guidance=Guidance("conditional"))
    assert nfe_c == 1 and teacher.calls[-1] == (("a",), 2, False)
    torch.testing.assert_close(eps_c, branches[0])

    fast = CountingDenoiser(GaussianDenoiser(means=MEANS, std=1.0, cfg_conditioned=True))
    eps_f, nfe_f = guided_eps(
        denoiser=fast, z=z, timestep=ts, guidance=Guidance("distilled", cfg_a=6.5, cfg_r=2.5)
    )
    assert nfe_f == 1 and fast.calls == [(("a",), 2, True)]
    torch.testing.assert_close(eps_f, eps, rtol=0, atol=1e-5)  # perfectly distilled == multi-CFG


def test_guided_eps_rejects_mismatches():
    z, ts = torch.randn(2, 3), torch.full((2,), 10.0)
    teacher = GaussianDenoiser(means=MEANS, std=1.0)
    fast = GaussianDenoiser(means=MEANS, std=1.0, cfg_conditioned=True)
    with pytest.raises(ValueError, match="cfg_conditioned=True"):
        guided_eps(denoiser=teacher, z=z, timestep=ts, guidance=FAST_GUIDANCE)
    with pytest.raises(ValueError, match="distilled"):
        guided_eps(denoiser=fast, z=z, timestep=ts, guidance=TEACHER_GUIDANCE)
    with pytest.raises(ValueError, match="timestep must have shape"):
        guided_eps(denoiser=teacher, z=z, timestep=torch.zeros(3), guidance=TEACHER_GUIDANCE)

    def wrong_shape(z, timestep, *, branches, cfg=None):
        return torch.zeros(1, *z.shape)

    wrong_shape.cfg_conditioned = False
    with pytest.raises(ValueError, match="expected"):
        guided_eps(denoiser=wrong_shape, z=z, timestep=ts, guidance=TEACHER_GUIDANCE)
    with pytest.raises(ValueError, match="mode"):
        Guidance("strong")


# ---------------------------------------------------------------- DDIM teacher sampler


def test_ddim_trailing_plan_and_diffusers_parity():
    plan = DDIMPlan.trailing(num_steps=25)
    assert plan.timesteps == tuple(float(999 - 40 * i) for i in range(25))  # first step at 999: pure noise
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        clip_sample=False,
        timestep_spacing="trailing",
    )
    sched.set_timesteps(25)
    assert [float(t) for t in sched.timesteps] == list(plan.timesteps)
    den = GaussianDenoiser(means=MEANS, std=0.7)
    noise = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    z = noise
    for t in sched.timesteps:
        eps, _ = guided_eps(denoiser=den, z=z, timestep=torch.full((4,), float(t)), guidance=TEACHER_GUIDANCE)
        z = sched.step(eps, t, z).prev_sample
    ours = ddim_sample(denoiser=den, noise=noise, guidance=TEACHER_GUIDANCE, plan=plan)
    torch.testing.assert_close(ours.z0, z, rtol=0, atol=1e-4)  # float32, 25 steps


def test_ddim_gaussian_teacher_matches_closed_form():
    """DDIM on x0 ~ N(mu, sigma^2) against the exact probability-flow map (float64, 131072 samples).

    The exact ODE maps N(0, 1) at t = 1 to N(m0 - (s0/s1) m1, (s0/s1)^2) with m = sqrt(abar) mu,
    s^2 = abar sigma^2 + 1 - abar at abar(0) = 0.99915 and abar(1) = 0.00466: close to (mu, sigma^2)
    but not equal, because SD1.5's terminal SNR is not zero. DDIM's variance error is O(1/n).
    """
    mu, sigma = 1.0, 2.0
    den = GaussianDenoiser(means={"a": mu, "r": 0.0, "b": 0.0}, std=sigma)
    noise = torch.randn(2048, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a0, a1 = SD15_SCHEDULE.alphas_cumprod[0].item(), SD15_SCHEDULE.alphas_cumprod[999].item()
    s0, s1 = math.sqrt(a0 * sigma**2 + 1 - a0), math.sqrt(a1 * sigma**2 + 1 - a1)
    mean_ode, var_ode = math.sqrt(a0) * mu - s0 / s1 * math.sqrt(a1) * mu, (s0 / s1) ** 2

    def errors(steps):
        out = ddim_sample(
            denoiser=den,
            noise=noise,
            guidance=Guidance("conditional"),
            plan=DDIMPlan.trailing(num_steps=steps),
        )
        assert out.z0.dtype == torch.float64
        return abs(out.z0.mean().item() - mean_ode), abs(out.z0.var().item() / var_ode - 1), out.z0

    m25, v25, z25 = errors(25)
    m2, v2, _ = errors(2)
    assert m25 < 0.02 and v25 < 0.10  # measured: 0.003, 0.077 (0.038 at 50 steps: O(1/n))
    assert v2 > 0.5 and m2 > 0.04  # measured: 0.67, 0.056 -- 2 steps are measurably worse
    # and against the data distribution itself (measured 0.133, 0.090: the terminal-SNR bias)
    assert abs(z25.mean().item() - mu) < 0.16 and abs(z25.var().item() / sigma**2 - 1) < 0.12


# ---------------------------------------------------------------- NFE accounting


def test_nfe_teacher_75_balanced_18_fast_6():
    noise = torch.randn(2, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # (B, F, C, h, w)
    teacher = CountingDenoiser(GaussianDenoiser(means=MEANS, std=1.0))
    out = ddim_sample(denoiser=teacher, noise=noise)
    assert out.nfe == 75 == teacher.branch_evals_per_sample and len(teacher.calls) == 25
    assert out.z0.shape == noise.shape and out.z0.dtype == noise.dtype

    balanced = CountingDenoiser(GaussianDenoiser(means=MEANS, std=1.0, timestep_convention="student"))
    out = student_sample(denoiser=balanced, noise=noise, guidance=BALANCED_GUIDANCE)
    assert out.nfe == 18 == balanced.branch_evals_per_sample and len(balanced.calls) == 6

    fast = CountingDenoiser(
        GaussianDenoiser(means=MEANS, std=1.0, timestep_convention="student", cfg_conditioned=True)
    )
    out = student_sample(
        denoiser=fast, noise=noise, guidance=FAST_GUIDANCE, plan=StudentPlan.make(num_steps=6)
    )
    assert out.nfe == 6 == fast.branch_evals_per_sample and len(fast.calls) == 6
    assert all(passed_cfg for _, _, passed_cfg in fast.calls)
