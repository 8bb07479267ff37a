"""FADA distillation on the tiny preset: every variant runs, the loss terms match a hand computation
from docs/design.md §3.3/§3.5, W vanishes beyond R_d, and cached teacher solves are reused."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_same_run, make_tiny_model, randomize_zero_init

import train.distill as distill_mod
import train.distill_teacher as teacher_mod
from fada_rt.checkpoint import load_model
from fada_rt.models.fada import BranchedDenoiser
from fada_rt.sampling import (
    SD15_SCHEDULE,
    GTWeightConfig,
    Guidance,
    PerflowWindows,
    WindowSolvePlan,
    ground_truth_end,
    make_distillation_batch,
    perflow_target,
    student_input,
    teacher_window_solve,
    window_start_latent,
)
from train.cache import build_synthetic_cache, open_cache, weights_digest
from train.data import ChunkSampler
from train.distill import VARIANTS, DistillConfig, DistillObjective, compute_losses, distill
from train.distill_teacher import distillation_batch, draw_step
from train.loop import LoopConfig
from train.solve_cache import SolveCache


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("distill")
    teacher = make_tiny_model(seed=2)
    randomize_zero_init(teacher)
    # the cache (and labels) of python -m train.synthetic's clips, without writing them (tests/test_cache.py)
    build_synthetic_cache(data=root / "data", out=root / "cache", vae=teacher.vae, config=teacher.config, clips=4,
                          seed=5, tier="B", min_seconds=1.2, max_seconds=1.6)
    cache = open_cache(root / "cache", config=teacher.config, vae_digest=weights_digest(teacher.vae))
    return root, teacher, cache


# distill() moves the teacher it is given to the run's device (a GPU where there is one): every call below gets
# its own copy, so the module-scoped teacher stays on the CPU for the tests that use it directly


def _quick(config: DistillConfig, *, steps: int = 2, substeps: int = 1) -> DistillConfig:
    loop = LoopConfig(steps=steps, lr=1e-4, warmup_steps=1, ema_decay=0.5, checkpoint_every=100, log_every=1)
    return dataclasses.replace(config, loop=loop, batch_size=1, substeps=substeps, manifest="B")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_runs(world, tmp_path: Path, name: str) -> None:
    _, teacher, cache = world
    config = _quick(VARIANTS[name])
    sampler = ChunkSampler(cache, config=teacher.config, seed=0)
    losses = distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / name)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    student, _ = load_model(tmp_path / name / "student", role="student")
    assert student.config.cfg.mode == config.cfg_mode
    rows = (tmp_path / name / "samples.csv").read_text().splitlines()
    assert rows[0].startswith("step,clip,tier,kind") and len(rows) == 3


def _fixed_step(world, config: DistillConfig):
    _, teacher, cache = world
    sampler = ChunkSampler(cache, config=teacher.config, seed=0)
    batch = sampler.batch(step=3, batch_size=2)
    windows = PerflowWindows(num_windows=config.num_windows)
    draws = draw_step(batch, config, windows, step=3, rank=0)
    draws.t[:] = torch.tensor([0.9, 0.3])  # one sample in window 4, one in window 2
    draws.window[:] = torch.tensor([4, 2])
    return teacher, batch, draws, windows


def _student_eps(student, batch, z, timestep, draws, cfg_conditioned):
    ref = student.reference(batch.reference)
    motion = student.motion_features(batch.motion)
    tokens = student.audio_proj(batch.audio) * draws.keep_audio.view(-1, 1, 1, 1).float()
    return student.denoiser(z, timestep, tokens, ref.keys, ref.values, motion,
                            ref_mask=None if cfg_conditioned else draws.keep_ref,
                            cfg=draws.cfg if cfg_conditioned else None)


@pytest.mark.parametrize(("cfg_mode", "motion_weight", "fixed_map"),
                         [("none", 0.0, False), ("layer_tokens", 0.0, False), ("layer_tokens", 1.5, False),
                          ("layer_tokens", 1.5, True)])
def test_loss_terms_equal_hand_computed(world, cfg_mode: str, motion_weight: float, fixed_map: bool) -> None:
    config = _quick(dataclasses.replace(VARIANTS["balanced"], cfg_mode=cfg_mode, motion_weight=motion_weight))
    teacher, batch, d, windows = _fixed_step(world, config)
    student = teacher.make_student(cfg_mode)
    randomize_zero_init(student, seed=4)
    plan = WindowSolvePlan.make(windows=windows, substeps=config.substeps)
    with torch.no_grad():
        targets = distillation_batch(teacher, batch, d, plan, config)
        z_end = targets.z_end
        size = batch.x0.shape[-2:]
        fixed = 0.5 + torch.rand(1, 1, 1, *size, generator=torch.Generator().manual_seed(3)) if fixed_map else None
        objective = DistillObjective(student, motion_weight, fixed)
        out = compute_losses(objective=objective, batch=batch, draws=d, targets=targets, config=config)

        # by hand, docs/design.md §3.3 steps 2-6 and §3.5, from the raw SD1.5 table
        abar = SD15_SCHEDULE.alphas_cumprod
        def a(t: float) -> float:
            return float(abar[max(round(1000 * t) - 1, 0)])
        l_d, l_g = [], []
        for i in range(2):
            k, t = int(d.window[i]), float(d.t[i])
            tk, tk1 = k / 4, (k - 1) / 4
            x0, eps = batch.x0[i : i + 1], d.eps[i : i + 1]
            motion = x0.std(dim=1).mean(dim=1)  # (1, h, w): each pixel's std over the chunk's frames
            pix = (1 + motion_weight * motion / motion.mean()) / (1 + motion_weight)  # train.weighting
            if fixed is not None:  # a dataset map replaces each chunk's own
                pix = fixed.view(1, *size)
            z_tk = math.sqrt(a(tk)) * x0 + math.sqrt(1 - a(tk)) * eps
            lam = math.sqrt(a(tk1) / a(tk))
            eta = math.sqrt(1 - a(tk1)) - math.sqrt(a(tk1) * (1 - a(tk)) / a(tk))
            assert eta < 0
            zhat = z_end[i : i + 1]
            z_in = z_tk + (z_tk - zhat) / (tk - tk1) * (t - tk)
            target = (zhat - lam * z_tk) / eta
            z_star = math.sqrt(a(tk1)) * x0 + math.sqrt(1 - a(tk1)) * eps
            z_in_gt = z_tk + (z_tk - z_star) / (tk - tk1) * (t - tk)
            torch.testing.assert_close((z_star - lam * z_tk) / eta, eps, atol=2e-4, rtol=1e-4)  # eps* = eps
            sub = _slice(batch, d, i)
            ts = torch.tensor([1000 * t])
            err_d = (target - _student_eps(student, sub[0], z_in, ts, sub[1], cfg_mode != "none")).square()
            err_g = (eps - _student_eps(student, sub[0], z_in_gt, ts, sub[1], cfg_mode != "none")).square()
            l_d.append((err_d * pix[:, None, None]).mean())
            l_g.append((err_g * pix[:, None, None]).mean())
        l_d, l_g = torch.stack(l_d), torch.stack(l_g)
        r = l_g / l_d
        w = torch.where(r < 30, 0.2 * r**0.25, torch.where(r < 100, 0.2 * 30**0.25 * (100 - r) / 70, 0 * r))
        total = (l_d + w * l_g).mean()
    torch.testing.assert_close(out.l_distill, l_d, rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(out.l_gt, l_g, rtol=2e-3, atol=1e-5)
    torch.testing.assert_close(out.weight, w, rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(out.total, total, rtol=2e-3, atol=1e-6)
    with pytest.raises(ValueError, match="motion_weight"):
        dataclasses.replace(config, motion_weight=-1.0)


def _slice(batch, d, i):
    b = distill_mod.ChunkBatch(batch.x0[i : i + 1], batch.reference[i : i + 1], batch.motion[i : i + 1],
                               batch.audio[i : i + 1], batch.clip_ids[i : i + 1], batch.starts[i : i + 1])
    dd = teacher_mod.StepDraws(*(x[i : i + 1] for x in dataclasses.astuple(d)))
    return b, dd


@pytest.mark.parametrize("name", ["fast", "balanced"])
def test_trainer_step_is_the_library_composition(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 name: str) -> None:
    """A distillation step's student inputs and targets are fada_rt.sampling.make_distillation_batch's, on the
    step's chunks and draws with the teacher as the run calls it, and its loss is computed from exactly them."""
    import fada_rt.sampling

    _, teacher, cache = world
    assert teacher_mod.make_distillation_batch is fada_rt.sampling.make_distillation_batch
    config = _quick(VARIANTS[name], steps=1)
    seen = []

    def spy(**kwargs):
        seen.append(out := make_distillation_batch(**kwargs))
        return out

    monkeypatch.setattr(teacher_mod, "make_distillation_batch", spy)
    sampler = ChunkSampler(cache, config=teacher.config, seed=config.seed)
    losses = distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / name)
    assert len(seen) == 1 and len(losses) == 1

    # the same step by hand: the step's chunks and draws, the teacher's guidance, the library's composition
    windows = PerflowWindows(num_windows=config.num_windows, target=config.target)
    plan = WindowSolvePlan.make(windows=windows, substeps=config.substeps)
    batch = sampler.batch(step=0, batch_size=config.batch_size, rank=0)
    d = draw_step(batch, config, windows, step=0, rank=0)
    with torch.no_grad():
        conditions = teacher.conditions(batch.reference, batch.motion, batch.audio)
        if config.cfg_conditioned:
            denoiser = BranchedDenoiser(teacher.denoiser, conditions)
            guidance = Guidance(mode="multi", cfg_a=d.cfg[:, 0], cfg_r=d.cfg[:, 1])
        else:
            denoiser = teacher_mod.SampleBranchDenoiser(teacher, conditions, d.keep_audio, d.keep_ref)
            guidance = Guidance(mode="conditional")
    expected = make_distillation_batch(teacher=denoiser, x0=batch.x0, eps=d.eps, t=d.t, window=d.window,
                                       guidance=guidance, plan=plan, ground_truth=config.uses_gt)
    got = seen[0]
    assert got.teacher_nfe == expected.teacher_nfe == config.substeps * (3 if config.cfg_conditioned else 1)
    tol = {"rtol": 2e-2, "atol": 2e-3} if torch.cuda.is_available() else {"rtol": 1e-4, "atol": 1e-5}  # TF32 convs
    for key in ("z_t", "target", "z_t_gt", "target_gt", "timestep", "z_end"):
        torch.testing.assert_close(getattr(got, key).cpu(), getattr(expected, key), **tol)
    student = teacher.make_student(config.cfg_mode, seed=config.seed).set_trainable().train()  # distill's start
    with torch.no_grad():
        out = compute_losses(objective=DistillObjective(student), batch=batch, draws=d, targets=expected,
                             config=config)
    assert losses[0] == pytest.approx(out.total.item(), rel=tol["rtol"])

    # a cached window end skips the teacher and gives the same batch; no ground-truth segment when not asked
    cached = make_distillation_batch(teacher=None, x0=batch.x0, eps=d.eps, t=d.t, window=d.window, guidance=None,
                                     plan=plan, z_end=expected.z_end, ground_truth=False)
    assert cached.teacher_nfe == 0 and cached.z_t_gt is None and cached.target_gt is None
    torch.testing.assert_close(cached.z_t, expected.z_t, rtol=0, atol=0)
    torch.testing.assert_close(cached.target, expected.target, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs the teacher"):
        make_distillation_batch(teacher=None, x0=batch.x0, eps=d.eps, t=d.t, window=d.window, guidance=None,
                                plan=plan)
    # and the window solve inside is the library's (Eq. 2)
    z_start = window_start_latent(x0=batch.x0, eps=d.eps, window=d.window, windows=windows)
    z_end = teacher_window_solve(denoiser=denoiser, z_start=z_start, window=d.window, guidance=guidance, plan=plan)
    torch.testing.assert_close(expected.z_end, z_end.z_end, rtol=0, atol=0)
    torch.testing.assert_close(expected.target, perflow_target(z_start=z_start, z_end=z_end.z_end, window=d.window,
                                                               windows=windows), rtol=0, atol=0)


def test_weight_is_zero_beyond_the_dead_threshold(world) -> None:
    """Sample 0's window end is made consistent with the student (L_distill ~ 0, so R >> R_d);
    sample 1's is the ground-truth end (L_distill = L_GT, so R = 1 and W = W0)."""
    config = _quick(dataclasses.replace(VARIANTS["balanced"], gt=GTWeightConfig(mode="adaptive", s=0.25)))
    teacher, batch, d, windows = _fixed_step(world, config)
    # eps-parametrised: the fixed point below contracts only when eps_s hardly depends on z_t; a v
    # network's eps carries sqrt(1 - abar) z_t, and eta_k down to -2.5 makes the iteration diverge
    student = teacher.make_student("none").set_prediction("epsilon")
    objective = DistillObjective(student)
    plan = WindowSolvePlan.make(windows=windows, substeps=config.substeps)
    with torch.no_grad():
        z_start = window_start_latent(x0=batch.x0, eps=d.eps, window=d.window, windows=windows)
        z_end = ground_truth_end(x0=batch.x0, eps=d.eps, window=d.window, windows=windows)
        lam, eta = windows.coefficients(d.window)
        shape = (-1, 1, 1, 1, 1)
        for _ in range(8):  # fixed point: the window end the student's own prediction implies
            z_t = student_input(z_start=z_start, z_end=z_end, t=d.t, window=d.window, windows=windows)
            eps_s = _student_eps(student, batch, z_t, d.t * 1000, d, False)
            implied = lam.view(shape).float() * z_start + eta.view(shape).float() * eps_s
            z_end = torch.cat([implied[:1], z_end[1:]])
        targets = distillation_batch(teacher, batch, d, plan, config, z_end=z_end)  # the teacher is not called
        out = compute_losses(objective=objective, batch=batch, draws=d, targets=targets, config=config)
    assert out.ratio[0] >= 100 and out.weight[0] == 0
    torch.testing.assert_close(out.ratio[1], torch.tensor(1.0), rtol=1e-5, atol=0)
    torch.testing.assert_close(out.weight[1], torch.tensor(0.2), rtol=1e-5, atol=0)
    torch.testing.assert_close(out.total, (out.l_distill + out.weight * out.l_gt).mean())


def test_solve_cache_is_reused(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, teacher, cache = world
    config = _quick(VARIANTS["B-fixed-0.2"])
    sampler = ChunkSampler(cache, config=teacher.config, seed=0)
    solves = SolveCache(tmp_path / "solves", teacher_digest=weights_digest(teacher), data_digest="d", config=config)
    first = distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / "a",
                    solve_cache=solves)
    assert len(list(solves.folder.glob("r0_s*.safetensors"))) == 2
    # another variant of the same family reuses the solves; the teacher is never called again
    other = _quick(VARIANTS["B-adaptive-0.5"])
    assert other.solve_key() == config.solve_key()
    same = SolveCache(tmp_path / "solves", teacher_digest=weights_digest(teacher), data_digest="d", config=other)
    assert same.folder == solves.folder

    def no_teacher(*args, **kwargs):
        raise AssertionError("the cached solve should have been used")

    monkeypatch.setattr(teacher_mod, "teacher_denoiser", no_teacher)
    again = distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / "b",
                    solve_cache=solves)
    assert_same_run(again, first)
    fast = _quick(VARIANTS["fast"])
    assert SolveCache(tmp_path / "solves", teacher_digest=weights_digest(teacher), data_digest="d",
                      config=fast).folder != solves.folder
    for other in ({"motion_noise_steps": 50}, {"noise_sharing_max": 0.5}):  # other inputs, other solves
        assert SolveCache(tmp_path / "solves", teacher_digest=weights_digest(teacher), data_digest="d",
                          config=dataclasses.replace(config, **other)).folder != solves.folder


def test_cfg_ranges_bound_the_drawn_scales(world) -> None:
    """--cfg-a-range / --cfg-r-range: every drawn scale lies in its range, the ranges key the solves,
    and a reversed or negative range is refused (also on the command line, as for a branch-wise variant)."""
    _, teacher, cache = world
    config = dataclasses.replace(_quick(VARIANTS["fast"]), cfg_a_range=(1.5, 2.5), cfg_r_range=(1.0, 1.25),
                                 batch_size=64)
    sampler = ChunkSampler(cache, config=teacher.config, seed=0)
    windows = PerflowWindows(num_windows=config.num_windows, target=config.target)
    batch = sampler.batch(step=0, batch_size=config.batch_size, rank=0)
    cfg = torch.cat([draw_step(batch, config, windows, step=s, rank=0).cfg for s in range(4)])  # (256, 2)
    assert cfg[:, 0].min() >= 1.5 and cfg[:, 0].max() <= 2.5 and cfg[:, 0].max() - cfg[:, 0].min() > 0.9
    assert cfg[:, 1].min() >= 1.0 and cfg[:, 1].max() <= 1.25 and cfg[:, 1].max() - cfg[:, 1].min() > 0.2
    assert config.solve_key() != VARIANTS["fast"].solve_key()
    for bad in ((2.0, 1.0), (-1.0, 2.0), (1.0, math.inf)):
        with pytest.raises(ValueError, match="cfg_a_range must be"):
            dataclasses.replace(config, cfg_a_range=bad)
    with pytest.raises(SystemExit):
        distill_mod.main(["--teacher", "t", "--data", "d", "--cache", "c", "--run", "r", "--variant", "balanced",
                          "--cfg-a-range", "1", "3"])


def test_cfg_lr_scale_speeds_up_only_the_cfg_conditioning(world, tmp_path: Path) -> None:
    """cfg_lr_scale multiplies the learning rate of the parameters make_student adds (tokens, CFG layers),
    which start inert; AdamW's steps scale with the learning rate, the teacher's weights' do not."""
    _, teacher, cache = world
    sampler = ChunkSampler(cache, config=teacher.config, seed=0)
    moved = {}
    for scale in (1.0, 10.0):
        config = dataclasses.replace(_quick(VARIANTS["fast"], steps=1), cfg_lr_scale=scale)
        distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / str(scale))
        student, _ = load_model(tmp_path / str(scale) / "student", role="student")
        start = teacher.make_student("layer_tokens", seed=config.seed).state_dict()  # distill's init
        delta = {n: (p - start[n]).abs().sum().item() for n, p in student.state_dict().items()}
        moved[scale] = (sum(v for n, v in delta.items() if student.is_cfg_parameter(n)),
                        sum(v for n, v in delta.items() if not student.is_cfg_parameter(n)))
    assert moved[1.0][0] > 0 and moved[1.0][1] > 0
    assert 8.0 < moved[10.0][0] / moved[1.0][0] < 12.0
    assert moved[10.0][1] == pytest.approx(moved[1.0][1], rel=1e-3)
    with pytest.raises(ValueError, match="cfg_lr_scale must be"):
        dataclasses.replace(VARIANTS["fast"], cfg_lr_scale=0.0)


def test_streaming_student_targets_come_from_each_frames_own_window_solve(world) -> None:
    """Per-frame windows: every frame's teacher window end is that of a solve of the whole clip at the frame's window
    (the teacher knows one level per clip), and inputs/targets follow per frame."""
    config = _quick(VARIANTS["stream"], substeps=2)
    _, teacher, cache = world
    batch = ChunkSampler(cache, config=teacher.config, seed=0).batch(step=3, batch_size=2).first_frames(3)
    windows = PerflowWindows(num_windows=config.num_windows)
    d = draw_step(batch, config, windows, step=3, rank=0)
    assert d.t.shape == d.window.shape == (2, 3) and bool((d.t[:, 1:] >= d.t[:, :-1]).all())
    d.t[:] = torch.tensor([[0.2, 0.45, 0.95], [0.6, 0.7, 0.95]])
    d.window[:] = windows.window_of(d.t)
    plan = WindowSolvePlan.make(windows=windows, substeps=config.substeps)
    targets = distillation_batch(teacher, batch, d, plan, config)
    conditions = teacher.conditions(batch.reference, batch.motion, batch.audio)
    guidance = Guidance(mode="multi", cfg_a=d.cfg[:, 0], cfg_r=d.cfg[:, 1])
    for k in (1, 2, 3, 4):
        window = torch.full((2,), k)
        z_start = window_start_latent(x0=batch.x0, eps=d.eps, window=window, windows=windows)
        solved = teacher_window_solve(denoiser=BranchedDenoiser(teacher.denoiser, conditions), z_start=z_start,
                                      window=window, guidance=guidance, plan=plan).z_end
        mine = d.window == k  # (B, F)
        torch.testing.assert_close(targets.z_end[mine], solved[mine], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(targets.timestep, d.t * 1000)
    student = teacher.make_student(config.cfg_mode)
    out = compute_losses(objective=DistillObjective(student), batch=batch, draws=d, targets=targets, config=config)
    assert out.l_distill.shape == (2,) and bool(torch.isfinite(out.total))


def test_a_streaming_run_starts_from_the_student_it_is_given(world, tmp_path: Path) -> None:
    _, teacher, cache = world
    config = _quick(VARIANTS["stream"], steps=1)
    init = teacher.make_student("layer_tokens", seed=1)
    randomize_zero_init(init, seed=9)
    sampler = ChunkSampler(cache, config=teacher.config, seed=0)
    distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / "s", init=init)
    trained, _ = load_model(tmp_path / "s" / "student", role="student")
    fresh = teacher.make_student("layer_tokens", seed=config.seed)
    def distance(a, b) -> float:
        pb = dict(b.named_parameters())
        return sum(float((p.detach() - pb[n].detach()).square().sum()) for n, p in a.named_parameters()) ** 0.5

    assert distance(trained, init) < 0.1 * distance(fresh, init)  # one small step from init, not from the teacher
    rows = (tmp_path / "s" / "samples.csv").read_text().splitlines()
    assert ";" in rows[1].split(",")[4] or rows[1].split(",")[4].isdigit()  # per-frame windows
    with pytest.raises(ValueError, match="cfg mode"):
        distill(teacher=copy.deepcopy(teacher), sampler=sampler, config=config, run_dir=tmp_path / "t",
                init=teacher.make_student("none"))
    with pytest.raises(ValueError, match="motion_map 'dataset'"):
        dataclasses.replace(config, motion_weight=1.0, motion_map="chunk")
