"""The FADA networks on the tiny preset: shapes, branches, temporal/motion paths, CFG students."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, random_chunk, randomize_zero_init, tiny_wav2vec2

from fada_rt.config import AudioConfig, ModelConfig, get_preset
from fada_rt.models.audio import MelFrontend, Wav2Vec2Frontend, num_video_frames, window_features
from fada_rt.models.denoiser import eps_from_v
from fada_rt.models.fada import FadaModel
from fada_rt.sampling import SD15_SCHEDULE


def test_shapes_through_every_module(tiny_model: FadaModel) -> None:
    cfg = tiny_model.config
    f, m, h = cfg.num_frames, cfg.motion_frames, cfg.latent_size
    assert (h, cfg.vae.downsample_factor) == (16, 4)
    with torch.no_grad():
        images = torch.rand(3, 3, 64, 64) * 2 - 1
        latents = tiny_model.vae.encode(images)
        assert latents.shape == (3, 4, 16, 16)
        assert tiny_model.vae.decode(latents).shape == (3, 3, 64, 64)

        wave = torch.randn(2, 16000 + 1) * 0.1  # one sample into frame 25
        feats = tiny_model.audio_encoder(wave)
        assert feats.shape == (2, 26, cfg.audio.num_layers, cfg.audio.dim)
        windows = tiny_model.audio_features(wave)
        assert windows.shape == (2, 26, 5, 4, 32)
        tokens = tiny_model.audio_proj(windows)
        assert tokens.shape == (2, 26, cfg.audio_proj.num_tokens, cfg.unet.cross_attention_dim)

        ref_feats = tiny_model.reference_net(latents[:2])
        assert len(ref_feats) == tiny_model.denoiser.num_layers == 7
        widths = [b.norm1.normalized_shape[0] for b in tiny_model.denoiser.blocks]
        for feat, width in zip(ref_feats, widths):
            assert feat.shape[0] == 2 and feat.shape[2] == width
            assert feat.shape[1] in (16 * 16, 8 * 8)

        z, t, cond = random_chunk(tiny_model, batch=2)
        assert [mf.shape[:2] for mf in cond.motion] == [(2, m)] * 7
        assert cond.audio_tokens.shape == (2, f, 8, 64)
        eps = tiny_model.bind(cond)(z, t, branches=("a", "r", "b"))
        assert eps.shape == (3, 2, f, 4, h, h)
        assert torch.isfinite(eps).all()


def test_window_features_replicates_edges() -> None:
    feats = torch.arange(6.0).view(1, 6, 1, 1)
    win = window_features(feats, 2)[0, :, :, 0, 0]
    assert win[0].tolist() == [0, 0, 0, 1, 2]
    assert win[3].tolist() == [1, 2, 3, 4, 5]
    assert win[5].tolist() == [3, 4, 5, 5, 5]


def test_mel_frontend_frames_and_locality() -> None:
    cfg = get_preset("tiny").audio
    mel = MelFrontend(cfg)
    assert num_video_frames(640 * 10, cfg) == 10 and num_video_frames(640 * 10 + 1, cfg) == 11
    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(1, 640 * 20, generator=gen) * 0.1
    base = mel(wave)
    # A change in video frame 10's samples only reaches frames whose STFT windows overlap it.
    poked = wave.clone()
    poked[0, 640 * 10 + 300] += 0.5
    diff = (mel(poked) - base).abs().amax(dim=(0, 2, 3))
    assert diff[10] > 1e-3
    assert torch.all(diff[:9] == 0) and torch.all(diff[12:] == 0)
    # A 440 Hz tone peaks in the mel band that contains 440 Hz.
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)[None]
    band = mel(tone)[0, 5:20].mean(dim=(0, 1)).argmax().item()
    fb = mel.filterbank
    bin_440 = round(440 * cfg.n_fft / 16000)
    assert band == fb[:, bin_440].argmax().item()


def test_wav2vec2_frontend_shapes() -> None:
    w2v = tiny_wav2vec2(seed=0)
    cfg = AudioConfig(kind="wav2vec2", num_layers=2, dim=32)
    front = Wav2Vec2Frontend(cfg, w2v)
    with torch.no_grad():
        out = front(torch.randn(1, 16000 * 2) * 0.1)
    assert out.shape == (1, 50, 2, 32)
    with pytest.raises(ValueError, match="preset expects"):
        Wav2Vec2Frontend(AudioConfig(kind="wav2vec2", num_layers=12, dim=768), w2v)


@pytest.mark.parametrize("mode", ["layer_tokens", "layer_mlp", "time_embed"])
def test_student_equals_teacher_at_init_then_depends_on_cfg(mode: str) -> None:
    teacher = make_tiny_model(seed=3)
    randomize_zero_init(teacher)  # a trained teacher has non-zero temporal layers
    student = teacher.make_student(mode)
    assert student.denoiser.cfg_conditioned and student.config.cfg.mode == mode
    z, t, cond = random_chunk(teacher)
    cfg = torch.tensor([[6.5, 2.0]])
    with torch.no_grad():
        eps_teacher = teacher.bind(cond)(z, t, branches=("a",))
        eps_student = student.bind(cond)(z, t, branches=("a",), cfg=cfg)
        assert torch.equal(eps_teacher, eps_student)

        randomize_zero_init(student, seed=7)
        eps_1 = student.bind(cond)(z, t, branches=("a",), cfg=cfg)
        eps_2 = student.bind(cond)(z, t, branches=("a",), cfg=torch.tensor([[3.0, 1.5]]))
    assert (eps_1 - eps_2).abs().max() > 1e-4
    with pytest.raises(ValueError, match="pass cfg"):
        student.bind(cond)(z, t, branches=("a",))
    with pytest.raises(ValueError, match="takes no cfg"):
        teacher.bind(cond)(z, t, branches=("a",), cfg=cfg)


def test_branches_change_the_output(tiny_model: FadaModel) -> None:
    z, t, cond = random_chunk(tiny_model)
    with torch.no_grad():
        eps = tiny_model.bind(cond)(z, t, branches=("a", "r", "b"))
        alone = tiny_model.bind(cond)(z, t, branches=("a",))[0]
    eps_a, eps_r, eps_b = eps
    assert (eps_a - eps_r).abs().max() > 1e-4, "zeroing the audio tokens must change eps"
    assert (eps_r - eps_b).abs().max() > 1e-4, "dropping the reference must change eps"
    torch.testing.assert_close(eps_a, alone, atol=1e-5, rtol=1e-5)  # batching branches is exact up to float


def test_reference_null_equals_attention_without_reference(tiny_model: FadaModel) -> None:
    """Masked reference keys = attention over h alone: any reference gives the same b-branch."""
    z, t, cond = random_chunk(tiny_model)
    with torch.no_grad():
        eps_b = tiny_model.bind(cond)(z, t, branches=("b",))
        cond.reference.keys = [k * 0 + 5.0 for k in cond.reference.keys]
        cond.reference.values = [v.flip(1) for v in cond.reference.values]
        eps_b_other = tiny_model.bind(cond)(z, t, branches=("b",))
        eps_a_other = tiny_model.bind(cond)(z, t, branches=("a",))
    torch.testing.assert_close(eps_b, eps_b_other, atol=1e-6, rtol=1e-6)
    assert (eps_b - eps_a_other).abs().max() > 1e-4


def test_temporal_attention_mixes_frames_and_motion() -> None:
    model = make_tiny_model(seed=5)
    z, t, cond = random_chunk(model)
    den = model.bind(cond)
    z2 = z.clone()
    z2[:, 5] += torch.randn_like(z2[:, 5])
    with torch.no_grad():
        # zero-initialised temporal layers: frames are independent, motion frames unused
        base, poked = den(z, t, branches=("a",))[0], den(z2, t, branches=("a",))[0]
        assert torch.equal(base[:, :5], poked[:, :5]) and not torch.equal(base[:, 5], poked[:, 5])
        randomize_zero_init(model)
        base, poked = den(z, t, branches=("a",))[0], den(z2, t, branches=("a",))[0]
        assert (base[:, 0] - poked[:, 0]).abs().max() > 1e-4, "frame 5 must reach frame 0"
        other_motion = model.motion_features(torch.randn(1, model.config.motion_frames, 4, 16, 16))
        cond.motion = other_motion
        moved = den(z, t, branches=("a",))[0]
    assert (moved[:, 0] - base[:, 0]).abs().max() > 1e-4, "motion frames must change the first frame"


def test_reference_net_freezes_only_unused_tail(tiny_model: FadaModel) -> None:
    frozen = {n for n, p in tiny_model.reference_net.named_parameters() if not p.requires_grad}
    assert any("conv_out" in n for n in frozen)
    latents = torch.randn(2, 4, 16, 16)
    feats = tiny_model.reference_net(latents)
    sum(f.square().mean() for f in feats).backward()
    for name, p in tiny_model.reference_net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} is trainable but gets no gradient"


def test_eps_from_v_inverts_the_v_parametrisation() -> None:
    """z = sqrt(a) x0 + sqrt(1-a) eps, v = sqrt(a) eps - sqrt(1-a) x0  =>  eps_from_v(z, v, a) = eps."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 2, 4, 4, 4, generator=gen).unbind(0)  # (3, F=2, C, h, w) each
    abar = torch.tensor([0.0047, 0.3, 0.999])
    a = abar.view(-1, 1, 1, 1, 1)
    z = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(eps_from_v(z, v, abar), eps, atol=1e-5, rtol=1e-5)


def test_v_prediction_denoiser_returns_eps_of_its_raw_output() -> None:
    """A v-prediction model outputs sqrt(1-abar) z + sqrt(abar) raw, abar at the rounded, clamped
    network timestep (teacher index t or student 1000 t); 'epsilon' returns raw; weights are shared."""
    model = make_tiny_model(seed=3)
    assert model.config.prediction == "v"  # the tiny preset's parametrisation
    z, _, cond = random_chunk(model)
    abar = SD15_SCHEDULE.alphas_cumprod.float()
    for t, index in [(0.0, 0), (600.4, 600), (999.0, 999), (1000.0, 999)]:
        timestep = torch.tensor([t])
        with torch.no_grad():
            out_v = model.set_prediction("v").bind(cond)(z, timestep, branches=("a",))[0]
            raw = model.set_prediction("epsilon").bind(cond)(z, timestep, branches=("a",))[0]
        a = abar[index]
        torch.testing.assert_close(out_v, (1 - a).sqrt() * z + a.sqrt() * raw, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown prediction"):
        model.set_prediction("x0")


def test_prediction_in_config_round_trip_and_default() -> None:
    config = get_preset("tiny")
    data = config.to_dict()
    assert ModelConfig.from_dict(data).prediction == "v"
    del data["prediction"]  # checkpoints written before the key existed are epsilon models
    assert ModelConfig.from_dict(data).prediction == "epsilon"
    assert get_preset("sd15").prediction == "epsilon"  # SD1.5's own parametrisation
    with pytest.raises(ValueError, match=r"model\.prediction"):
        ModelConfig.from_dict({**data, "prediction": "sample"})


def test_a_timestep_per_frame(tiny_model: FadaModel) -> None:
    """Timesteps (B, F): the same value in every frame is the clip's timestep exactly; each frame gets its own
    time embedding (changing one frame's level changes that frame most); a v-prediction model converts each
    frame with its own abar (the pipelined sampler's mixed noise levels, docs/design.md §8)."""
    z, t, cond = random_chunk(tiny_model)
    f = z.shape[1]
    denoise = tiny_model.bind(cond)
    with torch.no_grad():
        shared = denoise(z, t, branches=("a", "r"))
        per_frame = denoise(z, t[:, None].expand(-1, f), branches=("a", "r"))
        mixed_t = t[:, None].expand(-1, f).clone()
        mixed_t[0, 0] = 100.0
        mixed = denoise(z, mixed_t, branches=("a",))[0]
    torch.testing.assert_close(per_frame, shared, atol=1e-5, rtol=1e-5)
    change = (mixed - shared[0]).abs().flatten(2).mean(-1)[0]  # (F,)
    assert change[0] > 1e-3 and change[0] == change.max()
    with pytest.raises(ValueError, match=r"per-frame timestep must be \(B, F\)"):
        tiny_model.denoiser(z, torch.full((1, f + 1), 600.0), cond.audio_tokens, cond.reference.keys,
                            cond.reference.values, cond.motion)

    model = make_tiny_model(seed=3)
    z, _, cond = random_chunk(model)
    levels = torch.linspace(50.0, 950.0, f)[None]  # (1, F)
    with torch.no_grad():
        out_v = model.set_prediction("v").bind(cond)(z, levels, branches=("a",))[0]
        raw = model.set_prediction("epsilon").bind(cond)(z, levels, branches=("a",))[0]
    a = SD15_SCHEDULE.alphas_cumprod.float()[levels.round().long()].view(1, f, 1, 1, 1)
    torch.testing.assert_close(out_v, (1 - a).sqrt() * z + a.sqrt() * raw, atol=1e-5, rtol=1e-5)
