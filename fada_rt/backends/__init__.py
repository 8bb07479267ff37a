"""Backends behind one interface (docs/design.md §4): ``torch``, ``onnxruntime``, ``tensorrt``.

:func:`create_backend` is the one place that turns :class:`LoadOptions` (which backend, which
artifacts, device, precision, ...) into a :class:`~fada_rt.backends.base.Backend`. The onnxruntime and
TensorRT backends are imported only when asked for, so the runtime works with torch alone. There is no
fallback: a backend whose libraries or artifacts are missing is a :class:`BackendUnavailable` naming what
to install or build.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from fada_rt.backends.base import Backend, BackendUnavailable
from fada_rt.backends.options import BACKENDS, LoadOptions, add_load_options, load_options_from_args

# name -> (module, class, third-party packages it needs, what to install)
_ENGINE_BACKENDS = {
    "onnxruntime": ("fada_rt.backends.onnxruntime_backend", "OnnxRuntimeBackend", ("onnxruntime", "onnx"),
                    'pip install -e ".[export]"  (onnxruntime; onnxruntime-gpu for CUDA)'),
    "tensorrt": ("fada_rt.backends.tensorrt_backend", "TensorRTBackend", ("tensorrt", "cuda", "polygraphy"),
                 'pip install -e ".[trt]"  (TensorRT, cuda-python; needs an NVIDIA GPU and driver)'),
}

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "LoadOptions", "add_load_options", "create_backend",
           "load_options_from_args"]


def create_backend(options: LoadOptions) -> Backend:
    """Build the backend ``options`` describe.

    ``torch`` loads ``options.checkpoint`` (a checkpoint folder; here it must be given) onto the device in
    ``options.dtype`` with optional compile / CUDA graphs; ``onnxruntime`` / ``tensorrt`` load the exported
    graphs / engines in ``options.engine_dir`` (their manifest is checked: a missing or stale engine
    directory is an ``EngineError``, a :class:`BackendUnavailable`, with the command that rebuilds it).
    ``options.threads`` sets torch's CPU threads (and onnxruntime's). ``options.preset``, when given, must
    match the checkpoint's or the engines' preset.
    """
    if not isinstance(options, LoadOptions):
        raise TypeError(f"create_backend takes LoadOptions, got {type(options).__name__}")
    kind = options.backend
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if kind == "torch":
        if options.checkpoint is None:
            raise ValueError("the torch backend needs a checkpoint folder (config.json + model.safetensors)")
        from fada_rt.backends.torch_backend import TorchBackend

        return TorchBackend.load(options)
    folder = Path(options.engine_dir)  # type: ignore[arg-type]  (LoadOptions requires it for engines)
    backend_cls = _engine_backend_class(kind)
    if kind == "onnxruntime":  # checks the manifest
        backend = backend_cls.load(folder, device=torch.device(options.device).type, threads=options.threads)
    else:
        extra = {} if options.cuda_graphs is None else {"cuda_graphs": options.cuda_graphs}
        backend = backend_cls.load(folder, device=options.device, **extra)  # checks the manifest vs this GPU
    if options.preset is not None and backend.config.preset != options.preset:
        raise ValueError(f"the engines in {folder} are of preset {backend.config.preset!r}, not {options.preset!r}")
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
