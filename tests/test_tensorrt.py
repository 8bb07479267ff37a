"""TensorRT: the runner logic against a fake engine (static buffers, CUDA-graph replay, dynamic
shapes, I/O checks), the CUDA helpers against a fake cuda.bindings.runtime, and clear errors when
TensorRT is missing. Tests marked ``tensorrt`` build and run real engines; they are skipped unless
``tensorrt`` imports and a CUDA GPU is present."""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_export import fast_student  # noqa: F401  (session fixture)

from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.graph_backend import run_rows
from fada_rt.backends.graphs import DynamicDim, GraphSpec, TensorSpec
from fada_rt.backends.manifest import EngineError
from fada_rt.backends.tensorrt_backend import CudaGraph, TensorRTBackend, TrtRunner, cuda_call, gpu_info
from fada_rt.export.__main__ import main
from fada_rt.export.tensorrt_build import check_network_io, profile_shapes

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
real_trt = pytest.mark.skipif(not (HAVE_TRT and torch.cuda.is_available()), reason="needs TensorRT and a CUDA GPU")


class FakeTrt:
    class DataType(enum.Enum):
        FLOAT = 0
        HALF = 1
        BOOL = 2
        INT32 = 3
        INT64 = 4

    class TensorIOMode(enum.Enum):
        INPUT = 0
        OUTPUT = 1


_CTYPES = {FakeTrt.DataType.FLOAT: (ctypes.c_float, np.float32), FakeTrt.DataType.BOOL: (ctypes.c_bool, np.bool_)}


def _view(ptr: int, shape: tuple[int, ...], dtype: FakeTrt.DataType) -> np.ndarray:
    """The memory at ``ptr`` as a numpy array: the fake engine reads and writes real buffers."""
    ctype, nptype = _CTYPES[dtype]
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctype * n).from_address(ptr)).view(nptype).reshape(shape)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.addresses, self.shapes, self.executions = engine, {}, {}, 0

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return shape[1] <= 64

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (1, self.shapes["w"][1] // 2)  # the dynamic toy's derived output length

    def execute_async_v3(self, stream: int) -> bool:
        assert stream == 1234
        self.executions += 1
        e = self.engine
        if "w" in e.io:  # dynamic toy: z = every other sample of w
            w = _view(self.addresses["w"], self.shapes["w"], FakeTrt.DataType.FLOAT)
            z = _view(self.addresses["z"], self.get_tensor_shape("z"), FakeTrt.DataType.FLOAT)
            z[:] = w[:, ::2][:, : z.shape[1]]
            return True
        x = _view(self.addresses["x"], e.io["x"][1], FakeTrt.DataType.FLOAT)
        m = _view(self.addresses["m"], e.io["m"][1], FakeTrt.DataType.BOOL)
        y = _view(self.addresses["y"], e.io["y"][1], FakeTrt.DataType.FLOAT)
        y[:] = 2 * x + m[:, None]
        return True


class FakeEngine:
    """Implements the few ICudaEngine methods TrtRunner calls."""

    def __init__(self, io: dict[str, tuple[str, tuple[int, ...], FakeTrt.DataType]]) -> None:
        self.io = {k: (FakeTrt.TensorIOMode.INPUT if mode == "in" else FakeTrt.TensorIOMode.OUTPUT, shape, dt)
                   for k, (mode, shape, dt) in io.items()}
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def get_tensor_name(self, i: int) -> str:
        return list(self.io)[i]

    def get_tensor_mode(self, name: str):
        return self.io[name][0]

    def get_tensor_shape(self, name: str):
        return self.io[name][1]

    def get_tensor_dtype(self, name: str):
        return self.io[name][2]

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class HostStream:
    handle = 1234

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


F, B = FakeTrt.DataType.FLOAT, FakeTrt.DataType.BOOL
STATIC = GraphSpec("toy", (TensorSpec("x", (2, 3)), TensorSpec("m", (2,), "bool")), (TensorSpec("y", (2, 3)),), 2)
DYNAMIC = GraphSpec("wave", (TensorSpec("w", (1, "samples")),), (TensorSpec("z", (1, "half")),), 1,
                    (DynamicDim("samples", 4, 16, 64),))


def _static_engine(**changes) -> FakeEngine:
    io = {"x": ("in", (2, 3), F), "m": ("in", (2,), B), "y": ("out", (2, 3), F)}
    io.update(changes)
    return FakeEngine(io)


def test_static_runner_reuses_fixed_buffers_and_replays_a_captured_graph() -> None:
    engine = _static_engine()
    captured = []

    class FakeCapture:  # like CudaGraph: capturing records the work, replay runs it
        def __init__(self, fn) -> None:
            self.fn, self.replays = fn, 0
            captured.append(self)

        def replay(self) -> None:
            self.replays += 1
            self.fn()

    runner = TrtRunner(engine, STATIC, trt=FakeTrt, device=torch.device("cpu"), stream=HostStream(),
                       capture=FakeCapture)
    ctx = engine.contexts[0]
    addresses = dict(ctx.addresses)
    assert set(addresses) == {"x", "m", "y"}  # bound once, at construction
    outs = []
    for i in range(3):
        x = torch.arange(6.0).view(2, 3) * (i + 1)
        m = torch.tensor([True, i % 2 == 0])
        out = runner({"x": x, "m": m})["y"]
        torch.testing.assert_close(out, 2 * x + m[:, None].float())
        outs.append(out)
    assert ctx.addresses == addresses  # never rebound: a CUDA graph stays valid
    assert len(captured) == 1 and captured[0].replays == 2 and ctx.executions == 3  # warm-up run, then replays
    assert not torch.equal(outs[0], outs[1])  # results are copies, not the reused output buffer


def test_run_rows_pads_and_splits_through_the_runner() -> None:
    runner = TrtRunner(_static_engine(), STATIC, trt=FakeTrt, device=torch.device("cpu"), stream=HostStream())
    x, m = torch.randn(5, 3), torch.tensor([True, False, True, True, False])
    y = run_rows(runner, {"x": x, "m": m})["y"]
    torch.testing.assert_close(y, 2 * x + m[:, None].float())
    assert runner.engine.contexts[0].executions == 3  # 2 + 2 + (1 padded to 2)
    with pytest.raises(ValueError, match=r"input x must have shape \(N, 3\)"):
        run_rows(runner, {"x": torch.randn(2, 4), "m": m[:2]})


def test_dynamic_runner_sets_shapes_per_call_and_never_captures() -> None:
    engine = FakeEngine({"w": ("in", (1, -1), F), "z": ("out", (1, -1), F)})
    runner = TrtRunner(engine, DYNAMIC, trt=FakeTrt, device=torch.device("cpu"), stream=HostStream(),
                       capture=lambda fn: pytest.fail("a dynamic graph must not be captured"))
    for n in (8, 20):
        w = torch.arange(float(n))[None]
        torch.testing.assert_close(runner({"w": w})["z"], w[:, ::2])
        assert engine.contexts[0].shapes["w"] == (1, n)
    with pytest.raises(ValueError, match="outside the engine's profile"):
        runner({"w": torch.zeros(1, 100)})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"y": ("out", (2, 4), F)}, r"y: engine shape \(2, 4\), spec \(2, 3\)"),
        ({"m": ("in", (2,), F)}, "m: engine dtype DataType.FLOAT, spec bool"),
        ({"extra": ("in", (2,), F)}, "engine I/O"),
    ],
)
def test_engine_that_does_not_match_its_spec_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        TrtRunner(_static_engine(**changes), STATIC, trt=FakeTrt, device=torch.device("cpu"), stream=HostStream())


def test_parsed_network_checks_and_profiles() -> None:
    def tensor(name, shape, dtype):
        return SimpleNamespace(name=name, shape=shape, dtype=dtype)

    inputs, outputs = [tensor("w", (1, -1), F)], [tensor("z", (1, -1), F)]
    network = SimpleNamespace(num_inputs=1, num_outputs=1, get_input=inputs.__getitem__, get_output=outputs.__getitem__)
    check_network_io(network, DYNAMIC, trt=FakeTrt)
    inputs[0] = tensor("w", (1, 16), F)
    with pytest.raises(ValueError, match=r"w: network DataType.FLOAT \(1, 16\), spec float32 \(1, -1\)"):
        check_network_io(network, DYNAMIC, trt=FakeTrt)
    assert profile_shapes(DYNAMIC) == {"w": ((1, 4), (1, 16), (1, 64))}
    assert profile_shapes(STATIC) == {"x": ((2, 3),) * 3, "m": ((2,),) * 3}


class FakeCudart:
    class cudaError_t(enum.Enum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    class cudaStreamCaptureMode(enum.Enum):
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self) -> None:
        self.calls = []

    def cudaGetDeviceProperties(self, device):
        return self.cudaError_t.cudaSuccess, SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\x00\x00", major=9, minor=0)

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append(("begin", stream, mode.name))
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append(("end", stream))
        return self.cudaError_t.cudaSuccess, "graph"

    def cudaGraphInstantiate(self, graph, flags):
        self.calls.append(("instantiate", graph, flags))
        return self.cudaError_t.cudaSuccess, "exec"

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append(("launch", graph_exec, stream))
        return (self.cudaError_t.cudaErrorInvalidValue if graph_exec != "exec" else self.cudaError_t.cudaSuccess,)


def test_cuda_helpers_against_a_fake_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    cudart = FakeCudart()
    monkeypatch.setattr("fada_rt.backends.tensorrt_backend.import_cudart", lambda: cudart)
    assert gpu_info(0).name == "NVIDIA H100 80GB HBM3" and gpu_info(0).compute_capability == "9.0"
    work = []
    graph = CudaGraph(cudart, 77, lambda: work.append("enqueued"))
    graph.replay()
    assert work == ["enqueued"]
    assert cudart.calls == [("begin", 77, "cudaStreamCaptureModeThreadLocal"), ("end", 77),
                            ("instantiate", "graph", 0), ("launch", "exec", 77)]
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue"):
        cuda_call(cudart, (cudart.cudaError_t.cudaErrorInvalidValue,))


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_extra(tmp_path: Path, fast_student: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BackendUnavailable, match=r'pip install -e "\.\[trt\]"'):
        TensorRTBackend.load(tmp_path)
    assert main(["--checkpoint", str(fast_student), "--out", str(tmp_path / "e"), "--tensorrt"]) == 1
    assert 'pip install -e ".[trt]"' in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # refused before any work


# ---- real TensorRT (skipped without it) -------------------------------------------------------


@pytest.mark.tensorrt
@real_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engines_build_load_and_match_torch(fast_student: Path, tmp_path: Path, precision: str) -> None:  # noqa: F811
    from fada_rt.backends.manifest import read_manifest, write_manifest
    from fada_rt.backends.torch_backend import TorchBackend
    from fada_rt.checkpoint import load_model
    from fada_rt.export.parity import CHUNK_TOLERANCE, chunk_parity

    out = tmp_path / f"trt-{precision}"
    assert main(["--checkpoint", str(fast_student), "--out", str(out), "--precision", precision, "--tensorrt"]) == 0
    manifest = read_manifest(out)
    assert manifest.tensorrt is not None and set(manifest.tensorrt.plans) == set(manifest.graphs)
    model, _ = load_model(fast_student, device="cuda")
    for cuda_graphs in (False, True):
        backend = TensorRTBackend.load(out, cuda_graphs=cuda_graphs)
        for r in chunk_parity(backend, TorchBackend(model), role="student", precision=precision, seed=5):
            assert r.rel <= CHUNK_TOLERANCE[precision], r.describe()
    stale = dataclasses.replace(manifest, tensorrt=dataclasses.replace(manifest.tensorrt, version="0.0.0"))
    write_manifest(stale, out)
    with pytest.raises(EngineError, match=r"built with TensorRT 0\.0\.0"):
        TensorRTBackend.load(out)
