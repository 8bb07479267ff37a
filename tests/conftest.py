"""Shared fixtures: tiny random-init models and chunks (CPU, seconds)."""

from __future__ import annotations

import os

import pytest
import torch

from fada_rt.config import get_preset
from fada_rt.models.fada import FadaModel

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tiny_model(seed: int = 0, **config_changes) -> FadaModel:
    """A random-init tiny FadaModel in eval mode (seeded: tests only)."""
    torch.manual_seed(seed)
    config = get_preset("tiny")
    if config_changes:
        config = config.replace(**config_changes)
    return FadaModel(config).eval()


def tiny_wav2vec2(seed: int = 0):
    """A 2-layer, 32-wide random-init transformers Wav2Vec2Model (group-norm feature encoder), eval mode."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    return Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=4)).eval()


def make_wav2vec2_model(seed: int = 0) -> FadaModel:
    """The tiny preset with :func:`tiny_wav2vec2` as its audio front-end (the sd15 kind of front-end), eval mode."""
    from fada_rt.config import AudioConfig
    from fada_rt.models.audio import build_audio_frontend

    config = get_preset("tiny").replace(audio=AudioConfig(kind="wav2vec2", num_layers=2, dim=32))
    return FadaModel(config, audio_encoder=build_audio_frontend(config.audio, tiny_wav2vec2(seed))).eval()


def assert_same_run(a: list[float], b: list[float]) -> None:
    """Losses of two training runs that must replay each other: bit-identical on the CPU; on a CUDA GPU (where
    accelerate trains whenever there is one) equal up to rounding, since cuDNN/cuBLAS kernels are not bitwise
    reproducible run to run (two identical 8-step runs differed by 5e-6 relative on an H200)."""
    if torch.cuda.is_available():
        assert a == pytest.approx(b, rel=1e-4)
    else:
        assert a == b


def randomize_zero_init(model: torch.nn.Module, seed: int = 1, scale: float = 0.2) -> None:
    """Give the zero-initialised output projections (temporal, CFG) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("temporal.attn.to_out" in name or "cfg_attn.to_out" in name or "cond_proj" in name):
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def random_chunk(model: FadaModel, *, batch: int = 1, seed: int = 0):
    """(z, timestep, conditions) for one chunk of random latents/audio."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    h = cfg.latent_size
    c = cfg.vae.latent_channels
    f, m = cfg.num_frames, cfg.motion_frames
    wave = torch.randn(batch, f * cfg.audio.samples_per_frame, generator=gen) * 0.1
    with torch.no_grad():
        cond = model.conditions(
            torch.randn(batch, c, h, h, generator=gen),
            torch.randn(batch, m, c, h, h, generator=gen),
            model.audio_features(wave),
        )
    z = torch.randn(batch, f, c, h, h, generator=gen)
    t = torch.full((batch,), 600.0)
    return z, t, cond


@pytest.fixture
def tiny_model() -> FadaModel:
    return make_tiny_model()


SUITE_THREADS = 1  # tiny models run fastest on one torch thread; README's `pytest -n 2` runs two test processes


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Loading a model sets torch's (process-wide) threads: every test starts on the suite's, whatever a fixture or
    an earlier test loaded."""
    torch.set_num_threads(SUITE_THREADS)


@pytest.fixture(scope="session")
def shipped():
    """The shipped tiny fast student on one CPU thread, loaded once for the tests of the call API and adapters."""
    from fada_rt.backends.options import LoadOptions
    from fada_rt.pipeline import AvatarPipeline

    return AvatarPipeline.load(LoadOptions(threads=1))
