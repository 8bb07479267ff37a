"""torch vs onnxruntime: the same checkpoint, the same chunks, the same seed (docs/design.md §4, §5).

Tolerances: frames within 2 uint8 levels, motion latents and reference K/V within 1e-4 absolute
(the exporter's own graph parity is ~1e-6 relative; measured here: frames <= 1 level, latents ~1e-5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, randomize_zero_init

from fada_rt.backends import LoadOptions, create_backend
from fada_rt.checkpoint import save_model
from fada_rt.generate import generate_video
from fada_rt.media import write_wav
from fada_rt.pipeline import AvatarPipeline
from fada_rt.video_out import probe_video

FRAME_TOL = 2  # uint8 levels
LATENT_TOL = 1e-4


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from fada_rt.export.engines import export_engines

    root = tmp_path_factory.mktemp("ort")
    model = make_tiny_model(seed=4).make_student("layer_tokens")
    randomize_zero_init(model)
    save_model(model, root / "fast", role="student")
    export_engines(checkpoint=root / "fast", out=root / "engines", chunk=False, log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def run_chunks(pipeline: AvatarPipeline, face: np.ndarray, wave: np.ndarray, n_chunks: int):
    avatar = pipeline.prepare(face)
    windows = pipeline.audio_windows(wave)
    state = pipeline.initial_state(avatar)
    gen = torch.Generator().manual_seed(5)
    frames, motions = [], []
    for c in range(n_chunks):
        out, state = pipeline.generate(avatar, windows[:, 8 * c:8 * c + 8], state, generator=gen)
        frames.append(out)
        motions.append(state.motion_latents.cpu())
    return avatar, np.concatenate(frames).astype(int), motions


def test_torch_and_onnxruntime_agree_chunk_by_chunk(engines, face):
    torch_pipe = AvatarPipeline(create_backend(LoadOptions("torch", checkpoint=engines / "fast")))
    ort_pipe = AvatarPipeline(create_backend(LoadOptions("onnxruntime", engine_dir=engines / "engines")))
    assert ort_pipe.backend.name == "onnxruntime" and ort_pipe.nfe == 6
    wave = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    a_t, f_t, m_t = run_chunks(torch_pipe, face, wave, 3)
    a_o, f_o, m_o = run_chunks(ort_pipe, face, wave, 3)
    assert (a_t.latent - a_o.latent.to(a_t.latent)).abs().max() < LATENT_TOL
    for k_t, k_o in zip(a_t.reference.keys, a_o.reference.keys):
        assert (k_t - k_o.to(k_t)).abs().max() < LATENT_TOL
    assert np.abs(f_t - f_o).max() <= FRAME_TOL
    for mt, mo in zip(m_t, m_o):  # motion latents carried across chunks agree too
        assert (mt - mo).abs().max() < LATENT_TOL


def test_onnxruntime_engines_know_their_role_and_preset(engines):
    with pytest.raises(ValueError, match="use --sampler fast"):
        AvatarPipeline.from_checkpoint(backend="onnxruntime", engine_dir=engines / "engines", sampler="balanced")
    with pytest.raises(ValueError, match="preset 'tiny', not 'sd15'"):
        create_backend(LoadOptions("onnxruntime", engine_dir=engines / "engines", preset="sd15"))


def test_generate_runs_on_onnxruntime(engines, face, tmp_path):
    wave = (np.random.default_rng(1).standard_normal(14000) * 0.1).astype(np.float32)
    write_wav(tmp_path / "a.wav", wave)
    pipeline = AvatarPipeline.from_checkpoint(backend="onnxruntime", engine_dir=engines / "engines")
    result = generate_video(pipeline=pipeline, image=face, crop="centre", audio=tmp_path / "a.wav", out=tmp_path / "o.mp4",
                            size=64, progress=False)
    info = probe_video(tmp_path / "o.mp4")
    assert result.frames == info.frames == math.ceil(14000 / 640)
