"""The backends benchmarks.nfe_latency compares: which can run here, and building each once per model
(exported ONNX / TensorRT engines cached in the benchmark's work folder)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fada_rt.backends.base import Backend, BackendUnavailable
from fada_rt.backends.manifest import MANIFEST_NAME, EngineError
from fada_rt.backends.torch_backend import tiny_decoder_for
from fada_rt.models.fada import FadaModel
from fada_rt.models.tiny_decoder import TinyDecoder, TinyDecoderConfig
from fada_rt.precision import Precision


@dataclass(eq=False)
class ModelEntry:
    model: FadaModel
    role: str | None  # None: one set of weights serving several roles (random init)
    checkpoint: Path | None  # where it came from (None: random init)


#: what a study row changes on a torch backend ("torch-compiled+channels-last"): measured side by side with the row
#: it modifies, kept in the library only where faster with parity (issue 27)
STUDIES = ("channels-last", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "fp8")
TORCH_KINDS = ("torch", "torch-compiled", "torch-chunk-graph")


def split_kind(kind: str) -> tuple[str, str | None]:
    """``"torch-compiled+channels-last"`` -> ("torch-compiled", "channels-last"); a plain kind -> (kind, None)."""
    base, _, study = kind.partition("+")
    if study and (base not in TORCH_KINDS or study not in STUDIES):
        raise ValueError(f"backend {kind!r}: a study is TORCH_KIND+STUDY with TORCH_KIND in {TORCH_KINDS} and STUDY "
                         f"in {STUDIES}")
    return base, study or None


def unavailable_reason(kind: str, *, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why backend ``kind`` cannot run here (None when it can)."""
    kind, study = split_kind(kind)
    if kind in ("torch-compiled", "torch-chunk-graph") and device.type != "cuda":
        return ("CUDA only in this benchmark (torch.compile + CUDA graphs); on CPU torch.compile needs a C++ "
                "toolchain and minutes of compilation per graph and has no CUDA graphs")
    if study in ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn") and device.type != "cuda":
        return f"{study} is a CUDA attention kernel"
    if study == "fp8":
        if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
            return "fp8 matmuls need a CUDA GPU of compute capability 8.9 or more (Ada, Hopper)"
        try:
            import torchao.quantization  # noqa: F401
        except ImportError:
            return "the fp8 study needs torchao (pip install torchao; carry its wheel to a GPU image without it)"
    if kind in ("onnxruntime", "tensorrt") and dtype == torch.bfloat16:
        return f"{kind} engines are exported in fp32 or fp16; bf16 is torch-only (use --dtype fp16)"
    if kind == "onnxruntime":
        from fada_rt.backends.onnxruntime_backend import import_onnxruntime

        try:
            ort = import_onnxruntime()
        except BackendUnavailable as err:
            return str(err)
        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            return (f"this onnxruntime has no {provider} (it has {ort.get_available_providers()}); "
                    "install onnxruntime-gpu for CUDA")
    if kind == "tensorrt":
        if device.type != "cuda":
            return "TensorRT needs a CUDA GPU; this run is on the CPU"
        from fada_rt.backends.tensorrt_backend import import_cudart, import_tensorrt

        try:
            import_tensorrt()
            import_cudart()
        except BackendUnavailable as err:
            return str(err)
    return None


class BackendFactory:
    """Builds each backend once per model; exported engines are cached in ``work_dir``."""

    def __init__(self, *, device: torch.device, dtype: torch.dtype, work_dir: Path, ort_threads: int,
                 log: Callable[[str], None], decoder: str = "vae") -> None:
        """``decoder``: the torch backends' latents-to-frames (``LoadOptions.decoder``; for random-init models a
        random tiny decoder of the preset's shape stands in for "tiny": the work is the same)."""
        self.device, self.dtype, self.work_dir, self.ort_threads, self.log = device, dtype, work_dir, ort_threads, log
        self.decoder = decoder
        self.precision = Precision.parse(dtype).value  # of the exported engines (bf16: no engine backends)
        self._built: dict[tuple[str, int], Backend] = {}

    def get(self, kind: str, entry: ModelEntry, role: str | None) -> Backend:
        """The ``kind`` backend of ``entry``'s model, for a variant of checkpoint role ``role``."""
        key = (kind, id(entry.model))
        if key not in self._built:
            self._built[key] = self._build(kind, entry)
        backend = self._built[key]
        if backend.role is not None and backend.role != role:  # shared weights (random init) serving another role
            backend = copy.copy(backend)  # the same sessions/engines, with the role unknown
            backend.role, backend.manifest = None, None
        return backend

    def eager(self, entry: ModelEntry) -> Backend:
        """The torch eager backend of ``entry`` (for FLOP counting)."""
        return self.get("torch", entry, entry.role)

    def _build(self, kind: str, entry: ModelEntry) -> Backend:
        from fada_rt.backends.torch_backend import TorchBackend, prepare_model

        base, study = split_kind(kind)
        if base in TORCH_KINDS:
            model = entry.model if study is None else copy.deepcopy(entry.model)  # a study never touches the others
            model = prepare_model(model, device=self.device, dtype=self.dtype)  # in place, shared by the plain kinds
            if study == "channels-last":
                model = model.to(memory_format=torch.channels_last)
            if study == "fp8":  # the denoiser's linear layers: fp8 weights and activations, scaled per row
                from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

                quantize_(model.denoiser, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
            compiled, chunk = base != "torch", base == "torch-chunk-graph"
            backend = TorchBackend(model, compile=compiled, cuda_graphs=compiled, chunk_graph=chunk, role=entry.role,
                                   decoder=self._decoder(entry))
            return backend if study is None or not study.startswith("sdpa-") else WithinSdpa(backend, study)
        folder = self._engines(kind, entry)
        try:
            return self._open(kind, folder)
        except EngineError as err:  # cached engines of another TensorRT/GPU/fada-rt: build them again
            self.log(f"cached engines in {folder} cannot be used ({err}); exporting them again")
            self._export(kind, entry, folder)
            return self._open(kind, folder)

    def _decoder(self, entry: ModelEntry) -> TinyDecoder | None:
        if self.decoder == "vae":
            return None
        if entry.checkpoint is None and self.decoder == "tiny":  # random init: a random decoder of the shape
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return TinyDecoder(TinyDecoderConfig.for_model(entry.model.config))
        return tiny_decoder_for(self.decoder, entry.model.config)

    def _engines(self, kind: str, entry: ModelEntry) -> Path:
        model = entry.model
        if next(model.parameters()).dtype != torch.float32 or next(model.parameters()).device.type != "cpu":
            raise RuntimeError("engines must be exported before the torch backends move the weights")
        trt = kind == "tensorrt"
        key = hashlib.sha1(json.dumps({"model": model.config.to_dict(), "role": entry.role, "precision": self.precision,
                                       "tensorrt": trt, "checkpoint": str(entry.checkpoint)}, sort_keys=True).encode())
        folder = self.work_dir / "engines" / (f"{model.config.preset}-{model.config.cfg.mode}-{self.precision}"
                                              f"{'-trt' if trt else ''}-{key.hexdigest()[:10]}")
        if not (folder / MANIFEST_NAME).is_file():
            self._export(kind, entry, folder)
        return folder

    def _export(self, kind: str, entry: ModelEntry, folder: Path) -> None:
        from fada_rt.checkpoint import save_model
        from fada_rt.export.engines import export_engines

        checkpoint = entry.checkpoint
        if checkpoint is None:
            checkpoint = self.work_dir / "checkpoints" / folder.name
            save_model(entry.model, checkpoint, role=entry.role or "teacher", info={"weights": "random init"})
        self.log(f"exporting {checkpoint} -> {folder} ({self.precision}{', TensorRT' if kind == 'tensorrt' else ''})")
        export_engines(checkpoint=checkpoint, out=folder, precision=self.precision, tensorrt=kind == "tensorrt",
                       chunk=False, log=lambda s: None)

    def _open(self, kind: str, folder: Path) -> Backend:
        if kind == "onnxruntime":
            from fada_rt.backends.onnxruntime_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend.load(folder, device=self.device.type, threads=self.ort_threads)
        from fada_rt.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.load(folder, device=str(self.device), cuda_graphs=True)


class WithinSdpa:
    """A torch backend whose every network call runs within one ``torch.nn.attention.sdpa_kernel`` backend (a
    compiled graph traces, and keeps, the kernel chosen there); the rest is the wrapped backend."""

    def __init__(self, inner: Backend, study: str) -> None:
        from torch.nn.attention import SDPBackend

        self.inner = inner
        self.kernel = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
                       "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa-math": SDPBackend.MATH}[study]

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name in ("encode", "decode", "audio_features", "audio_tokens", "reference", "motion_features", "conditions",
                    "sample_chunk"):
            return self._within(value)
        if name == "bind":
            return lambda conditions: self._within(value(conditions))
        return value

    def _within(self, fn: Callable[..., Any]) -> Any:
        from torch.nn.attention import sdpa_kernel

        def call(*args: Any, **kwargs: Any) -> Any:
            with sdpa_kernel(self.kernel):
                return fn(*args, **kwargs)

        call.cfg_conditioned = getattr(fn, "cfg_conditioned", None)  # a bound denoiser's attribute
        return call
