"""The onnxruntime backend: the exported ONNX graphs of an engine directory (docs/design.md §4, §5).

``OnnxRuntimeBackend.load("engines/NAME")`` reads ``manifest.json``, checks every ONNX file against
its recorded sha256 and that the specs still match this version of fada-rt, and opens one
``InferenceSession`` per graph. The CPU provider is the default (it is also what the export parity
checks run on); ``device="cuda"`` needs the ``onnxruntime-gpu`` build. Inputs and outputs cross
as numpy arrays on the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.graph_backend import GraphBackend
from fada_rt.backends.graphs import GraphSpec, default_graphs, graph_specs
from fada_rt.backends.manifest import EngineError, Manifest, check_graph_files, read_manifest
from fada_rt.config import ModelConfig

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailable(
            'the onnxruntime backend needs onnxruntime: pip install -e ".[export]" (onnxruntime-gpu for CUDA)'
        ) from err
    return onnxruntime


class OrtRunner:
    """One graph in one ``onnxruntime.InferenceSession``."""

    def __init__(self, session: Any, spec: GraphSpec) -> None:
        names = [i.name for i in session.get_inputs()]
        outs = [o.name for o in session.get_outputs()]
        if sorted(names) != sorted(spec.input_names) or outs != list(spec.output_names):
            raise EngineError(f"ONNX graph {spec.name!r} has inputs {names} and outputs {outs}; its spec says "
                              f"{list(spec.input_names)} -> {list(spec.output_names)}")
        self.session = session
        self.spec = spec

    def __call__(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        device = next(iter(feeds.values())).device
        arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in feeds.items()}
        outputs = self.session.run(list(self.spec.output_names), arrays)
        return {k: torch.from_numpy(v).to(device) for k, v in zip(self.spec.output_names, outputs)}


def open_session(path: str | Path, *, device: str = "cpu", threads: int | None = None) -> Any:
    """An InferenceSession for one ONNX file on ``device`` (no provider fallback)."""
    ort = import_onnxruntime()
    if device not in _PROVIDERS:
        raise ValueError(f"onnxruntime device must be one of {sorted(_PROVIDERS)}, got {device!r}")
    provider = _PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(f"this onnxruntime has no {provider} (it has {ort.get_available_providers()}); "
                                 "for CUDA install onnxruntime-gpu instead of onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the CPU provider logs every fp16 node it runs via fp32
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=[provider])


class OnnxRuntimeBackend(GraphBackend):
    name = "onnxruntime"

    def __init__(self, config: ModelConfig, runners: dict[str, OrtRunner], *, manifest: Manifest | None = None
                 ) -> None:
        super().__init__(config, runners, device="cpu")
        self.manifest = manifest
        self.role = manifest.role if manifest is not None else None

    @classmethod
    def load(cls, engine_dir: str | Path, *, device: str = "cpu", threads: int | None = None) -> OnnxRuntimeBackend:
        """Open the ONNX graphs of ``engine_dir`` after checking them against its manifest."""
        import_onnxruntime()
        folder = Path(engine_dir)
        manifest = read_manifest(folder)
        config = ModelConfig.from_dict(manifest.model)
        names = default_graphs(config)
        check_graph_files(manifest, folder, names)
        check_specs(manifest, folder, names)
        runners = {
            n: OrtRunner(open_session(folder / manifest.graphs[n].onnx, device=device, threads=threads),
                         manifest.graphs[n].spec)
            for n in names
        }
        return cls(config, runners, manifest=manifest)

    @classmethod
    def from_files(cls, config: ModelConfig, files: dict[str, tuple[Path, GraphSpec]], *, threads: int | None = None
                   ) -> OnnxRuntimeBackend:
        """A CPU backend over ONNX files not (yet) described by a manifest (the exporter's parity check)."""
        runners = {n: OrtRunner(open_session(path, threads=threads), spec) for n, (path, spec) in files.items()}
        return cls(config, runners)


def check_specs(manifest: Manifest, folder: Path, names: tuple[str, ...]) -> None:
    """The recorded specs must be the ones this fada-rt computes for the config (else: re-export)."""
    config = ModelConfig.from_dict(manifest.model)
    expected = graph_specs(config, names, denoiser_batch=manifest.graphs["denoiser"].spec.batch)
    stale = [n for n in names if manifest.graphs[n].spec != expected[n]]
    if stale:
        raise EngineError(f"engine directory {folder}: the graphs {stale} were exported with other input/output "
                          f"shapes than this fada-rt uses. Rebuild with:\n  {manifest.rebuild_command(folder)}")
