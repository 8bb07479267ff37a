"""Backends behind one interface (DESIGN.md §4): ``torch``, ``onnxruntime``, ``tensorrt``.

:func:`create_backend` is the one place that turns a backend name plus artifacts into a
:class:`~fada_rt.backends.base.Backend`. The onnxruntime and TensorRT backends are imported only
when asked for, so the runtime works with torch alone. There is no fallback: a backend whose
libraries or artifacts are missing is a :class:`BackendUnavailable` naming what to install or build.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from fada_rt.backends.base import Backend, BackendUnavailable

BACKENDS = ("torch", "onnxruntime", "tensorrt")

# name -> (module, class, third-party packages it needs, what to install)
_ENGINE_BACKENDS = {
    "onnxruntime": ("fada_rt.backends.onnxruntime_backend", "OnnxRuntimeBackend", ("onnxruntime", "onnx"),
                    'pip install -e ".[export]"  (onnxruntime; onnxruntime-gpu for CUDA)'),
    "tensorrt": ("fada_rt.backends.tensorrt_backend", "TensorRTBackend", ("tensorrt", "cuda", "polygraphy"),
                 'pip install -e ".[trt]"  (TensorRT, cuda-python; needs an NVIDIA GPU and driver)'),
}

BUILD_HINT = "export them with `python -m export --checkpoint CHECKPOINT_DIR --out ENGINE_DIR`"

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend", "parse_dtype"]


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """'float32' | 'float16' | 'bfloat16' (or a torch dtype; None means float32)."""
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of float32, float16, bfloat16")
    return table[name]


def create_backend(
    kind: str,
    *,
    checkpoint: str | Path | None = None,
    engine_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    compile: bool = False,
    cuda_graphs: bool | None = None,
    preset: str | None = None,
) -> Backend:
    """Build a backend.

    ``torch`` loads ``checkpoint`` (a checkpoint folder) onto ``device`` in ``dtype`` with optional
    ``compile`` / ``cuda_graphs`` (default off); ``onnxruntime`` / ``tensorrt`` load the exported
    graphs / engines in ``engine_dir`` (their manifest is checked: a missing or stale engine directory is an
    ``EngineError``, a :class:`BackendUnavailable`, with the command that rebuilds it).
    ``cuda_graphs=None`` keeps the tensorrt backend's default (on). ``preset``, when given, must match
    the checkpoint's or the engines' preset.
    """
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; choose one of {BACKENDS}")
    if kind == "torch":
        if checkpoint is None:
            raise ValueError("the torch backend needs a checkpoint folder (config.json + model.safetensors)")
        if engine_dir is not None:
            raise ValueError("engine_dir is for the onnxruntime/tensorrt backends; the torch backend reads a checkpoint")
        from fada_rt.backends.torch_backend import TorchBackend

        return TorchBackend.load(checkpoint, device=device, dtype=parse_dtype(dtype), compile=compile,
                                 cuda_graphs=bool(cuda_graphs), preset=preset)
    if compile:
        raise ValueError(f"compile is a torch-backend option; the {kind} backend runs prebuilt graphs")
    if dtype is not None:
        raise ValueError(f"the {kind} backend's precision is fixed when its engines are built; do not pass dtype")
    if engine_dir is None:
        raise ValueError(f"the {kind} backend needs --engine-dir (a folder of exported engines); {BUILD_HINT}")
    folder = Path(engine_dir)
    backend_cls = _engine_backend_class(kind)
    if kind == "onnxruntime":
        if cuda_graphs:
            raise ValueError("cuda_graphs is for the torch (CUDA) and tensorrt backends, not onnxruntime")
        backend = backend_cls.load(folder, device=torch.device(device).type)  # checks the manifest
    else:
        options = {} if cuda_graphs is None else {"cuda_graphs": cuda_graphs}
        backend = backend_cls.load(folder, device=str(device), **options)  # checks the manifest vs this GPU
    if preset is not None and backend.config.preset != preset:
        raise ValueError(f"the engines in {folder} are of preset {backend.config.preset!r}, not {preset!r}")
    return backend


def _engine_backend_class(kind: str) -> type[Backend]:
    module_name, class_name, packages, install = _ENGINE_BACKENDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None) or ""
        if missing.split(".")[0] in packages:
            raise BackendUnavailable(f"the {kind} backend needs the {missing!r} package: {install}") from err
        if missing == module_name:
            raise BackendUnavailable(f"this fada-rt installation has no {kind} backend ({module_name} is missing)"
                                     ) from err
        raise
    return getattr(module, class_name)
