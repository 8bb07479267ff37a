"""The rolling (pipelined) sampler and per-frame noise levels (fada_rt/sampling/rolling.py, docs/design.md §8)."""

from __future__ import annotations

import pytest
import torch
from analytic import GaussianDenoiser

from fada_rt.sampling import (
    FAST_GUIDANCE,
    PerflowWindows,
    StudentPlan,
    draw_frame_times,
    guided_eps,
    make_distillation_batch,
    perflow_target,
    rolling_sample,
    rolling_step,
    student_input,
    student_sample,
    window_start_latent,
)
from fada_rt.sampling.schedule import per_sample

WINDOWS = PerflowWindows(num_windows=4)
MEANS = {"a": 0.3, "r": 0.2, "b": 0.0}


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _exact_student():
    return GaussianDenoiser(means=MEANS, std=0.5, timestep_convention="student", cfg_conditioned=True)


@pytest.mark.parametrize(("steps", "group"), [(4, 1), (4, 3), (6, 1), (6, 2)])
def test_rolling_equals_the_chunk_sampler_for_a_frame_independent_denoiser(steps: int, group: int) -> None:
    """With the exact denoiser of Gaussian data (frames independent) each frame takes the same steps as in a chunk:
    the rolling schedule must reproduce student_sample frame by frame, whatever the group."""
    plan = StudentPlan.make(num_steps=steps)
    noise = _randn(2, 11, 4, 3, 3, seed=1)  # (B, T, C, h, w)
    denoiser = _exact_student()
    rolled = rolling_sample(denoiser=denoiser, noise=noise, guidance=FAST_GUIDANCE, plan=plan, group=group)
    chunk = student_sample(denoiser=denoiser, noise=noise, guidance=FAST_GUIDANCE, plan=plan)
    assert rolled.z0.shape == noise.shape and rolled.nfe == chunk.nfe == steps
    torch.testing.assert_close(rolled.z0, chunk.z0, atol=1e-5, rtol=1e-5)


class _Recorder:
    """Records the per-frame timesteps of every call (an exact denoiser underneath)."""

    cfg_conditioned = True

    def __init__(self) -> None:
        self.inner = _exact_student()
        self.calls: list[list[float]] = []

    def __call__(self, z, timestep, *, branches, cfg=None):
        self.calls.append(timestep[0].tolist())
        return self.inner(z, timestep, branches=branches, cfg=cfg)


def test_rolling_calls_hold_monotone_levels_oldest_cleanest() -> None:
    rec = _Recorder()
    rolling_sample(denoiser=rec, noise=_randn(1, 6, 2, 2, 2), guidance=FAST_GUIDANCE, plan=StudentPlan.make(num_steps=4))
    assert rec.calls[:5] == [[1000.0], [750.0, 1000.0], [500.0, 750.0, 1000.0], [250.0, 500.0, 750.0, 1000.0],
                             [250.0, 500.0, 750.0, 1000.0]]
    assert rec.calls[-1] == [250.0] and len(rec.calls) == 6 + 3  # T calls admit, S - 1 more drain
    assert all(c == sorted(c) for c in rec.calls)


def test_rolling_step_refuses_bad_stages() -> None:
    plan = StudentPlan.make(num_steps=4)
    z = _randn(1, 3, 2, 2, 2)
    kw = {"denoiser": _exact_student(), "z": z, "guidance": FAST_GUIDANCE, "plan": plan}
    with pytest.raises(ValueError, match="oldest first"):
        rolling_step(stage=torch.tensor([0, 1, 2]), **kw)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        rolling_step(stage=torch.tensor([4, 1, 0]), **kw)
    with pytest.raises(ValueError, match="int64"):
        rolling_step(stage=torch.tensor([2.0, 1.0, 0.0]), **kw)


def test_guided_eps_takes_a_timestep_per_frame() -> None:
    z = _randn(2, 3, 4, 2, 2)
    ts = torch.tensor([[250.0, 500.0, 1000.0]] * 2)
    eps, _ = guided_eps(denoiser=_exact_student(), z=z, timestep=ts, guidance=FAST_GUIDANCE)
    for f in range(3):
        one, _ = guided_eps(denoiser=_exact_student(), z=z[:, f : f + 1], timestep=ts[:, f], guidance=FAST_GUIDANCE)
        torch.testing.assert_close(eps[:, f : f + 1], one)
    with pytest.raises(ValueError, match="one per frame"):
        guided_eps(denoiser=_exact_student(), z=z, timestep=ts[:, :2], guidance=FAST_GUIDANCE)


def test_per_sample_broadcasts_per_frame_and_refuses_other_shapes() -> None:
    like = torch.zeros(2, 3, 4, 5, 5)
    assert per_sample(torch.ones(2), like).shape == (2, 1, 1, 1, 1)
    assert per_sample(torch.ones(2, 3), like).shape == (2, 3, 1, 1, 1)
    with pytest.raises(ValueError, match="per frame"):
        per_sample(torch.ones(2, 4), like)
    with pytest.raises(ValueError, match="per frame"):
        per_sample(torch.ones(3), like)


@pytest.mark.parametrize("frames", [1, 3, 4, 8])
def test_frame_times_are_monotone_and_in_their_windows(frames: int) -> None:
    gen = torch.Generator().manual_seed(7)
    t, k = draw_frame_times(256, frames, windows=WINDOWS, generator=gen)
    assert t.shape == k.shape == (256, frames) and k.dtype == torch.int64
    assert bool((t[:, 1:] >= t[:, :-1]).all())  # oldest (frame 0) cleanest
    assert bool(((t > (k - 1) / 4) & (t <= k / 4 + 1e-7)).all())
    steps = t * 1000
    torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)  # on the 1/D grid
    t1, _ = draw_frame_times(256, frames, windows=WINDOWS, generator=torch.Generator().manual_seed(7))
    assert torch.equal(t, t1)


def test_pipeline_draws_slide_one_window_per_frame_group() -> None:
    t, k = draw_frame_times(64, 4, windows=WINDOWS, generator=torch.Generator().manual_seed(0), p_pipeline=1.0)
    assert torch.equal(k, torch.tensor([[1, 2, 3, 4]]).expand(64, 4))  # K frames: one per window
    torch.testing.assert_close(t[:, 1:] - t[:, :-1], torch.full((64, 3), 0.25), atol=1e-6, rtol=0)
    _, k8 = draw_frame_times(16, 8, windows=WINDOWS, generator=torch.Generator().manual_seed(0), p_pipeline=1.0)
    assert torch.equal(k8, torch.tensor([[1, 1, 2, 2, 3, 3, 4, 4]]).expand(16, 8))
    _, k2 = draw_frame_times(400, 2, windows=WINDOWS, generator=torch.Generator().manual_seed(0), p_pipeline=1.0)
    assert bool((k2[:, 1] - k2[:, 0] == 1).all()) and set(k2[:, 1].tolist()) == {2, 3, 4}
    _, ki = draw_frame_times(400, 4, windows=WINDOWS, generator=torch.Generator().manual_seed(0), p_pipeline=0.0)
    assert bool((ki[:, 1:] == ki[:, :-1]).any())  # sorted independent levels share windows too


def test_distillation_batch_per_frame_equals_per_sample_frame_by_frame() -> None:
    """Per-frame windows (B, F) give, frame by frame, what a whole clip at that frame's window gives."""
    x0, eps, z_end = _randn(2, 3, 4, 2, 2, seed=1), _randn(2, 3, 4, 2, 2, seed=2), _randn(2, 3, 4, 2, 2, seed=3)
    t = torch.tensor([[0.1, 0.45, 0.99], [0.6, 0.7, 0.8]])
    k = WINDOWS.window_of(t)
    batch = make_distillation_batch(teacher=None, x0=x0, eps=eps, t=t, window=k, guidance=None,
                                    plan=_plan(), z_end=z_end)
    assert batch.timestep.shape == (2, 3)
    for f in range(3):
        one = make_distillation_batch(teacher=None, x0=x0[:, f : f + 1], eps=eps[:, f : f + 1], t=t[:, f],
                                      window=k[:, f], guidance=None, plan=_plan(), z_end=z_end[:, f : f + 1])
        for name in ("z_t", "target", "z_t_gt", "target_gt"):
            torch.testing.assert_close(getattr(batch, name)[:, f : f + 1], getattr(one, name))
    z_start = window_start_latent(x0=x0, eps=eps, window=k, windows=WINDOWS)
    torch.testing.assert_close(perflow_target(z_start=z_start, z_end=z_end, window=k, windows=WINDOWS), batch.target)
    with pytest.raises(ValueError, match="outside its window"):
        student_input(z_start=z_start, z_end=z_end, t=t, window=k.flip(1), windows=WINDOWS)


def _plan():
    from fada_rt.sampling import WindowSolvePlan

    return WindowSolvePlan.make(windows=WINDOWS, substeps=8)
