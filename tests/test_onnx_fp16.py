"""The fp16 ONNX rewrite: the fp32 islands stay fp32, the rest is fp16, and the fp16 graphs match
torch fp32 within the fp16 tolerances (each graph and a whole 6-step chunk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_export import fast_engine, fast_student, torch_chunk  # noqa: F401  (session fixtures: one export per run)

from fada_rt.backends.manifest import read_manifest
from fada_rt.backends.onnxruntime_backend import OnnxRuntimeBackend, OrtRunner, open_session
from fada_rt.checkpoint import load_model
from fada_rt.config import ModelConfig
from fada_rt.export.__main__ import main
from fada_rt.export.fp16 import F16, F32, convert_to_fp16, infer_types
from fada_rt.export.onnx_export import save_onnx
from fada_rt.export.parity import CHUNK_TOLERANCE, GRAPH_TOLERANCE, compare, run_chunk
from fada_rt.export.samples import sample_inputs
from fada_rt.export.wrappers import graph_module

NORM_AND_SOFTMAX = ("LayerNormalization", "InstanceNormalization", "Softmax")
TIME_SCOPES = ("/time_proj/", "/time_embedding/", "/cfg_embedding/")


def _float_io(node: onnx.NodeProto, types: dict[str, int]) -> list[int]:
    return [types[x] for x in (*node.input, *node.output) if x and types.get(x) in (F32, F16)]


@pytest.fixture(scope="module")
def fp16_dir(fast_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The fp32 engine's graphs rewritten to fp16 (the rewrite the exporter runs for --precision fp16)."""
    out = tmp_path_factory.mktemp("fp16")
    for path in fast_engine.glob("*.onnx"):
        converted, _ = convert_to_fp16(onnx.load(str(path)))
        save_onnx(converted, out / path.name)
    return out


def test_listed_ops_stay_fp32_and_the_rest_is_fp16(fp16_dir: Path) -> None:
    model = onnx.load(str(fp16_dir / "denoiser.onnx"))
    types = infer_types(model)
    counts = {"kept": 0, "time": 0}
    for node in model.graph.node:
        if node.op_type in NORM_AND_SOFTMAX:
            assert set(_float_io(node, types)) == {F32}, node.name
            counts["kept"] += 1
        if any(scope in node.name for scope in TIME_SCOPES):
            assert set(_float_io(node, types)) <= {F32}, node.name
            counts["time"] += 1
    assert counts["kept"] > 50 and counts["time"] > 10
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    half = [n for n in heavy if types[n.output[0]] == F16]
    assert len(half) > 0.8 * len(heavy)  # only the time-embedding / CFG-token projections stay fp32
    weights = [t for t in model.graph.initializer if t.data_type in (F32, F16) and len(t.dims) >= 2]
    consumers = {t.name: [n for n in model.graph.node if t.name in n.input] for t in weights}
    for t in weights:  # fp32 weights only where the time embedding / CFG tokens need them
        if t.data_type == F32:
            assert all(set(_float_io(n, types)) == {F32} for n in consumers[t.name]), t.name
    size = {dt: sum(int(np.prod(t.dims)) for t in weights if t.data_type == dt) for dt in (F16, F32)}
    assert size[F16] > 0.8 * (size[F16] + size[F32])
    for io in (*model.graph.input, *model.graph.output):  # the runtime feeds fp32 (and bool) at any precision
        assert io.type.tensor_type.elem_type in (F32, TensorProto.BOOL)


def test_every_fp16_graph_matches_torch_fp32(fp16_dir: Path, fast_engine: Path, fast_student: Path) -> None:  # noqa: F811
    model, _ = load_model(fast_student)
    for name, entry in read_manifest(fast_engine).graphs.items():
        spec = entry.spec
        inputs = sample_inputs(model, spec, seed=77)
        with torch.no_grad():
            expected = graph_module(model, spec)(*inputs)
        outs = OrtRunner(open_session(fp16_dir / entry.onnx), spec)(dict(zip(spec.input_names, inputs)))
        for out_name, exp in zip(spec.output_names, expected):
            result = compare(f"{name}/{out_name}", outs[out_name], exp, tolerance=GRAPH_TOLERANCE["fp16"])
            assert result.ok, result.describe()
            assert result.max_abs > 0  # really fp16: not bit-identical to the fp32 graph


def test_fp16_six_step_chunk_matches_torch_fp32(fp16_dir: Path, fast_engine: Path, fast_student: Path) -> None:  # noqa: F811
    manifest = read_manifest(fast_engine)
    files = {n: (fp16_dir / e.onnx, e.spec) for n, e in manifest.graphs.items()}
    backend = OnnxRuntimeBackend.from_files(ModelConfig.from_dict(manifest.model), files)
    inputs, expected = torch_chunk(fast_student, seed=7)
    for what, actual, exp in zip(("latents", "frames"), run_chunk(backend, inputs, role="student"), expected):
        result = compare(what, actual, exp, tolerance=CHUNK_TOLERANCE["fp16"])
        assert result.ok and result.max_abs > 0, result.describe()


def test_cli_fp16_checks_the_trace_then_the_fp16_graph(fast_student: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "eng16"
    assert main(["--checkpoint", str(fast_student), "--out", str(out), "--precision", "fp16",
                 "--graphs", "audio_proj", "vae_decoder"]) == 0
    manifest = read_manifest(out)
    assert manifest.precision == "fp16" and manifest.chunk_parity is None  # no chunk without all graphs
    parity = manifest.graphs["vae_decoder"].parity
    assert parity["vae_decoder (fp32 trace)/images"]["tolerance"] == GRAPH_TOLERANCE["fp32"]
    assert parity["vae_decoder/images"]["tolerance"] == GRAPH_TOLERANCE["fp16"]
    assert "InstanceNormalization" in manifest.info["fp16_rewrite"]["vae_decoder"]
    conv_weights = [t for t in onnx.load(str(out / "vae_decoder.onnx")).graph.initializer if len(t.dims) == 4]
    assert conv_weights and all(t.data_type == F16 for t in conv_weights)


def _toy_graph() -> onnx.ModelProto:
    """x (1, 4, 8), timestep (1,) -> y: every case the rewrite must handle, in 11 nodes."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(np.full(8, 0.5, np.float32), "half"),  # used by fp16 and fp32 nodes
        numpy_helper.from_array(np.zeros(8, np.float32), "zero"),
        numpy_helper.from_array(np.array([1.0, 1.0, 2.0], np.float32), "scales"),
        numpy_helper.from_array(np.array([1e5], np.float32), "huge"),  # beyond fp16: clamped, counted
    ]
    nodes = [
        helper.make_node("Mul", ["timestep", "huge"], ["t_big"], name="/time_proj/Mul"),
        helper.make_node("Sin", ["t_big"], ["t_emb"], name="/time_proj/Sin"),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="/MatMul"),
        helper.make_node("Add", ["h", "t_emb"], ["h2"], name="/Add"),
        helper.make_node("LayerNormalization", ["h2", "half", "zero"], ["ln"], name="/LayerNorm", axis=-1),
        helper.make_node("ReduceMean", ["ln"], ["mean"], name="/ReduceMean", axes=[-1]),
        helper.make_node("Sub", ["ln", "mean"], ["centred"], name="/Sub"),
        helper.make_node("Pow", ["centred", "two"], ["sq"], name="/Pow"),
        helper.make_node("Mul", ["sq", "half"], ["logits"], name="/Mul"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/Softmax", axis=-1),
        helper.make_node("Resize", ["probs", "", "scales"], ["y"], name="/Resize", mode="nearest"),
    ]
    nodes.insert(0, helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2.0))))
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("x", F32, [1, 4, 8]), helper.make_tensor_value_info("timestep", F32, [1])],
        [helper.make_tensor_value_info("y", F32, [1, 4, 16])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_rewrite_rules_on_a_toy_graph(tmp_path: Path) -> None:
    model = _toy_graph()
    onnx.checker.check_model(model)
    fp16, report = convert_to_fp16(model)
    types = infer_types(fp16)
    by_name = {n.name: n for n in fp16.graph.node}
    for name in ("/time_proj/Mul", "/time_proj/Sin", "/LayerNorm", "/ReduceMean", "/Pow", "/Softmax"):
        assert set(_float_io(by_name[name], types)) == {F32}, name
    for name in ("/MatMul", "/Add", "/Sub", "/Mul"):
        assert set(_float_io(by_name[name], types)) == {F16}, name
    resize = by_name["/Resize"]
    assert (types[resize.input[0]], types[resize.input[2]], types["y"]) == (F16, F32, F32)  # scales stay fp32
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    assert inits["w__fp16"] == F16 and "w" not in inits  # the fp32 copy is dropped when unused
    assert inits["half__fp16"] == F16 and inits["half"] == F32  # shared by fp16 and fp32 nodes: both kept
    assert report.fp32_nodes["time embedding"] == 2 and report.clamped_values == 0  # "huge" feeds fp32 only
    assert types["y"] == F32 and fp16.graph.output[0].type.tensor_type.elem_type == F32

    import onnxruntime as ort

    feeds = {"x": np.random.default_rng(1).normal(size=(1, 4, 8)).astype(np.float32),
             "timestep": np.array([0.3], np.float32)}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 1e-2 * np.abs(ref).max()


def test_out_of_range_weights_are_clamped_and_counted() -> None:
    model = _toy_graph()
    node = next(n for n in model.graph.node if n.name == "/MatMul")
    w = next(t for t in model.graph.initializer if t.name == "w")
    arr = numpy_helper.to_array(w).copy()
    arr[0, :3] = [1e6, -7e4, np.inf]
    w.CopyFrom(numpy_helper.from_array(arr, "w"))
    fp16, report = convert_to_fp16(model)
    assert report.clamped_values == 2 and node.name == "/MatMul"
    converted = numpy_helper.to_array(next(t for t in fp16.graph.initializer if t.name == "w__fp16"))
    assert converted[0, 0] == 65504 and converted[0, 1] == -65504 and np.isinf(converted[0, 2])
