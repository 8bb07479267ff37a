"""``manifest.json`` of an engine directory, and the checks a loader runs against it (docs/design.md §5).

An engine directory (``engines/NAME``) holds the exported ONNX graphs, optionally their TensorRT
plans and one ``manifest.json``. The manifest is written last by ``python -m fada_rt.export``, only after
every parity check passed, so a directory without one is an unfinished or failed export. It records
what a backend needs to run the graphs from the directory alone — the model config, the
checkpoint's role, the graph specs with their shapes, the precision — and what a loader must check
before trusting the files: the sha256 of every ONNX file, and for TensorRT plans the TensorRT
version, the GPU name and compute capability they were built for and the ONNX hash each was built
from. Any mismatch is an :class:`EngineError` that carries the exact rebuild command.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.graphs import GraphSpec
from fada_rt.precision import Precision

MANIFEST_NAME = "manifest.json"
FORMAT = "fada-rt-engines"
FORMAT_VERSION = 1
#: The precisions an engine directory can hold (bf16 is torch-only).
ENGINE_PRECISIONS: tuple[str, ...] = (Precision.FP32.value, Precision.FP16.value)
_CHUNK = 1 << 24


class EngineError(BackendUnavailable):
    """An engine directory that is missing, unfinished, stale or built for another machine."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def engine_precision(value: str | Precision) -> Precision:
    """An engine precision, fp32 or fp16 (torch's float32/float16 spellings too); bf16 is refused."""
    try:
        precision = Precision.parse(value)
    except ValueError:
        raise ValueError(f"unknown engine precision {value!r}; engines are fp32 or fp16") from None
    if precision.value not in ENGINE_PRECISIONS:
        raise ValueError(f"engines are fp32 or fp16, not {precision.value}: {precision.value} runs on the torch "
                         f"backend only (--backend torch --dtype {precision.value})")
    return precision


def rebuild_command(
    *, checkpoint: str, out: str | Path, graphs: tuple[str, ...] | None, precision: str | Precision, tensorrt: bool,
    denoiser_batch: int | None = None,
) -> str:
    """The ``python -m fada_rt.export`` command line that (re)builds an engine directory."""
    parts = ["python", "-m", "fada_rt.export", "--checkpoint", checkpoint, "--out", str(out)]
    if graphs:
        parts += ["--graphs", *graphs]
    parts += ["--precision", engine_precision(precision).value]
    if denoiser_batch is not None:
        parts += ["--denoiser-batch", str(denoiser_batch)]
    if tensorrt:
        parts.append("--tensorrt")
    return shlex.join(parts)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "major.minor", e.g. "9.0"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "compute_capability": self.compute_capability}


@dataclass(frozen=True)
class GraphEntry:
    """One exported graph: its spec, its ONNX file (+ external data) with their sha256, parity."""

    spec: GraphSpec
    onnx: str
    files: dict[str, str]  # file name -> sha256 (the .onnx first, then its external data, if any)
    parity: dict[str, Any]

    @property
    def onnx_sha256(self) -> str:
        return self.files[self.onnx]

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "onnx": self.onnx, "files": self.files, "parity": self.parity}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphEntry:
        _expect_keys(data, {"spec", "onnx", "files", "parity"}, "graph entry")
        return cls(GraphSpec.from_dict(data["spec"]), data["onnx"], dict(data["files"]), dict(data["parity"]))


@dataclass(frozen=True)
class PlanEntry:
    plan: str
    sha256: str
    onnx_sha256: str  # the ONNX file the plan was built from
    parity: dict[str, Any]


@dataclass(frozen=True)
class TensorRTEntry:
    version: str
    gpu: GpuInfo
    plans: dict[str, PlanEntry]
    timing_cache: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "gpu": self.gpu.to_dict(),
            "plans": {k: vars(v) for k, v in self.plans.items()},
            "timing_cache": self.timing_cache,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorRTEntry:
        _expect_keys(data, {"version", "gpu", "plans", "timing_cache"}, "tensorrt entry")
        plans = {}
        for name, p in data["plans"].items():
            _expect_keys(p, {"plan", "sha256", "onnx_sha256", "parity"}, f"tensorrt plan {name!r}")
            plans[name] = PlanEntry(**p)
        _expect_keys(data["gpu"], {"name", "compute_capability"}, "tensorrt gpu")
        return cls(data["version"], GpuInfo(**data["gpu"]), plans, data["timing_cache"])


@dataclass(frozen=True)
class Manifest:
    checkpoint: str  # the checkpoint folder as given to the exporter
    role: str  # "teacher" / "student"
    model: dict[str, Any]  # ModelConfig.to_dict()
    precision: str
    opset: int
    graphs: dict[str, GraphEntry]
    exported_graphs: tuple[str, ...] | None = None  # --graphs as given (None: the preset's default)
    denoiser_batch: int | None = None  # --denoiser-batch as given
    chunk_parity: dict[str, Any] | None = None
    tensorrt: TensorRTEntry | None = None
    info: dict[str, Any] = field(default_factory=dict)  # versions, timings: for people, not checked

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", engine_precision(self.precision).value)  # "fp32" / "fp16"

    def rebuild_command(self, out: str | Path, *, tensorrt: bool | None = None, all_graphs: bool = False) -> str:
        """The export command that rebuilds this directory (``all_graphs``: drop a --graphs subset)."""
        return rebuild_command(
            checkpoint=self.checkpoint, out=out, graphs=None if all_graphs else self.exported_graphs,
            precision=self.precision,
            tensorrt=self.tensorrt is not None if tensorrt is None else tensorrt, denoiser_batch=self.denoiser_batch,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "checkpoint": self.checkpoint,
            "role": self.role,
            "model": self.model,
            "precision": self.precision,
            "opset": self.opset,
            "exported_graphs": list(self.exported_graphs) if self.exported_graphs else None,
            "denoiser_batch": self.denoiser_batch,
            "graphs": {k: v.to_dict() for k, v in self.graphs.items()},
            "chunk_parity": self.chunk_parity,
            "tensorrt": self.tensorrt.to_dict() if self.tensorrt else None,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        keys = {"format", "format_version", "checkpoint", "role", "model", "precision", "opset", "exported_graphs",
                "denoiser_batch", "graphs", "chunk_parity", "tensorrt", "info"}
        _expect_keys(data, keys, "manifest")
        if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} manifest (format {data['format']!r} "
                             f"v{data['format_version']!r})")
        return cls(
            checkpoint=data["checkpoint"], role=data["role"], model=data["model"], precision=data["precision"],
            opset=int(data["opset"]), graphs={k: GraphEntry.from_dict(v) for k, v in data["graphs"].items()},
            exported_graphs=tuple(data["exported_graphs"]) if data["exported_graphs"] else None,
            denoiser_batch=data["denoiser_batch"], chunk_parity=data["chunk_parity"],
            tensorrt=TensorRTEntry.from_dict(data["tensorrt"]) if data["tensorrt"] else None, info=data["info"],
        )


def _expect_keys(data: Any, keys: set[str], what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    missing, unknown = sorted(keys - set(data)), sorted(set(data) - keys)
    if missing or unknown:
        raise ValueError(f"{what}: missing keys {missing}, unknown keys {unknown}")


def write_manifest(manifest: Manifest, engine_dir: str | Path) -> Path:
    path = Path(engine_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a manifest
    return path


_NO_MANIFEST_HINT = "python -m fada_rt.export --checkpoint CHECKPOINT_DIR --out {out} [--precision fp16] [--tensorrt]"


def read_manifest(engine_dir: str | Path) -> Manifest:
    """Read ``engine_dir/manifest.json``; a missing or unreadable one is an EngineError with a rebuild hint."""
    folder = Path(engine_dir)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise EngineError(f"engine directory {folder} does not exist; export one with: "
                          + _NO_MANIFEST_HINT.format(out=shlex.quote(str(folder))))
    if not path.is_file():
        raise EngineError(f"{folder} has no {MANIFEST_NAME}: the export did not finish or its parity checks failed. "
                          "Export again with: " + _NO_MANIFEST_HINT.format(out=shlex.quote(str(folder))))
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as err:
        raise EngineError(f"{path} is not a valid engine manifest ({err}); export again with: "
                          + _NO_MANIFEST_HINT.format(out=shlex.quote(str(folder)))) from err


# ---- checks ---------------------------------------------------------------------------------


def check_graph_files(manifest: Manifest, engine_dir: str | Path, names: tuple[str, ...]) -> None:
    """Every file of ``names`` exists and has the sha256 the manifest recorded."""
    folder = Path(engine_dir)
    problems = []
    missing_graphs = [n for n in names if n not in manifest.graphs]
    if missing_graphs:
        problems.append(f"graphs {missing_graphs} were not exported (the directory has {sorted(manifest.graphs)})")
    for name in names:
        if name not in manifest.graphs:
            continue
        for fname, digest in manifest.graphs[name].files.items():
            path = folder / fname
            if not path.is_file():
                problems.append(f"{fname} is missing")
            elif sha256_file(path) != digest:
                problems.append(f"{fname} changed since export (sha256 differs from the manifest)")
    if problems:
        command = manifest.rebuild_command(folder, all_graphs=bool(missing_graphs))
        raise EngineError(_mismatch_message(folder, problems, command))


def check_tensorrt(manifest: Manifest, engine_dir: str | Path, *, names: tuple[str, ...], version: str,
                   gpu: GpuInfo) -> None:
    """TensorRT plans of ``names`` exist, match their files, this TensorRT and this GPU."""
    folder = Path(engine_dir)
    trt = manifest.tensorrt
    all_graphs = any(n not in manifest.graphs for n in names)
    command = manifest.rebuild_command(folder, tensorrt=True, all_graphs=all_graphs)
    if trt is None:
        raise EngineError(_mismatch_message(folder, ["it has no TensorRT plans (exported without --tensorrt)"],
                                            command))
    problems = []
    if trt.version != version:
        problems.append(f"built with TensorRT {trt.version}, this machine has TensorRT {version}")
    if trt.gpu.name != gpu.name or trt.gpu.compute_capability != gpu.compute_capability:
        problems.append(f"built for GPU {trt.gpu.name!r} (compute capability {trt.gpu.compute_capability}), "
                        f"this machine has {gpu.name!r} (compute capability {gpu.compute_capability})")
    for name in names:
        plan = trt.plans.get(name)
        graph = manifest.graphs.get(name)
        if plan is None or graph is None:
            problems.append(f"no TensorRT plan for graph {name!r}")
            continue
        if plan.onnx_sha256 != graph.onnx_sha256:
            problems.append(f"{plan.plan} was built from another ONNX (sha256 {plan.onnx_sha256[:12]}..., "
                            f"{graph.onnx} has {graph.onnx_sha256[:12]}...)")
        path = folder / plan.plan
        if not path.is_file():
            problems.append(f"{plan.plan} is missing")
        elif sha256_file(path) != plan.sha256:
            problems.append(f"{plan.plan} changed since it was built (sha256 differs from the manifest)")
    if problems:
        raise EngineError(_mismatch_message(folder, problems, command))


def _mismatch_message(folder: Path, problems: list[str], command: str) -> str:
    return f"engine directory {folder} cannot be used ({'; '.join(problems)}); rebuild it with: {command}"


def timing_cache_name(version: str, gpu: GpuInfo) -> str:
    """File name of a TensorRT timing cache: caches are only valid for one TensorRT and one GPU."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-") or "gpu"
    cc = gpu.compute_capability.replace(".", "")
    return f"timing-trt{version}-{slug}-sm{cc}.cache"
