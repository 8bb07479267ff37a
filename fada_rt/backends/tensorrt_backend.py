"""The TensorRT backend: strongly typed plans built by ``python -m fada_rt.export --tensorrt`` (docs/design.md §5).

``TensorRTBackend.load("engines/NAME")`` reads ``manifest.json`` and refuses plans built for another
TensorRT version or GPU, or from another ONNX file, with the exact rebuild command
(:func:`~fada_rt.backends.manifest.check_tensorrt`); only then does it deserialise them. Buffers
are torch CUDA tensors; each graph runs on its own CUDA stream ordered against torch's current
stream. Static graphs (all but wav2vec2) get their input/output buffers once, at fixed addresses,
so a CUDA graph can be captured after the first run and replayed (``cuda_graphs=True``);
device properties and graph capture use ``cuda.bindings.runtime`` (the removed ``cuda.cudart``
is not used). ``tensorrt`` and ``cuda-python`` are imported lazily: ``pip install -e ".[trt]"``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.graph_backend import GraphBackend
from fada_rt.backends.graphs import GraphSpec, default_graphs
from fada_rt.backends.manifest import EngineError, GpuInfo, Manifest, check_tensorrt, read_manifest
from fada_rt.config import ModelConfig

_INSTALL = 'pip install -e ".[trt]" (TensorRT, cuda-python; needs an NVIDIA GPU and driver)'


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable(f"the TensorRT backend needs the tensorrt package: {_INSTALL}") from err
    return tensorrt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError as err:
        raise BackendUnavailable(f"the TensorRT backend needs cuda-python's cuda.bindings.runtime: {_INSTALL}") from err
    return runtime


def cuda_call(cudart: Any, result: Any) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` result; a CUDA error raises with its name."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA runtime call failed: {err!r}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``."""
    cudart = import_cudart()
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.rstrip("\x00").strip(), f"{props.major}.{props.minor}")


class CudaGraph:
    """``fn`` (enqueueing work on ``stream``) captured once into a CUDA graph, replayed by :meth:`replay`."""

    def __init__(self, cudart: Any, stream: int, fn: Callable[[], None]) -> None:
        self.cudart, self.stream = cudart, stream
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(cudart, cudart.cudaStreamBeginCapture(stream, mode))
        try:
            fn()
        finally:
            graph = cuda_call(cudart, cudart.cudaStreamEndCapture(stream))
        self.exec = cuda_call(cudart, cudart.cudaGraphInstantiate(graph, 0))

    def replay(self) -> None:
        cuda_call(self.cudart, self.cudart.cudaGraphLaunch(self.exec, self.stream))


class _CudaStream:
    """A side stream that waits for torch's current stream on entry and is waited for on exit."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device=device)
        self.handle = int(self.stream.cuda_stream)

    def __enter__(self) -> None:
        self.caller = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(self.caller)
        self._ctx = torch.cuda.stream(self.stream)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        self.caller.wait_stream(self.stream)


class TrtRunner:
    """One TensorRT engine behind the GraphRunner interface (named tensors in and out).

    ``trt`` is the tensorrt module (tests pass a stand-in with ``DataType`` and ``TensorIOMode``),
    ``stream`` an object with ``handle`` (int) usable as a context manager, ``capture`` a factory
    ``capture(fn) -> object with replay()`` for CUDA graphs, or None to run without them.
    """

    def __init__(self, engine: Any, spec: GraphSpec, *, trt: Any, device: torch.device, stream: Any,
                 capture: Callable[[Callable[[], None]], Any] | None = None) -> None:
        self.engine, self.spec, self.device, self.stream = engine, spec, device, stream
        self.runtime: Any = None  # the trt.Runtime that deserialised ``engine``; must outlive it
        self.dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                       trt.DataType.BOOL: torch.bool, trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
        self._check_io(trt)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for {spec.name!r} (out of GPU memory?)")
        self.capture = capture if spec.is_static else None
        self.graph: Any = None
        self.buffers: dict[str, Tensor] = {}
        if spec.is_static:
            for t in (*spec.inputs, *spec.outputs):
                self.buffers[t.name] = torch.empty(t.shape, dtype=self._dtype(t.name), device=device)
                self.context.set_tensor_address(t.name, self.buffers[t.name].data_ptr())

    def _dtype(self, name: str) -> torch.dtype:
        return self.dtypes[self.engine.get_tensor_dtype(name)]

    def _check_io(self, trt: Any) -> None:
        engine, spec = self.engine, self.spec
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        problems = []
        if sorted(inputs) != sorted(spec.input_names) or sorted(outputs) != sorted(spec.output_names):
            problems.append(f"engine I/O {inputs} -> {outputs}, spec {list(spec.input_names)} -> "
                            f"{list(spec.output_names)}")
        else:
            for t in (*spec.inputs, *spec.outputs):
                shape = tuple(engine.get_tensor_shape(t.name))
                want = tuple(-1 if isinstance(d, str) else d for d in t.shape)
                if shape != want:
                    problems.append(f"{t.name}: engine shape {shape}, spec {want}")
                dtype = self.dtypes.get(engine.get_tensor_dtype(t.name))
                if dtype != {"float32": torch.float32, "bool": torch.bool}[t.dtype]:
                    problems.append(f"{t.name}: engine dtype {engine.get_tensor_dtype(t.name)}, spec {t.dtype}")
        if problems:
            raise EngineError(f"TensorRT engine for graph {spec.name!r} does not match its spec: {'; '.join(problems)}")

    def __call__(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        with self.stream:
            if not self.spec.is_static:
                return self._run_dynamic(feeds)
            for t in self.spec.inputs:
                self.buffers[t.name].copy_(feeds[t.name], non_blocking=True)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._execute()  # the first run also does TensorRT's deferred setup: never capture it
                if self.capture is not None:
                    self.graph = self.capture(self._execute)
            return {name: self.buffers[name].clone() for name in self.spec.output_names}

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT execution of {self.spec.name!r} failed (see the TensorRT log above)")

    def _run_dynamic(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        keep = {}
        for t in self.spec.inputs:
            x = feeds[t.name].to(self.device, self._dtype(t.name)).contiguous()
            keep[t.name] = x
            if not self.context.set_input_shape(t.name, tuple(x.shape)):
                raise ValueError(f"graph {self.spec.name!r}: input {t.name} shape {tuple(x.shape)} is outside the "
                                 f"engine's profile {self.spec.dynamic}")
            self.context.set_tensor_address(t.name, x.data_ptr())
        outputs = {}
        for t in self.spec.outputs:
            shape = tuple(self.context.get_tensor_shape(t.name))
            outputs[t.name] = torch.empty(shape, dtype=self._dtype(t.name), device=self.device)
            self.context.set_tensor_address(t.name, outputs[t.name].data_ptr())
        self._execute()
        return outputs


class TensorRTBackend(GraphBackend):
    name = "tensorrt"

    def __init__(self, config: ModelConfig, runners: dict[str, TrtRunner], *, device: torch.device,
                 manifest: Manifest | None = None) -> None:
        super().__init__(config, runners, device=device)
        self.manifest = manifest
        self.role = manifest.role if manifest is not None else None

    @classmethod
    def load(cls, engine_dir: str | Path, *, device: str = "cuda", cuda_graphs: bool = True) -> TensorRTBackend:
        """Check ``engine_dir``'s plans against this machine, then deserialise them onto ``device``."""
        trt = import_tensorrt()
        cudart = import_cudart()
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(f"the TensorRT backend runs on a CUDA device; got {device!r} "
                                     f"(torch.cuda.is_available() = {torch.cuda.is_available()})")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        folder = Path(engine_dir)
        manifest = read_manifest(folder)
        config = ModelConfig.from_dict(manifest.model)
        names = default_graphs(config)
        check_tensorrt(manifest, folder, names=names, version=trt.__version__, gpu=gpu_info(index))
        plans = {n: folder / manifest.tensorrt.plans[n].plan for n in names}  # type: ignore[union-attr]
        specs = {n: manifest.graphs[n].spec for n in names}
        runners = load_runners(trt, cudart, plans, specs, device=torch.device("cuda", index), cuda_graphs=cuda_graphs,
                               rebuild=manifest.rebuild_command(folder))
        return cls(config, runners, device=torch.device("cuda", index), manifest=manifest)


def load_runners(trt: Any, cudart: Any, plans: dict[str, Path], specs: dict[str, GraphSpec], *,
                 device: torch.device, cuda_graphs: bool, rebuild: str) -> dict[str, TrtRunner]:
    """Deserialise each plan and wrap it in a TrtRunner (also used by the exporter's TensorRT parity)."""
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    runners = {}
    with torch.cuda.device(device):
        for name, path in plans.items():
            engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if engine is None:
                raise EngineError(f"TensorRT could not deserialise {path} (see its log above). Rebuild with:\n  {rebuild}")
            stream = _CudaStream(device)
            capture = (lambda fn, s=stream: CudaGraph(cudart, s.handle, fn)) if cuda_graphs else None
            runners[name] = TrtRunner(engine, specs[name], trt=trt, device=device, stream=stream, capture=capture)
            runners[name].runtime = runtime
    return runners
