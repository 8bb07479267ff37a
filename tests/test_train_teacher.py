"""Teacher training on a few synthetic clips: the loss falls, and resuming replays the run exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_run, make_tiny_model

from fada_rt.sampling import SD15_SCHEDULE
from train.cache import build_synthetic_cache, open_cache, weights_digest
from train.data import ChunkSampler
from train.loop import LoopConfig
from train.teacher import (
    TeacherObjective,
    TeacherTrainConfig,
    check_sync_expert,
    fixed_eval_batch,
    timestep_weights,
    train_teacher,
)
from train.weighting import dataset_motion_map, motion_weight_map


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("teacher")
    model = make_tiny_model(seed=0)
    # the cache of python -m train.synthetic's clips, without writing them (tests/test_cache.py)
    build_synthetic_cache(data=root / "data", out=root / "cache", vae=model.vae, config=model.config, clips=4,
                          seed=3, tier="A", min_seconds=1.2, max_seconds=1.6)
    cache = open_cache(root / "cache", config=model.config, vae_digest=weights_digest(model.vae))
    return root, cache


def _sampler(model, cache) -> ChunkSampler:
    return ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.2)


def _config(*, steps: int, checkpoint_every: int = 1000, lr: float = 1e-3) -> TeacherTrainConfig:
    loop = LoopConfig(steps=steps, lr=lr, warmup_steps=1, ema_decay=0.9, checkpoint_every=checkpoint_every,
                      log_every=5)
    return TeacherTrainConfig(loop=loop, batch_size=2, p_drop_audio=0.2, p_drop_both=0.2)


def _eval_loss(model, sampler) -> float:
    batch, eps, t, keep_a, keep_r = fixed_eval_batch(sampler, batch_size=6)
    with torch.no_grad():  # on the CPU: training leaves the model on accelerate's device (a GPU if there is one)
        return TeacherObjective(model.cpu().eval())(batch, eps, t, keep_a, keep_r).mean().item()


def test_twenty_steps_lower_the_loss(tiny_cache, tmp_path: Path) -> None:
    _, cache = tiny_cache
    model = make_tiny_model(seed=0)
    sampler = _sampler(model, cache)
    before = _eval_loss(model, sampler)
    losses = train_teacher(model=model.train(), sampler=sampler, config=_config(steps=20), run_dir=tmp_path / "run")
    after = _eval_loss(model, sampler)
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert after < 0.85 * before, f"fixed-batch loss {before:.4f} -> {after:.4f}"
    assert (tmp_path / "run" / "teacher" / "model.safetensors").is_file()
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,loss,grad_norm,lr")


def test_resume_replays_the_same_losses(tiny_cache, tmp_path: Path) -> None:
    _, cache = tiny_cache
    config = _config(steps=8, checkpoint_every=4)
    full = train_teacher(model=make_tiny_model(seed=0).train(), sampler=_sampler(make_tiny_model(), cache),
                         config=config, run_dir=tmp_path / "full")
    first = train_teacher(model=make_tiny_model(seed=0).train(), sampler=_sampler(make_tiny_model(), cache),
                          config=config, run_dir=tmp_path / "split", stop_after=4)
    # a fresh process would rebuild the model from scratch: use other init weights to prove they are replaced
    second = train_teacher(model=make_tiny_model(seed=99).train(), sampler=_sampler(make_tiny_model(), cache),
                           config=config, run_dir=tmp_path / "split")
    assert len(first) == 4 and len(second) == 4
    assert_same_run(first + second, full)
    # a time limit stops the call after the step that reaches it, with a resumable checkpoint
    timed = train_teacher(model=make_tiny_model(seed=0).train(), sampler=_sampler(make_tiny_model(), cache),
                          config=config, run_dir=tmp_path / "timed", time_limit=0.0)
    assert len(timed) == 1
    assert (tmp_path / "timed" / "teacher-latest" / "model.safetensors").is_file()
    assert not (tmp_path / "timed" / "teacher").exists()  # the final export waits for the last step
    rest = train_teacher(model=make_tiny_model(seed=99).train(), sampler=_sampler(make_tiny_model(), cache),
                         config=config, run_dir=tmp_path / "timed")
    assert_same_run(timed + rest, full)
    assert (tmp_path / "timed" / "teacher" / "model.safetensors").is_file()


def test_resume_refuses_another_config(tiny_cache, tmp_path: Path) -> None:
    _, cache = tiny_cache
    train_teacher(model=make_tiny_model().train(), sampler=_sampler(make_tiny_model(), cache),
                  config=_config(steps=4, checkpoint_every=2), run_dir=tmp_path / "r", stop_after=2)
    with pytest.raises(ValueError, match="another config"):
        train_teacher(model=make_tiny_model().train(), sampler=_sampler(make_tiny_model(), cache),
                      config=_config(steps=4, checkpoint_every=2, lr=5e-4), run_dir=tmp_path / "r")


def test_resume_a_run_saved_before_an_option_existed(tiny_cache, tmp_path: Path) -> None:
    """A saved run_config without a newer key resumes when that option is at its default (the old behaviour)."""
    import json

    _, cache = tiny_cache
    train_teacher(model=make_tiny_model().train(), sampler=_sampler(make_tiny_model(), cache),
                  config=_config(steps=3, checkpoint_every=2), run_dir=tmp_path / "r", stop_after=2)
    state = tmp_path / "r" / "checkpoints" / "step_0000002" / "state.json"
    meta = json.loads(state.read_text())
    for key in ("motion_weight", "motion_noise_steps", "noise_sharing_max", "audio_lr_scale",
                "motion_map"):  # a run before these options
        del meta["run_config"][key]
    meta["run_config"]["loop"]["mixed_precision"] = "no"  # accelerate's name, saved before fada_rt.precision
    for group in meta["optimizer"]["param_groups"]:
        del group["lr_scale"]
    state.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another config"):
        train_teacher(model=make_tiny_model().train(), sampler=_sampler(make_tiny_model(), cache),
                      config=dataclasses.replace(_config(steps=3, checkpoint_every=2), motion_weight=1.0),
                      run_dir=tmp_path / "r")
    losses = train_teacher(model=make_tiny_model().train(), sampler=_sampler(make_tiny_model(), cache),
                           config=_config(steps=3, checkpoint_every=2), run_dir=tmp_path / "r")
    assert len(losses) == 1  # resumed at step 2


def test_audio_lr_scale_moves_the_audio_path_faster(tiny_cache, tmp_path: Path) -> None:
    """AdamW's first step moves each weight by ~lr (m_hat / sqrt(v_hat) = sign(g)): audio-path weights by
    lr x audio_lr_scale, all others by lr."""
    _, cache = tiny_cache
    lr, scale = 1e-3, 4.0
    model = make_tiny_model(seed=0).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = dataclasses.replace(_config(steps=1, lr=lr), audio_lr_scale=scale)
    train_teacher(model=model, sampler=_sampler(model, cache), config=config, run_dir=tmp_path / "r")
    steps = {True: [], False: []}
    for n, p in model.named_parameters():
        delta = (p.detach().cpu() - before[n]).abs().flatten()
        steps[model.is_audio_parameter(n)].append(delta[delta > 0.5 * lr])  # weights whose gradient was not 0
    audio, other = torch.cat(steps[True]), torch.cat(steps[False])
    assert audio.numel() > 1000 and other.numel() > 1000
    assert audio.median().item() == pytest.approx(scale * lr, rel=0.02)
    assert other.median().item() == pytest.approx(lr, rel=0.02)
    names = [n for n, _ in model.named_parameters() if model.is_audio_parameter(n)]
    assert any(n.startswith("audio_proj.") for n in names) and any(".attn2." in n for n in names)
    assert not any("reference_net" in n for n in names)
    with pytest.raises(ValueError, match="audio_lr_scale"):
        dataclasses.replace(config, audio_lr_scale=0.0)


@pytest.fixture(scope="module")
def sync_expert_dir(tiny_cache) -> Path:
    from train.sync_expert import main as sync_main

    root, _ = tiny_cache
    sync_main(["--data", str(root / "data"), "--cache", str(root / "cache"), "--out", str(root / "expert"),
               "--steps", "5", "--heldout", "1", "--clips-per-batch", "4"])
    return root / "expert"


def test_sync_loss_adds_the_experts_term(tiny_cache, sync_expert_dir: Path) -> None:
    """Per sample: Eq. 1 + w (1 - mean_k cos_k) on the x0 prediction, only where audio is kept and t <= max."""
    from train.sync_expert import load_sync_expert

    _, cache = tiny_cache
    scores = json.loads((sync_expert_dir / "config.json").read_text())["scores"]
    assert scores["clips"] == 1 and 0.0 <= scores["offset_accuracy"] <= 1.0
    model = make_tiny_model(seed=0)
    expert = check_sync_expert(sync_expert_dir, model)
    batch, eps, _, _, keep_ref = fixed_eval_batch(_sampler(model, cache), batch_size=4)
    t = torch.tensor([100, 300, 400, 700])
    keep_audio = torch.tensor([True, False, True, True])
    plain = TeacherObjective(model)
    synced = TeacherObjective(model, sync_expert=expert, sync_weight=0.5, sync_max_t=500)
    matched = TeacherObjective(model, sync_expert=expert, sync_weight=0.5, sync_max_t=500, sync_target="video")
    hinged = TeacherObjective(model, sync_expert=expert, sync_weight=0.5, sync_max_t=500, sync_target="audio-hinge")
    with torch.no_grad():
        base, total = plain(batch, eps, t, keep_audio, keep_ref), synced(batch, eps, t, keep_audio, keep_ref)
        total_video = matched(batch, eps, t, keep_audio, keep_ref)
        total_hinge = hinged(batch, eps, t, keep_audio, keep_ref)
        a = SD15_SCHEDULE.alphas_cumprod.float()[t].view(-1, 1, 1, 1, 1)
        z_t = a.sqrt() * batch.x0 + (1 - a).sqrt() * eps
        ref = model.reference(batch.reference)
        pred = model.denoiser(z_t, t.float(), model.audio_proj(batch.audio) * keep_audio.view(-1, 1, 1, 1).float(),
                              ref.keys, ref.values, model.motion_features(batch.motion), ref_mask=keep_ref)
        x0 = (z_t - (1 - a).sqrt() * pred) / a.sqrt()
        fresh = load_sync_expert(sync_expert_dir)[0]
        window_cos = fresh.chunk_cosines(x0, batch.audio)  # (B, K)
        truth_cos = fresh.chunk_cosines(batch.x0, batch.audio)
        cos = window_cos.mean(1)
        video_cos = fresh.chunk_video_cosines(x0, batch.x0).mean(1)
    deficit = (truth_cos - window_cos).clamp(min=0).mean(1)
    used = torch.tensor([1.0, 0.0, 1.0, 0.0])  # audio dropped; t > 500
    assert torch.allclose(total, base + 0.5 * (1 - cos) * used, rtol=1e-5, atol=1e-7)
    assert torch.allclose(total_video, base + 0.5 * (1 - video_cos) * used, rtol=1e-5, atol=1e-7)
    assert torch.allclose(total_hinge, base + 0.5 * deficit * used, rtol=1e-5, atol=1e-7)
    # an untrained denoiser's x0 is less in sync than the truth in some windows and not in others: both branches
    assert ((truth_cos - window_cos)[[0, 2]] > 0).any() and ((truth_cos - window_cos)[[0, 2]] < 0).any()
    assert not torch.allclose(video_cos, cos, atol=1e-3)
    assert synced.sync_cosine == pytest.approx(cos[[0, 2]].mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="another VAE"):
        check_sync_expert(sync_expert_dir, make_tiny_model(seed=5))
    with pytest.raises(ValueError, match="needs a sync_expert"):
        dataclasses.replace(_config(steps=1), sync_weight=0.1)
    with pytest.raises(ValueError, match="sync_target must be one of"):
        dataclasses.replace(_config(steps=1), sync_target="mouth")


def test_training_with_the_sync_loss_logs_its_cosine(tiny_cache, sync_expert_dir: Path, tmp_path: Path) -> None:
    _, cache = tiny_cache
    model = make_tiny_model(seed=0).train()
    config = dataclasses.replace(_config(steps=5), sync_expert=str(sync_expert_dir), sync_weight=0.1, sync_max_t=999)
    losses = train_teacher(model=model, sampler=_sampler(model, cache), config=config, run_dir=tmp_path / "r")
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert len(losses) == 5 and "sync_cosine" in header
    assert -1.0 <= float(last[header.index("sync_cosine")]) <= 1.0


def test_sampler_is_a_function_of_the_step(tiny_cache) -> None:
    _, cache = tiny_cache
    model = make_tiny_model()
    a = _sampler(model, cache).batch(step=5, batch_size=3)
    b = _sampler(model, cache).batch(step=5, batch_size=3)
    c = _sampler(model, cache).batch(step=6, batch_size=3)
    assert torch.equal(a.x0, b.x0) and a.starts == b.starts and a.clip_ids == b.clip_ids
    assert not torch.equal(a.x0, c.x0)
    cfg = model.config
    assert a.x0.shape == (3, cfg.num_frames, 4, 16, 16)
    assert a.motion.shape == (3, cfg.motion_frames, 4, 16, 16)
    assert a.audio.shape == (3, cfg.num_frames, 5, 4, 32)
    # motion frames are the frames before the chunk (or the reference where there are none)
    clip = cache[a.clip_ids[0]]["latents"].float()
    s = a.starts[0]
    if s >= cfg.motion_frames and not torch.equal(a.motion[0, 0], a.reference[0]):
        torch.testing.assert_close(a.motion[0], clip[s - cfg.motion_frames : s])


def test_motion_noise_perturbs_only_the_motion_frames(tiny_cache) -> None:
    _, cache = tiny_cache
    model = make_tiny_model()
    clean = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.2).batch(step=3, batch_size=32)
    noisy = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.2,
                         motion_noise_steps=16).batch(step=3, batch_size=64)
    again = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.2,
                         motion_noise_steps=16).batch(step=3, batch_size=64)
    clean = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.2).batch(step=3, batch_size=64)
    # the same chunks (the noise comes from its own random stream) ...
    assert clean.clip_ids == noisy.clip_ids and clean.starts == noisy.starts
    assert torch.equal(clean.x0, noisy.x0) and torch.equal(clean.reference, noisy.reference)
    assert torch.equal(clean.audio, noisy.audio)
    assert torch.equal(noisy.motion, again.motion)  # a function of the step, like every draw
    # ... forward-noised to a training index s ~ U{0..15} drawn per chunk from the noise stream
    rng = np.random.default_rng([0, 3, 0, 1])
    steps = rng.integers(0, 16, size=64)
    n = torch.from_numpy(rng.standard_normal(tuple(clean.motion.shape), dtype=np.float32))
    abar = SD15_SCHEDULE.alphas_cumprod[steps].where(torch.from_numpy(steps) > 0, torch.ones(()))
    a = abar.float().view(-1, 1, 1, 1, 1)
    assert torch.allclose(noisy.motion, a.sqrt() * clean.motion + (1 - a).sqrt() * n, atol=1e-6)
    assert torch.equal(noisy.motion[steps == 0], clean.motion[steps == 0])  # s = 0: clean motion frames
    assert 0 < (steps == 0).sum() < 64
    for bad in (-1, 1001, 0.5):
        with pytest.raises(ValueError, match="motion_noise_steps"):
            ChunkSampler(cache, config=model.config, seed=0, motion_noise_steps=bad)


def test_truncated_snr_weighting(tiny_cache) -> None:
    """lambda(t) = max(1, (1 - abar) / abar): 1 while SNR >= 1, the x0-loss weight 1/SNR beyond."""
    abar = SD15_SCHEDULE.alphas_cumprod.float()
    w = timestep_weights(abar, "truncated_snr")
    a999 = float(abar[999])
    assert w[0] == 1.0 and w[300] == 1.0 and w[400] > 1.0  # abar crosses 0.5 (SNR 1) at index 354
    assert float(w[999]) == pytest.approx((1 - a999) / a999, rel=1e-6) and 200 < float(w[999]) < 220
    assert torch.all(w[1:] >= w[:-1])  # non-decreasing in t
    assert torch.equal(timestep_weights(abar, "uniform"), torch.ones(1000))
    with pytest.raises(ValueError, match="loss_weighting"):
        TeacherTrainConfig(loss_weighting="snr")
    _, cache = tiny_cache
    model = make_tiny_model(seed=0).eval()
    batch, eps, t, keep_a, keep_r = fixed_eval_batch(_sampler(model, cache), batch_size=4)
    with torch.no_grad():
        plain = TeacherObjective(model)(batch, eps, t, keep_a, keep_r)
        weighted = TeacherObjective(model, "truncated_snr")(batch, eps, t, keep_a, keep_r)
    torch.testing.assert_close(weighted, plain * w[t], rtol=1e-5, atol=0)


def test_motion_weight_map_favours_moving_pixels(tiny_cache) -> None:
    """w = (1 + k s / mean(s)) / (1 + k): 1 / (1 + k) where nothing moves, mean 1, ones for k = 0."""
    x0 = torch.zeros(2, 8, 4, 16, 16)
    x0[0, :, :, 5:7, 5:9] = torch.arange(8.0).view(8, 1, 1, 1)  # only a 2 x 4 patch changes over the frames
    x0[1] = torch.randn(8, 4, 16, 16)
    w = motion_weight_map(x0, 1.0)
    assert w.shape == (2, 1, 1, 16, 16)
    torch.testing.assert_close(w.mean(dim=(1, 2, 3, 4)), torch.ones(2))  # the loss keeps its scale
    still = torch.ones(16, 16, dtype=torch.bool)
    still[5:7, 5:9] = False
    assert torch.all(w[0, 0, 0][still] == 0.5)  # 1 / (1 + k)
    # the patch's s / mean(s) = 256 / 8 = 32 -> (1 + 32) / 2
    torch.testing.assert_close(w[0, 0, 0][~still], torch.full((8,), 16.5))
    assert torch.equal(motion_weight_map(x0, 0.0), torch.ones(2, 1, 1, 16, 16))
    with pytest.raises(ValueError, match="motion_weight"):
        TeacherTrainConfig(motion_weight=-1.0)
    # in the objective: k = 0 is the plain loss to the bit; k > 0 reweights the same errors
    _, cache = tiny_cache
    model = make_tiny_model(seed=0).eval()
    batch, eps, t, keep_a, keep_r = fixed_eval_batch(_sampler(model, cache), batch_size=4)
    with torch.no_grad():
        plain = TeacherObjective(model)(batch, eps, t, keep_a, keep_r)
        zero = TeacherObjective(model, motion_weight=0.0)(batch, eps, t, keep_a, keep_r)
        weighted = TeacherObjective(model, motion_weight=2.0)(batch, eps, t, keep_a, keep_r)
        a = SD15_SCHEDULE.alphas_cumprod.float()[t].view(-1, 1, 1, 1, 1)
        reference = model.reference(batch.reference)
        tokens = model.audio_proj(batch.audio) * keep_a.view(-1, 1, 1, 1).float()
        pred = model.denoiser(a.sqrt() * batch.x0 + (1 - a).sqrt() * eps, t.float(), tokens, reference.keys,
                              reference.values, model.motion_features(batch.motion), ref_mask=keep_r)
        err = (pred - eps).square()
    assert torch.equal(zero, plain)
    expected = (err * motion_weight_map(batch.x0, 2.0)).flatten(1).mean(1)
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=0)
    assert not torch.allclose(weighted, plain)


def test_dataset_motion_map_is_one_map_that_keeps_the_conditional_mean(tiny_cache) -> None:
    """The training set's mean per-pixel std through the same formula; unlike each chunk's own map, its
    weighted least-squares optimum over samples that share a condition is their plain mean."""
    _, cache = tiny_cache
    model = make_tiny_model(seed=0).eval()
    sampler = _sampler(model, cache)
    fixed = dataset_motion_map(sampler, 1.0, batches=3, batch_size=2)
    x0 = torch.cat([sampler.batch(step=2**41 + i, batch_size=2).x0 for i in range(3)])  # (6, F, C, h, w)
    s = x0.std(dim=1).mean(dim=1).mean(0)  # (h, w)
    assert fixed.shape == (1, 1, 1, 16, 16)
    torch.testing.assert_close(fixed[0, 0, 0], (1 + s / s.mean()) / 2)
    assert torch.equal(dataset_motion_map(sampler, 1.0, batches=3, batch_size=2), fixed)  # deterministic
    assert torch.equal(dataset_motion_map(sampler, 0.0), torch.ones(1, 1, 1, 16, 16))

    # two chunks of one condition: pixel (4, 4) still at 0 in one, moving around 1 in the other
    pair = torch.zeros(2, 8, 4, 16, 16)
    pair[0] = 0.1 * torch.randn(8, 4, 16, 16)
    pair[0, :, :, 4, 4] = 0.0
    pair[1] = 0.1 * torch.randn(8, 4, 16, 16)
    pair[1, :, :, 4, 4] = 1.0 + 0.5 * torch.tensor([1.0, -1.0] * 4).view(8, 1)

    def optimum(w: torch.Tensor) -> torch.Tensor:  # argmin_f sum_i w_i (f - x_i)^2 at the pixel, over frames and chunks
        w = w.expand_as(pair)[:, :, :, 4, 4]
        return (w * pair[:, :, :, 4, 4]).sum() / w.sum()

    mean = pair[:, :, :, 4, 4].mean()
    assert optimum(motion_weight_map(pair, 1.0)) > mean + 0.3  # tilted towards the moving chunk
    torch.testing.assert_close(optimum(fixed), mean)

    # in the objective the fixed map replaces each chunk's own
    batch, eps, t, keep_a, keep_r = fixed_eval_batch(sampler, batch_size=4)
    with torch.no_grad():
        own = TeacherObjective(model, motion_weight=1.0)(batch, eps, t, keep_a, keep_r)
        one = TeacherObjective(model, motion_weight=1.0, motion_map=fixed)(batch, eps, t, keep_a, keep_r)
        plain = TeacherObjective(model)(batch, eps, t, keep_a, keep_r)
        a = SD15_SCHEDULE.alphas_cumprod.float()[t].view(-1, 1, 1, 1, 1)
        reference = model.reference(batch.reference)
        pred = model.denoiser(a.sqrt() * batch.x0 + (1 - a).sqrt() * eps, t.float(), model.audio_proj(batch.audio),
                              reference.keys, reference.values, model.motion_features(batch.motion), ref_mask=keep_r)
    torch.testing.assert_close(one, ((pred - eps).square() * fixed).flatten(1).mean(1), rtol=1e-5, atol=0)
    assert not torch.allclose(one, own) and not torch.allclose(one, plain)
    with pytest.raises(ValueError, match="motion_map must be one of"):
        TeacherTrainConfig(motion_map="mouth")


def test_prediction_override_fine_tunes_an_epsilon_checkpoint(tiny_cache, tmp_path: Path) -> None:
    """--init an epsilon teacher with --prediction v: same weights, v config, saved and reloaded as v."""
    from fada_rt.checkpoint import load_model, save_model
    from train.teacher import build_teacher_model

    _, cache = tiny_cache
    eps_model = make_tiny_model(seed=0, prediction="epsilon")
    save_model(eps_model, tmp_path / "eps", role="teacher")
    model = build_teacher_model(preset="tiny", init=str(tmp_path / "eps"), prediction="v")
    assert model.config.prediction == "v" and model.denoiser.config.prediction == "v"
    for (name, p), q in zip(model.state_dict().items(), eps_model.state_dict().values()):
        assert torch.equal(p, q), name
    same = build_teacher_model(preset="tiny", init=str(tmp_path / "eps"))
    assert same.config.prediction == "epsilon"  # no override: the checkpoint's parametrisation
    train_teacher(model=model, sampler=_sampler(model, cache), config=_config(steps=2), run_dir=tmp_path / "run")
    reloaded, _ = load_model(tmp_path / "run" / "teacher", role="teacher")
    assert reloaded.config.prediction == "v"


def test_reference_sink_holds_the_reference_in_the_first_slot(tiny_cache, tmp_path: Path) -> None:
    """--reference-sink: motion slot 0 is the chunk's reference latent (never noised), the others the frames
    before the chunk; the trained checkpoint tells the runtime so (and where its motion noise sits)."""
    _, cache = tiny_cache
    model = make_tiny_model()
    plain = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.0).batch(step=2, batch_size=16)
    sink = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.0, reference_sink=True,
                        motion_noise_steps=40).batch(step=2, batch_size=16)
    assert torch.equal(sink.motion[:, 0], sink.reference)  # clean
    assert torch.equal(sink.x0, plain.x0) and torch.equal(sink.reference, plain.reference)
    clean_sink = ChunkSampler(cache, config=model.config, seed=0, p_motion_from_reference=0.0,
                              reference_sink=True).batch(step=2, batch_size=16)
    assert torch.equal(clean_sink.motion[:, 1], plain.motion[:, 1])  # M = 2: the frame just before the chunk
    assert not torch.equal(sink.motion[:, 1], clean_sink.motion[:, 1])  # noised
    config = dataclasses.replace(_config(steps=2), reference_sink=True, motion_noise_steps=40, noise_sharing_max=0.5)
    sampler = ChunkSampler(cache, config=model.config, seed=0, reference_sink=True, motion_noise_steps=40)
    train_teacher(model=model.train(), sampler=sampler, config=config, run_dir=tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "teacher" / "config.json").read_text())["model"]["rollout"]
    assert saved == {"motion_noise_step": 20, "noise_sharing": 0.5, "reference_sink": True, "motion_anchor": 0.0}
