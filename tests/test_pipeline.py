"""AvatarPipeline over the torch backend: avatar cache, motion latents, samplers, precision, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, make_wav2vec2_model, randomize_zero_init

from fada_rt.backends import BackendUnavailable, LoadOptions, create_backend
from fada_rt.backends.torch_backend import TorchBackend, keep_norms_fp32, prepare_model
from fada_rt.checkpoint import CheckpointError, save_model
from fada_rt.pipeline import AvatarPipeline


class Recorder:
    """Wraps a backend and records the calls the pipeline makes."""

    def __init__(self, backend):
        self.inner = backend
        self.calls: dict[str, int] = {}
        self.decoded: list[torch.Tensor] = []
        self.motion_in: list[torch.Tensor] = []
        self.tokens: list[torch.Tensor] = []
        self.branch_evals = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def encode(self, images):
        self._count("encode")
        return self.inner.encode(images)

    def reference(self, latent):
        self._count("reference")
        return self.inner.reference(latent)

    def decode(self, latents):
        self.decoded.append(latents.clone())
        return self.inner.decode(latents)

    def conditions(self, reference, motion_latents, windows):
        self.motion_in.append(motion_latents.clone())
        cond = self.inner.conditions(reference, motion_latents, windows)
        self.tokens.append(cond.audio_tokens)
        return cond

    def bind(self, conditions):
        inner = self.inner.bind(conditions)
        outer = self

        class Counting:
            cfg_conditioned = inner.cfg_conditioned

            def __call__(self, z, t, *, branches, cfg=None):
                outer.branch_evals += len(branches)
                return inner(z, t, branches=branches, cfg=cfg)

        return Counting()


def fast_model(seed: int = 0):
    model = make_tiny_model(seed=seed).make_student("layer_tokens")
    randomize_zero_init(model)
    return model


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (80, 96, 3), dtype=np.uint8)


def windows_for(pipeline: AvatarPipeline, seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return pipeline.audio_windows((rng.standard_normal(round(16000 * seconds)) * 0.1).astype(np.float32))


def test_prepare_runs_the_reference_once_per_avatar(face):
    backend = Recorder(TorchBackend(fast_model()))
    pipeline = AvatarPipeline(backend)
    a = pipeline.prepare(face)
    b = pipeline.prepare(face.copy())  # same pixels: served from the cache
    assert a is b and backend.calls == {"encode": 1, "reference": 1}
    c = pipeline.prepare(face[:, ::-1].copy())
    assert c is not a and backend.calls == {"encode": 2, "reference": 2}
    assert a.image.shape == (64, 64, 3) and a.latent.shape == (1, 4, 16, 16)
    state = pipeline.initial_state(a)
    assert state.motion_latents.shape == (1, 2, 4, 16, 16)
    assert torch.equal(state.motion_latents[:, 0], a.latent[:, :]) and torch.equal(state.motion_latents[:, 1], a.latent)


def test_motion_frames_are_the_last_generated_latents(face):
    """No decode/encode round trip: chunk c+1 is conditioned on the latents chunk c decoded."""
    backend = Recorder(TorchBackend(fast_model()))
    pipeline = AvatarPipeline(backend)
    avatar = pipeline.prepare(face)
    windows = windows_for(pipeline, 0.96)  # 24 frames
    state = pipeline.initial_state(avatar)
    gen = torch.Generator().manual_seed(0)
    for c in range(3):
        frames, state = pipeline.generate(avatar, windows[:, 8 * c:8 * c + 8], state, generator=gen)
        assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
        assert torch.equal(state.motion_latents[0], backend.decoded[-1][-2:])
    assert torch.equal(backend.motion_in[0][0, 0], avatar.latent[0])
    assert torch.equal(backend.motion_in[1][0], backend.decoded[0][-2:])
    assert torch.equal(backend.motion_in[2][0], backend.decoded[1][-2:])
    assert backend.calls["encode"] == 1  # only the portrait was ever encoded
    assert state.chunks == 3


def test_partial_chunk_pads_with_the_last_window_and_trims(face):
    backend = Recorder(TorchBackend(fast_model()))
    pipeline = AvatarPipeline(backend)
    avatar = pipeline.prepare(face)
    windows = windows_for(pipeline, 0.12)  # 3 frames
    frames, state = pipeline.generate(avatar, windows, pipeline.initial_state(avatar),
                                      generator=torch.Generator().manual_seed(0))
    assert frames.shape == (3, 64, 64, 3)
    tokens = backend.tokens[-1][0]  # (F, N, D): frames 3..7 repeat frame 2
    assert all(torch.equal(tokens[k], tokens[2]) for k in range(3, 8))
    assert torch.equal(state.motion_latents[0], backend.decoded[-1][-2:])
    with pytest.raises(ValueError, match="1 <= n <= 8"):
        pipeline.generate(avatar, windows_for(pipeline, 0.4), state, generator=torch.Generator())


def test_generation_is_seeded_by_the_explicit_generator(face):
    pipeline = AvatarPipeline(TorchBackend(fast_model()))
    avatar = pipeline.prepare(face)
    windows = windows_for(pipeline, 0.32)

    def run(seed):
        return pipeline.generate(avatar, windows, pipeline.initial_state(avatar),
                                 generator=torch.Generator().manual_seed(seed))[0]

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 0.5


def test_chunks_start_from_the_forward_noised_reference(face):
    """z_1 = sqrt(abar[999]) ref + sqrt(1 - abar[999]) eps, eps from the explicit generator."""
    import math

    from fada_rt.sampling import SD15_SCHEDULE

    pipeline = AvatarPipeline(TorchBackend(fast_model()))
    avatar = pipeline.prepare(face)
    starts = []
    inner = pipeline.sampler

    class Spy:
        rolling = False  # a chunk sampler, as the spec it wraps

        def run(self, *, denoiser, noise):
            starts.append(noise.clone())
            return inner.run(denoiser=denoiser, noise=noise)

    pipeline.sampler = Spy()
    pipeline.generate(avatar, windows_for(pipeline, 0.32), pipeline.initial_state(avatar),
                      generator=torch.Generator().manual_seed(3))
    eps = torch.randn((1, 8, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    a = float(SD15_SCHEDULE.alphas_cumprod[999])
    assert 0.0046 < a < 0.0047
    expected = math.sqrt(a) * avatar.latent[:, None] + math.sqrt(1 - a) * eps
    torch.testing.assert_close(starts[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("sampler", "cfg_mode", "nfe"), [("fast", "layer_tokens", 6), ("balanced", "none", 18),
                                                          ("teacher", None, 75)])
def test_each_sampler_spends_its_nfe(face, sampler, cfg_mode, nfe):
    model = make_tiny_model() if cfg_mode is None else make_tiny_model().make_student(cfg_mode)
    backend = Recorder(TorchBackend(model))
    pipeline = AvatarPipeline(backend, sampler=sampler)
    avatar = pipeline.prepare(face)
    frames, _ = pipeline.generate(avatar, windows_for(pipeline, 0.32), pipeline.initial_state(avatar),
                                  generator=torch.Generator().manual_seed(0))
    assert pipeline.nfe == nfe and backend.branch_evals == nfe
    assert frames.shape == (8, 64, 64, 3)


def test_guidance_scales_reach_the_sampler(face):
    """cfg_audio = cfg_ref = 1 turns Eq. 9 into the conditional branch: 6 x 3 equals 6 x 1 (to batching noise)."""
    teacher = TorchBackend(make_tiny_model(seed=2))
    unguided = AvatarPipeline(teacher, sampler="teacher-6x3", cfg_audio=1.0, cfg_ref=1.0)
    assert unguided.sampler.guidance.cfg_a == 1.0 and unguided.sampler.guidance.cfg_r == 1.0 and unguided.nfe == 18
    conditional = AvatarPipeline(teacher, sampler="teacher-6x1")
    guided = AvatarPipeline(teacher, sampler="teacher-6x3")  # paper scales 6.5 / 2.5

    def chunk(pipeline):
        avatar = pipeline.prepare(face)
        frames, _ = pipeline.generate(avatar, windows_for(pipeline, 0.32), pipeline.initial_state(avatar),
                                      generator=torch.Generator().manual_seed(0))
        return frames.astype(int)

    a, b, c = chunk(unguided), chunk(conditional), chunk(guided)
    assert np.abs(a - b).max() <= 1
    assert np.abs(a - c).mean() > 1.0
    fast = AvatarPipeline(TorchBackend(fast_model()), sampler="fast", cfg_audio=2.0)
    assert (fast.sampler.guidance.cfg_a, fast.sampler.guidance.cfg_r) == (2.0, 2.0) and fast.nfe == 6
    with pytest.raises(ValueError, match="runs no classifier-free guidance"):
        AvatarPipeline(teacher, sampler="teacher-6x1", cfg_audio=2.0)
    with pytest.raises(ValueError, match=r"cfg_ref must be a guidance scale in \[0, 20\]"):
        AvatarPipeline(teacher, sampler="teacher", cfg_ref=-1.0)


def test_checkpoint_default_guidance_scales(tmp_path, capsys):
    """A checkpoint's own scales replace the paper's; the caller's replace both; kept through save / load."""
    from fada_rt.checkpoint import load_model, set_guidance_scales
    from fada_rt.checkpoint import main as checkpoint_main

    save_model(make_tiny_model(seed=2), tmp_path / "t", role="teacher")
    plain = AvatarPipeline(TorchBackend(load_model(tmp_path / "t")[0]), sampler="teacher-6x3")
    assert (plain.sampler.guidance.cfg_a, plain.sampler.guidance.cfg_r) == (6.5, 2.5)  # the paper's
    assert set_guidance_scales(tmp_path / "t", (2, 1)).guidance_scales == (2.0, 1.0)
    model, _ = load_model(tmp_path / "t")
    assert model.config.guidance_scales == (2.0, 1.0)  # a tuple again after the JSON round trip
    backend = TorchBackend(model)
    own = AvatarPipeline(backend, sampler="teacher-6x3")
    assert (own.sampler.guidance.cfg_a, own.sampler.guidance.cfg_r) == (2.0, 1.0)
    mixed = AvatarPipeline(backend, sampler="teacher", cfg_audio=3.0)
    assert (mixed.sampler.guidance.cfg_a, mixed.sampler.guidance.cfg_r) == (3.0, 1.0)
    assert AvatarPipeline(backend, sampler="teacher-6x1").nfe == 6  # a conditional sampler ignores them
    checkpoint_main([str(tmp_path / "t")])
    assert "default guidance 2 / 1" in capsys.readouterr().out
    checkpoint_main([str(tmp_path / "t"), "--clear-guidance"])
    assert load_model(tmp_path / "t")[0].config.guidance_scales is None
    with pytest.raises(SystemExit):
        checkpoint_main([str(tmp_path / "t"), "--set-guidance", "25", "1"])
    assert "guidance_scales must be (cfg_a, cfg_r) in [0, 20]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="guidance_scales"):
        make_tiny_model(guidance_scales=(2.0,))


def test_sampler_and_model_must_fit(tmp_path):
    with pytest.raises(ValueError, match="needs a CFG-distilled student"):
        AvatarPipeline(TorchBackend(make_tiny_model().make_student("none")), sampler="fast")
    with pytest.raises(ValueError, match="use --sampler fast"):
        AvatarPipeline(TorchBackend(fast_model()), sampler="balanced")
    with pytest.raises(ValueError, match="unknown sampler"):
        AvatarPipeline(TorchBackend(fast_model()), sampler="turbo")
    save_model(make_tiny_model().make_student("none"), tmp_path / "balanced", role="student")
    with pytest.raises(ValueError, match="runs a teacher but the checkpoint holds a student"):
        AvatarPipeline.from_checkpoint(tmp_path / "balanced", sampler="teacher")
    save_model(make_tiny_model(), tmp_path / "teacher", role="teacher")
    with pytest.raises(ValueError, match="runs a student but the checkpoint holds a teacher"):
        AvatarPipeline.from_checkpoint(tmp_path / "teacher", sampler="balanced")
    assert AvatarPipeline.from_checkpoint(tmp_path / "teacher", sampler="teacher").nfe == 75


def test_backend_factory_errors(tmp_path):
    save_model(fast_model(), tmp_path / "fast", role="student")
    with pytest.raises(CheckpointError, match="preset 'tiny', but preset 'sd15' was asked for"):
        create_backend(LoadOptions("torch", checkpoint=tmp_path / "fast", preset="sd15"))
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend(LoadOptions("tflite", checkpoint=tmp_path / "fast"))
    with pytest.raises(ValueError, match="needs a checkpoint"):
        create_backend(LoadOptions("torch"))
    with pytest.raises(ValueError, match="--engine-dir"):
        create_backend(LoadOptions("onnxruntime"))
    with pytest.raises(BackendUnavailable, match=r"python -m fada_rt\.export"):
        create_backend(LoadOptions("onnxruntime", engine_dir=tmp_path / "no-engines"))
    with pytest.raises(BackendUnavailable, match=r"TensorRT|python -m fada_rt.export"):  # no TensorRT here, or no engines
        create_backend(LoadOptions("tensorrt", engine_dir=tmp_path / "no-engines", device="cuda"))
    with pytest.raises(ValueError, match="compile and chunk_graph are torch-backend options"):
        create_backend(LoadOptions("tensorrt", engine_dir=tmp_path, compile=True))
    with pytest.raises(ValueError, match="precision is fixed"):
        create_backend(LoadOptions("onnxruntime", engine_dir=tmp_path, dtype="float16"))
    with pytest.raises(CheckpointError, match="does not exist"):
        create_backend(LoadOptions("torch", checkpoint=tmp_path / "nothing"))
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
            create_backend(LoadOptions("torch", checkpoint=tmp_path / "fast", device="cuda"))
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        TorchBackend(fast_model(), cuda_graphs=True)
    with pytest.raises(ValueError, match="not a checkpoint"):
        LoadOptions("onnxruntime", engine_dir=tmp_path, checkpoint=tmp_path / "fast")
    with pytest.raises(ValueError, match="engine_dir is for the onnxruntime/tensorrt backends"):
        LoadOptions(checkpoint=tmp_path / "fast", engine_dir=tmp_path)
    with pytest.raises(ValueError, match="not onnxruntime"):
        LoadOptions("onnxruntime", engine_dir=tmp_path, cuda_graphs=True)
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        LoadOptions(threads=0)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        LoadOptions(dtype="fp8")


def test_load_options_are_one_frozen_value_from_the_command_line(tmp_path):
    import argparse
    import dataclasses

    from fada_rt.backends import add_load_options, load_options_from_args
    from fada_rt.precision import Precision

    parser = argparse.ArgumentParser()
    add_load_options(parser)
    options = load_options_from_args(parser.parse_args([]))
    assert options == LoadOptions() and options.torch_dtype == torch.float32 and options.cuda_graphs is None
    options = load_options_from_args(parser.parse_args(["--checkpoint", "ckpt", "--device", "cuda:1", "--dtype",
                                                        "float16", "--cuda-graphs", "--compile", "--threads", "2"]))
    assert options == LoadOptions(checkpoint="ckpt", device="cuda:1", dtype=Precision.FP16, cuda_graphs=True,
                                  compile=True, threads=2)
    assert options.dtype is Precision.FP16 and options.torch_dtype == torch.float16
    assert load_options_from_args(parser.parse_args(["--dtype", "bf16"])).dtype is Precision.BF16
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "fp8"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "cpu"  # type: ignore[misc]
    assert LoadOptions(device=torch.device("cpu")).device == "cpu"
    # the keyword shorthand builds the same value
    save_model(fast_model(), tmp_path / "fast", role="student")
    pipeline = AvatarPipeline.from_checkpoint(tmp_path / "fast", dtype="fp32", threads=torch.get_num_threads())
    assert pipeline.backend.dtype == torch.float32
    with pytest.raises(TypeError):
        AvatarPipeline.from_checkpoint(tmp_path / "fast", dtyp="fp16")


def test_half_precision_keeps_a_wav2vec2_front_end_wholly_fp32():
    """wav2vec2's own GroupNorm/LayerNorms stay plain fp32 modules in a half model (sd15's front-end): their
    outputs feed fp32 convolutions, so the features equal the fp32 model's exactly."""
    ref_model = make_wav2vec2_model(seed=3)
    half_model = prepare_model(make_wav2vec2_model(seed=3), device="cpu", dtype=torch.bfloat16)
    backend = TorchBackend(half_model)
    assert half_model.denoiser.unet.conv_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in half_model.audio_encoder.parameters())
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    expected = TorchBackend(ref_model).audio_features(wave)  # (1, T, 2w+1, L, D)
    assert torch.equal(backend.audio_features(wave), expected)
    assert expected.shape[1] == 25


def test_two_backends_of_one_half_model_share_it_safely(face):
    """benchmarks.nfe_latency builds torch and torch-compiled (and the FLOP counter's eager backend) over ONE model
    object, each through prepare_model in place. A second prepare_model used to cast the fp32 norms back to the
    half dtype behind their fp32 hooks ("mixed dtype" in the VAE's GroupNorm): it must leave the model as the first
    one did, and both backends must run."""
    from benchmarks.nfe_backends import BackendFactory, ModelEntry
    from benchmarks.nfe_rows import VARIANTS, chunk_flops

    model = fast_model()
    first = prepare_model(model, device="cpu", dtype=torch.bfloat16)
    second = prepare_model(model, device="cpu", dtype=torch.bfloat16)  # the second backend of the same model
    assert first is second is model
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert model.denoiser.unet.conv_in.weight.dtype == torch.bfloat16
    hooks = [len(m._forward_pre_hooks) for m in norms if m._forward_pre_hooks]
    assert hooks and set(hooks) == {1}  # converted once
    factory = BackendFactory(device=torch.device("cpu"), dtype=torch.bfloat16, work_dir=Path("unused"),
                             ort_threads=1, log=print)
    entry = ModelEntry(model, "student", None)
    eager = factory.eager(entry)
    for backend in (TorchBackend(model), eager):
        pipeline = AvatarPipeline(backend)
        avatar = pipeline.prepare(face)
        frames, _ = pipeline.generate(avatar, windows_for(pipeline, 0.32), pipeline.initial_state(avatar),
                                      generator=torch.Generator().manual_seed(0))
        assert frames.shape == (8, 64, 64, 3)
    audio = (np.random.default_rng(0).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    flops = chunk_flops(eager, VARIANTS["fast"], image=face, audio=audio, seed=0)
    assert flops["denoise"] > 0 and flops["prepare"] > 0


def test_half_precision_keeps_norms_and_audio_in_fp32(face):
    """fp16 on CPU (slow, but it runs): the mechanics of the GPU setting, checked against fp32."""
    ref_model, half_model = fast_model(), fast_model().half()
    backend = TorchBackend(half_model)
    assert backend.dtype == torch.float16
    norms = [m for m in half_model.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert all(b.dtype == torch.float32 for b in half_model.audio_encoder.buffers())
    assert half_model.denoiser.unet.conv_in.weight.dtype == torch.float16
    assert keep_norms_fp32(half_model, dtype=torch.float16) == 0  # idempotent
    outs = []
    for pipeline in (AvatarPipeline(TorchBackend(ref_model)), AvatarPipeline(backend)):
        avatar = pipeline.prepare(face)
        frames, state = pipeline.generate(avatar, windows_for(pipeline, 0.32), pipeline.initial_state(avatar),
                                          generator=torch.Generator().manual_seed(0))
        assert state.motion_latents.dtype == torch.float32  # the sampler state stays fp32
        outs.append(frames.astype(int))
    diff = np.abs(outs[0] - outs[1])
    assert diff.mean() < 0.5 and diff.max() <= 4  # uint8 levels (measured: mean 0.04, max 1)


# ---- GPU (CUDA): fp32 parity, fp16 + CUDA graphs, torch.compile ------------------------------------------

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _chunk(pipeline, face, seconds=0.32):
    avatar = pipeline.prepare(face)
    return pipeline.generate(avatar, windows_for(pipeline, seconds), pipeline.initial_state(avatar),
                             generator=torch.Generator().manual_seed(0))


@pytest.mark.gpu
@gpu
def test_cuda_fp32_matches_cpu(face, tmp_path, monkeypatch):
    # true fp32: PyTorch runs cuDNN convolutions in TF32 by default (motion latents then differ from the CPU's
    # by up to 4e-3, measured on an H200; frames still within 2 levels)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    save_model(fast_model(), tmp_path / "fast", role="student")
    cpu = _chunk(AvatarPipeline(create_backend(LoadOptions(checkpoint=tmp_path / "fast"))), face)
    cuda = _chunk(AvatarPipeline(create_backend(LoadOptions(checkpoint=tmp_path / "fast", device="cuda"))), face)
    assert np.abs(cpu[0].astype(int) - cuda[0].astype(int)).max() <= 2
    assert (cpu[1].motion_latents - cuda[1].motion_latents.cpu()).abs().max() < 1e-3


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("sampler", ["fast", "balanced"])
def test_cuda_graphs_replay_equals_eager_fp16(face, tmp_path, sampler):
    model = fast_model() if sampler == "fast" else make_tiny_model().make_student("none")
    save_model(model, tmp_path / "m", role="student")
    half = LoadOptions(checkpoint=tmp_path / "m", device="cuda", dtype="float16")
    eager = AvatarPipeline(create_backend(half), sampler=sampler)
    graphed = AvatarPipeline(create_backend(half.replace(cuda_graphs=True)), sampler=sampler)
    a, b = _chunk(eager, face), _chunk(graphed, face)
    c = _chunk(graphed, face)  # a second chunk replays the captured graphs with new inputs
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 1
    assert np.array_equal(b[0], c[0])


@pytest.mark.gpu
@gpu
def test_torch_compile_matches_eager(face, tmp_path):
    save_model(fast_model(), tmp_path / "fast", role="student")
    options = LoadOptions(checkpoint=tmp_path / "fast", device="cuda")
    eager = _chunk(AvatarPipeline(create_backend(options)), face)
    compiled = _chunk(AvatarPipeline(create_backend(options.replace(compile=True))), face)
    assert np.abs(eager[0].astype(int) - compiled[0].astype(int)).max() <= 2
