"""python -m fada_rt.export on tiny random models: every graph exports and matches torch with onnxruntime,
the onnxruntime backend runs a whole 6-step chunk like the torch backend, errors say what to do.

Each engine directory is exported once per session (fixtures below, also used by test_onnx_fp16.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model, make_wav2vec2_model, random_chunk, randomize_zero_init

from fada_rt.backends.graph_backend import GraphDenoiser
from fada_rt.backends.graphs import GRAPH_NAMES, graph_specs
from fada_rt.backends.manifest import MANIFEST_NAME, EngineError, read_manifest
from fada_rt.backends.onnxruntime_backend import OnnxRuntimeBackend, OrtRunner, open_session
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import load_model, save_model
from fada_rt.export.__main__ import main
from fada_rt.export.engines import export_engines
from fada_rt.export.parity import CHUNK_TOLERANCE, GRAPH_TOLERANCE, ChunkInputs, compare, run_chunk
from fada_rt.export.samples import sample_inputs
from fada_rt.export.wrappers import graph_module
from fada_rt.models.fada import BranchedDenoiser

RUNTIME_GRAPHS = ("denoiser", "reference_encoder", "vae_encoder", "vae_decoder", "audio_proj")
# Other test modules import the two fixtures below; pytest would run an imported session fixture
# once per importing module, so the results are kept here and made once per session.
_SESSION: dict[str, Path] = {}
_CHUNKS: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def fast_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CFG-distilled student (layer tokens) with non-zero temporal and CFG layers, saved."""
    if "student" not in _SESSION:
        model = make_tiny_model(seed=21).make_student("layer_tokens")
        randomize_zero_init(model, seed=22)
        _SESSION["student"] = save_model(model, tmp_path_factory.mktemp("ckpt") / "fast", role="student")
    return _SESSION["student"]


@pytest.fixture(scope="session")
def fast_engine(fast_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m fada_rt.export`` of the fast student, fp32, all graphs, through the CLI."""
    if "engine" not in _SESSION:
        out = tmp_path_factory.mktemp("engines") / "tiny-fast"
        assert main(["--checkpoint", str(fast_student), "--out", str(out)]) == 0
        _SESSION["engine"] = out
    return _SESSION["engine"]


@pytest.fixture(scope="session")
def teacher_engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A teacher's denoiser alone (batch 3 with ref_mask): (checkpoint, engine dir)."""
    model = make_tiny_model(seed=31)
    randomize_zero_init(model, seed=32)
    ckpt = save_model(model, tmp_path_factory.mktemp("ckpt") / "teacher", role="teacher")
    out = tmp_path_factory.mktemp("engines") / "tiny-teacher"
    export_engines(checkpoint=ckpt, out=out, graphs=["denoiser"], log=lambda _: None)
    return ckpt, out


def test_every_graph_exported_with_parity_recorded(fast_engine: Path, fast_student: Path) -> None:
    manifest = read_manifest(fast_engine)
    assert tuple(manifest.graphs) == RUNTIME_GRAPHS and manifest.role == "student"
    assert manifest.precision == "fp32" and manifest.opset >= 17 and manifest.tensorrt is None
    for name, entry in manifest.graphs.items():
        assert entry.parity and all(r["rel"] <= GRAPH_TOLERANCE["fp32"] for r in entry.parity.values()), name
        assert list(entry.files) == [f"{name}.onnx"]  # small graphs: no external data
    assert set(manifest.chunk_parity) == {"chunk/latents", "chunk/frames"}
    assert manifest.graphs["denoiser"].spec.batch == 1 and manifest.graphs["denoiser"].spec.has_input("cfg")


def test_every_graph_matches_torch_on_fresh_inputs(fast_engine: Path, fast_student: Path) -> None:
    """Independent of the exporter's own check: new inputs, onnxruntime vs the torch modules."""
    model, _ = load_model(fast_student)
    manifest = read_manifest(fast_engine)
    for name, entry in manifest.graphs.items():
        spec = entry.spec
        inputs = sample_inputs(model, spec, seed=123)
        with torch.no_grad():
            expected = graph_module(model, spec)(*inputs)
        outs = OrtRunner(open_session(fast_engine / entry.onnx), spec)(dict(zip(spec.input_names, inputs)))
        for out_name, exp in zip(spec.output_names, expected):
            result = compare(f"{name}/{out_name}", outs[out_name], exp, tolerance=GRAPH_TOLERANCE["fp32"])
            assert result.ok, result.describe()


def torch_chunk(checkpoint: Path, seed: int) -> tuple[ChunkInputs, tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and torch fp32 result (end latents, frames) of one 6-step chunk, made once per session."""
    key = f"chunk {checkpoint} {seed}"
    if key not in _CHUNKS:
        model, _ = load_model(checkpoint)
        inputs = ChunkInputs.random(model.config, seed=seed)
        _CHUNKS[key] = inputs, run_chunk(TorchBackend(model), inputs, role="student")
    return _CHUNKS[key]


def test_six_step_chunk_matches_torch(fast_engine: Path, fast_student: Path) -> None:
    backend = OnnxRuntimeBackend.load(fast_engine)
    assert backend.cfg_conditioned and backend.name == "onnxruntime"
    inputs, expected = torch_chunk(fast_student, seed=7)
    for what, actual, exp in zip(("latents", "frames"), run_chunk(backend, inputs, role="student"), expected):
        result = compare(what, actual, exp, tolerance=CHUNK_TOLERANCE["fp32"])
        assert result.ok and result.scale > 0.1, result.describe()  # a real chunk, not zeros


def test_backend_methods_match_torch_at_any_row_count(fast_engine: Path, fast_student: Path) -> None:
    """Static graphs serve any number of rows (split + padding): 3 images, 11 frames, 13 audio frames."""
    model, _ = load_model(fast_student)
    ort_b, torch_b = OnnxRuntimeBackend.load(fast_engine), TorchBackend(model)
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    latents = torch.randn(11, 4, 16, 16, generator=gen)
    windows = torch_b.audio_features(torch.randn(1, 13 * 640 - 100, generator=gen) * 0.1)
    tol = GRAPH_TOLERANCE["fp32"]
    pairs = [
        (ort_b.encode(images), torch_b.encode(images)),
        (ort_b.decode(latents), torch_b.decode(latents)),
        (ort_b.audio_features(torch.ones(1, 3000) * 0.1), torch_b.audio_features(torch.ones(1, 3000) * 0.1)),
        (ort_b.audio_tokens(windows), torch_b.audio_tokens(windows)),
        *zip(ort_b.reference(latents[:1]).keys, torch_b.reference(latents[:1]).keys),
        *zip(ort_b.motion_features(latents[None, :2]), torch_b.motion_features(latents[None, :2])),
    ]
    for i, (a, b) in enumerate(pairs):
        assert compare(f"pair {i}", a, b, tolerance=tol).ok
    # The fast student's graph has no reference-null branch: asking for it is a clear error.
    z, t, _ = random_chunk(model)
    denoiser = ort_b.bind(ort_b.conditions(ort_b.reference(latents[:1]), latents[None, :2], windows[:, :8]))
    with pytest.raises(ValueError, match="exported without the reference-null branch"):
        denoiser(z, t, branches=("a", "b"), cfg=torch.tensor([[6.5, 2.0]]))


def test_teacher_denoiser_runs_three_branches_in_one_graph(teacher_engine: tuple[Path, Path]) -> None:
    ckpt, out = teacher_engine
    model, _ = load_model(ckpt)
    entry = read_manifest(out).graphs["denoiser"]
    assert entry.spec.batch == 3 and entry.spec.input("ref_mask").dtype == "bool"
    assert not entry.spec.has_input("cfg")
    graph = GraphDenoiser(OrtRunner(open_session(out / entry.onnx), entry.spec), cfg_conditioned=False)
    z, t, cond = random_chunk(model, seed=3)
    with torch.no_grad():
        for branches in (("a", "r", "b"), ("a",), ("b", "a")):  # 3 rows; 1 and 2 rows padded to 3
            expected = model.bind(cond)(z, t, branches=branches)
            actual = BranchedDenoiser(graph, cond)(z, t, branches=branches)
            assert compare(str(branches), actual, expected, tolerance=GRAPH_TOLERANCE["fp32"]).ok
    eps = BranchedDenoiser(graph, cond)(z, t, branches=("a", "r", "b"))
    assert (eps[1] - eps[2]).abs().max() > 1e-3  # the mask input really drops the reference


def test_subset_engine_refused_by_the_runtime_with_full_rebuild_command(teacher_engine: tuple[Path, Path]) -> None:
    ckpt, out = teacher_engine
    with pytest.raises(EngineError) as info:
        OnnxRuntimeBackend.load(out)
    text = str(info.value)
    assert "were not exported" in text and f"python -m fada_rt.export --checkpoint {ckpt} --out {out}" in text
    assert "--graphs" not in text


def test_parity_failure_fails_the_command_and_says_by_how_much(
    fast_student: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(GRAPH_TOLERANCE, "fp32", 0.0)  # onnxruntime is never bit-exact with torch
    out = tmp_path / "eng"
    assert main(["--checkpoint", str(fast_student), "--out", str(out), "--graphs", "audio_proj"]) == 1
    err = capsys.readouterr().err
    assert "ONNX parity (onnxruntime CPU vs torch fp32)" in err
    assert "audio_proj/tokens: max |err| " in err and "(tolerance 0) FAILS" in err
    assert not (out / MANIFEST_NAME).exists()  # a failed export leaves nothing a backend would load


def test_external_data_for_large_models(fast_student: Path, tmp_path: Path) -> None:
    out = tmp_path / "eng"
    manifest = export_engines(checkpoint=fast_student, out=out, graphs=["audio_proj"], external_data_bytes=1024,
                              log=lambda _: None)
    entry = manifest.graphs["audio_proj"]
    assert list(entry.files) == ["audio_proj.onnx", "audio_proj.onnx.data"]
    assert (out / "audio_proj.onnx").stat().st_size < 50_000 < (out / "audio_proj.onnx.data").stat().st_size
    assert all(r["rel"] <= GRAPH_TOLERANCE["fp32"] for r in entry.parity.values())


def test_wav2vec2_graph_at_any_length(tmp_path: Path) -> None:
    from fada_rt.backends.graph_backend import GraphBackend

    model = make_wav2vec2_model(seed=0)
    ckpt = save_model(model, tmp_path / "ckpt", role="teacher")
    manifest = export_engines(checkpoint=ckpt, out=tmp_path / "eng", graphs=["wav2vec2", "audio_proj"],
                              log=lambda _: None)
    assert len(manifest.graphs["wav2vec2"].parity) == 2  # checked at two lengths: the sample axis is dynamic
    spec = manifest.graphs["wav2vec2"].spec
    runners = {n: OrtRunner(open_session(tmp_path / "eng" / e.onnx), e.spec) for n, e in manifest.graphs.items()}
    unused = {n: None for n in RUNTIME_GRAPHS if n not in runners}
    backend = GraphBackend(model.config, {**runners, **unused}, device="cpu")
    for samples in (300, 7000, spec.dynamic[0].opt):  # shorter than the conv stack's field, odd, traced length
        wave = torch.randn(1, samples) * 0.1
        with torch.no_grad():
            expected = model.audio_features(wave)
        assert compare(str(samples), backend.audio_features(wave), expected, tolerance=GRAPH_TOLERANCE["fp32"]).ok


def test_specs_cover_the_graph_names() -> None:
    config = make_tiny_model().config
    assert tuple(graph_specs(config)) == RUNTIME_GRAPHS and set(RUNTIME_GRAPHS) < set(GRAPH_NAMES)
    with pytest.raises(ValueError, match="unknown graphs"):
        graph_specs(config, ["unet"])
    with pytest.raises(ValueError, match="wav2vec2 presets"):
        graph_specs(config, ["wav2vec2"])
    raw = json.loads(json.dumps(graph_specs(config)["denoiser"].to_dict()))
    assert graph_specs(config)["denoiser"].from_dict(raw) == graph_specs(config)["denoiser"]


def test_layer_shapes_match_the_built_networks() -> None:
    from fada_rt.backends.graphs import layer_shapes
    from fada_rt.config import UNetConfig, get_preset

    tiny = make_tiny_model().config
    deeper = tiny.replace(unet=UNetConfig(
        block_out_channels=(16, 32, 32), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=2,
        attention_head_dim=2, norm_num_groups=8, cross_attention_dim=64, latent_channels=4))
    for config in (tiny, deeper):
        model = make_tiny_model(**{"unet": config.unet})
        with torch.no_grad():
            feats = model.reference_net(torch.randn(1, 4, 16, 16))
        assert [(f.shape[1], f.shape[2]) for f in feats] == [(s.tokens, s.channels) for s in layer_shapes(config)]
    sd15 = layer_shapes(get_preset("sd15"))  # SD1.5: 6 down, 1 mid, 9 up transformer blocks
    assert len(sd15) == 16 and (sd15[0].tokens, sd15[0].channels) == (64 * 64, 320)
    assert (sd15[6].tokens, sd15[6].channels) == (8 * 8, 1280) and (sd15[-1].tokens, sd15[-1].channels) == (4096, 320)


def test_runtime_refuses_changed_or_stale_graphs_and_missing_libraries(
    fast_engine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import shutil
    import sys

    from fada_rt.backends.base import BackendUnavailable
    from fada_rt.backends.graphs import GraphSpec, TensorSpec
    from fada_rt.backends.manifest import write_manifest

    copy = shutil.copytree(fast_engine, tmp_path / "copy")
    with pytest.raises(BackendUnavailable, match="no CUDAExecutionProvider"):
        OnnxRuntimeBackend.load(copy, device="cuda")
    # Shapes recorded by another fada-rt version than this one: re-export.
    manifest = read_manifest(copy)
    entry = manifest.graphs["audio_proj"]
    spec = GraphSpec("audio_proj", entry.spec.inputs, (TensorSpec("tokens", (8, 9, 64)),), 8)
    graphs = {**manifest.graphs, "audio_proj": dataclasses.replace(entry, spec=spec)}
    write_manifest(dataclasses.replace(manifest, graphs=graphs), copy)
    with pytest.raises(EngineError, match=r"graphs \['audio_proj'\] were exported with other input/output shapes"):
        OnnxRuntimeBackend.load(copy)
    (copy / "vae_decoder.onnx").write_bytes(b"truncated")
    with pytest.raises(EngineError, match=r"vae_decoder\.onnx changed since export") as info:
        OnnxRuntimeBackend.load(copy)
    assert str(info.value).endswith(f"--out {copy} --precision fp32")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(BackendUnavailable, match=r'pip install -e "\.\[export\]"'):
        OnnxRuntimeBackend.load(copy)
