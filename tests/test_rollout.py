"""Chaining chunks: mixed noise prior, motion-frame noise, and how the pipeline and the trainers use them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from test_pipeline import Recorder, face, fast_model, windows_for  # noqa: F401  (face: fixture)

from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import load_model, save_model, set_rollout
from fada_rt.config import ModelConfig, RolloutConfig
from fada_rt.pipeline import AvatarPipeline
from fada_rt.sampling import SD15_SCHEDULE, noise_motion, share_noise
from train.data import draw_shared_noise


def test_share_noise_keeps_unit_variance_and_correlates_frames_by_rho() -> None:
    gen = torch.Generator().manual_seed(0)
    own, shared = torch.randn(4, 3, 20000, generator=gen), torch.randn(4, 1, 20000, generator=gen)
    rho = torch.tensor([0.0, 0.3, 0.9, 1.0])
    eps = share_noise(own, shared, rho)
    assert torch.equal(eps[0], own[0]) and torch.equal(eps[3], shared[3].expand(3, -1))
    for b in range(4):
        assert eps[b].var().item() == pytest.approx(1.0, abs=0.03)
        corr = np.corrcoef(eps[b].numpy())  # (3, 3) over the frames
        off_diagonal = corr[~np.eye(3, dtype=bool)]
        assert np.allclose(off_diagonal, rho[b].item(), atol=0.03)
    assert torch.equal(share_noise(own, shared, 0.3), share_noise(own, shared, torch.full((4,), 0.3)))
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\)"):
        share_noise(own, own, 0.5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        share_noise(own, shared, 1.5)


def test_noise_motion_is_the_forward_process_at_a_training_index() -> None:
    gen = torch.Generator().manual_seed(1)
    m, n = torch.randn(3, 2, 4, 8, 8, generator=gen), torch.randn(3, 2, 4, 8, 8, generator=gen)
    assert noise_motion(m, n, 0) is m  # clean
    abar = float(SD15_SCHEDULE.alphas_cumprod[50])  # 0.9526
    assert torch.allclose(noise_motion(m, n, 50), math.sqrt(abar) * m + math.sqrt(1 - abar) * n)
    per = noise_motion(m, n, torch.tensor([0, 50, 999]))
    assert torch.equal(per[0], m[0])
    assert torch.allclose(per[1], noise_motion(m, n, 50)[1], atol=1e-6)
    assert torch.allclose(per[2], noise_motion(m, n, 999)[2], atol=1e-6)
    with pytest.raises(ValueError, match="motion noise step"):
        noise_motion(m, n, 1000)


def test_draw_shared_noise_leaves_the_other_draws_alone() -> None:
    eps = torch.randn(64, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    assert draw_shared_noise(eps, 0.0, torch.Generator().manual_seed(1)) is eps
    mixed = draw_shared_noise(eps, 0.9, torch.Generator().manual_seed(1))
    frames = mixed.flatten(2)  # (B, F, D)
    corr = torch.stack([torch.corrcoef(f)[0, 1] for f in frames])  # frame 0 vs 1, per sample
    assert corr.min() > -0.5 and 0.3 < corr.mean() < 0.6 and corr.max() < 0.99  # rho ~ U(0, 0.9): mean 0.45
    with pytest.raises(ValueError, match="noise_sharing_max"):
        draw_shared_noise(eps, 1.5, torch.Generator())


def test_default_rollout_is_the_plain_pipeline(face) -> None:  # noqa: F811
    """RolloutConfig() feeds clean motion frames and independent noise: the pipeline as before."""
    model = fast_model()
    assert model.config.rollout == RolloutConfig()
    backend = TorchBackend(model)
    a = AvatarPipeline(backend)
    b = AvatarPipeline(backend, rollout=RolloutConfig(motion_noise_step=0, noise_sharing=0.0))
    avatar = a.prepare(face)
    windows = windows_for(a, 0.64)
    outs = []
    for pipe in (a, b):
        state, gen, frames = pipe.initial_state(avatar), torch.Generator().manual_seed(3), []
        for c in range(2):
            f, state = pipe.generate(avatar, windows[:, 8 * c:8 * c + 8], state, generator=gen)
            frames.append(f)
        assert state.shared_noise is None
        outs.append(np.concatenate(frames))
    assert np.array_equal(outs[0], outs[1])


def test_rollout_noises_only_what_conditions_and_shares_noise_for_the_session(face) -> None:  # noqa: F811
    backend = Recorder(TorchBackend(fast_model()))
    pipeline = AvatarPipeline(backend, rollout=RolloutConfig(motion_noise_step=100, noise_sharing=0.8))
    avatar = pipeline.prepare(face)
    windows = windows_for(pipeline, 0.96)
    state, gen = pipeline.initial_state(avatar), torch.Generator().manual_seed(0)
    shared = []
    for c in range(3):
        _, state = pipeline.generate(avatar, windows[:, 8 * c:8 * c + 8], state, generator=gen)
        shared.append(state.shared_noise)
        # the carried motion latents are the clean generated ones; what conditioned the chunk was noised
        assert torch.equal(state.motion_latents[0], backend.decoded[-1][-2:])
    assert shared[0].shape == (1, 1, 4, 16, 16)
    assert shared[0] is shared[1] is shared[2]  # drawn once per session
    abar = float(SD15_SCHEDULE.alphas_cumprod[100])
    fed = backend.motion_in[1][0]  # chunk 1 was conditioned on chunk 0's last latents, noised
    clean = backend.decoded[0][-2:]
    residual = (fed - math.sqrt(abar) * clean) / math.sqrt(1 - abar)  # the drawn noise
    assert residual.std().item() == pytest.approx(1.0, abs=0.1)


def test_rollout_travels_with_the_checkpoint(tmp_path, capsys) -> None:
    from fada_rt.checkpoint import main as checkpoint_main

    save_model(make_tiny_model(), tmp_path / "t", role="teacher")
    assert load_model(tmp_path / "t")[0].config.rollout == RolloutConfig()
    assert set_rollout(tmp_path / "t", RolloutConfig(motion_noise_step=40, noise_sharing=0.9)).rollout.noise_sharing == 0.9
    model, _ = load_model(tmp_path / "t")
    assert model.config.rollout == RolloutConfig(motion_noise_step=40, noise_sharing=0.9)
    assert AvatarPipeline(TorchBackend(model), sampler="teacher-6x1").rollout == model.config.rollout
    checkpoint_main([str(tmp_path / "t"), "--set-rollout", "motion_anchor=0.5", "noise_sharing=1"])
    assert load_model(tmp_path / "t")[0].config.rollout == RolloutConfig(motion_noise_step=40, noise_sharing=1.0,
                                                                       motion_anchor=0.5)
    assert "'motion_anchor': 0.5" in capsys.readouterr().out
    for bad, says in ((["motion_noise_step=10.5"], "must be int"), (["sink=1"], "unknown config keys"),
                      (["noise_sharing"], "KEY=VALUE"), (["motion_anchor=2"], "motion_anchor")):
        with pytest.raises(SystemExit):
            checkpoint_main([str(tmp_path / "t"), "--set-rollout", *bad])
        assert says in capsys.readouterr().err
    old = make_tiny_model().config.to_dict()
    del old["rollout"]  # a checkpoint written before the key existed
    assert ModelConfig.from_dict(old).rollout == RolloutConfig()
    for bad in ({"motion_noise_step": 1000}, {"noise_sharing": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RolloutConfig(**bad)


def test_reference_sink_feeds_the_portrait_first(face) -> None:  # noqa: F811
    backend = Recorder(TorchBackend(fast_model()))
    pipeline = AvatarPipeline(backend, rollout=RolloutConfig(motion_noise_step=30, reference_sink=True))
    avatar = pipeline.prepare(face)
    windows = windows_for(pipeline, 0.96)
    state, gen = pipeline.initial_state(avatar), torch.Generator().manual_seed(0)
    for c in range(3):
        _, state = pipeline.generate(avatar, windows[:, 8 * c:8 * c + 8], state, generator=gen)
    for fed in backend.motion_in:
        assert torch.equal(fed[0, 0], avatar.latent[0])  # the sink, never noised
    abar = float(SD15_SCHEDULE.alphas_cumprod[30])
    residual = (backend.motion_in[2][0, 1] - math.sqrt(abar) * backend.decoded[1][-1]) / math.sqrt(1 - abar)
    assert residual.std().item() == pytest.approx(1.0, abs=0.1)  # slot 1: the last generated latent, noised
    assert torch.equal(state.motion_latents[0], backend.decoded[-1][-2:])  # the state keeps the last M


def test_motion_anchor_pulls_the_motion_frames_to_the_portrait(face) -> None:  # noqa: F811
    """motion_anchor a: the next chunk is conditioned on ref + (1 - a) (generated - ref); the state keeps the
    generated latents, so an error is scaled by (1 - a) once per chunk and cannot pile up."""
    backend = Recorder(TorchBackend(fast_model()))
    pipeline = AvatarPipeline(backend, rollout=RolloutConfig(motion_anchor=0.5))
    avatar = pipeline.prepare(face)
    windows = windows_for(pipeline, 0.64)
    state, gen = pipeline.initial_state(avatar), torch.Generator().manual_seed(0)
    for c in range(2):
        _, state = pipeline.generate(avatar, windows[:, 8 * c:8 * c + 8], state, generator=gen)
    ref = avatar.latent[0]
    assert torch.equal(backend.motion_in[0][0, 0], ref)  # the first chunk: the portrait itself
    assert torch.allclose(backend.motion_in[1][0], ref + 0.5 * (backend.decoded[0][-2:] - ref), atol=1e-6)
    assert torch.equal(state.motion_latents[0], backend.decoded[-1][-2:])
    with pytest.raises(ValueError, match="motion_anchor"):
        RolloutConfig(motion_anchor=1.5)
