"""Checkpoint -> engine directory: ONNX graphs, parity, fp16, TensorRT plans, manifest (docs/design.md §5).

:func:`export_engines` is what ``python -m fada_rt.export`` runs. Per graph: trace the torch module on its
sample inputs, check the ONNX I/O against the spec, check parity with onnxruntime (CPU) against
torch fp32, and for ``precision="fp16"`` rewrite to fp16 with fp32 islands and check again with the
fp16 tolerance. Then a whole 6-step chunk through the onnxruntime backend against the torch
backend, then (``tensorrt=True``) the TensorRT plans and their parity. ``manifest.json`` is written
last and only when every check passed; an existing one is removed first, so a failed or
interrupted export never leaves a directory a backend would load.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor
from tqdm import tqdm

from fada_rt.backends.graphs import GraphSpec, default_graphs, graph_specs
from fada_rt.backends.manifest import (
    MANIFEST_NAME,
    GraphEntry,
    Manifest,
    engine_precision,
    rebuild_command,
    sha256_file,
    write_manifest,
)
from fada_rt.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    OrtRunner,
    import_onnxruntime,
    open_session,
)
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import load_model
from fada_rt.export.fp16 import convert_to_fp16
from fada_rt.export.onnx_export import EXTERNAL_DATA_BYTES, OPSET, save_onnx, trace_to_onnx
from fada_rt.export.parity import GRAPH_TOLERANCE, ParityResult, check, chunk_parity, compare
from fada_rt.export.samples import sample_inputs
from fada_rt.export.wrappers import graph_module
from fada_rt.models.fada import FadaModel
from fada_rt.precision import Precision

Samples = dict[str, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]  # graph -> (inputs, torch outputs)


def export_engines(
    *,
    checkpoint: str | Path,
    out: str | Path,
    graphs: Sequence[str] | None = None,
    precision: str | Precision = Precision.FP32,
    tensorrt: bool = False,
    denoiser_batch: int | None = None,
    opset: int = OPSET,
    seed: int = 0,
    chunk: bool = True,
    timing_cache: str | Path | None = None,
    workspace_gib: float | None = None,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
    log: Callable[[str], None] = print,
) -> Manifest:
    """Export ``checkpoint`` into the engine directory ``out`` in ``precision`` (fp32 or fp16); raises
    ParityError when parity fails."""
    precision = engine_precision(precision).value  # "fp32" / "fp16": the key of the parity tolerances
    import_onnxruntime()
    if tensorrt:  # fail before the long part when TensorRT is missing
        from fada_rt.backends.tensorrt_backend import import_cudart, import_tensorrt

        import_tensorrt()
        import_cudart()
    model, meta = load_model(checkpoint)
    config = model.config
    specs = graph_specs(config, graphs, denoiser_batch=denoiser_batch)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    command = rebuild_command(checkpoint=str(checkpoint), out=folder, graphs=tuple(graphs) if graphs else None,
                              precision=precision, tensorrt=tensorrt, denoiser_batch=denoiser_batch)

    entries: dict[str, GraphEntry] = {}
    samples: Samples = {}
    reports: dict[str, str] = {}
    all_results: list[ParityResult] = []
    for name, spec in tqdm(specs.items(), desc="export", unit="graph"):
        entry, samples[name], results, report = _export_graph(
            model, spec, folder, precision=precision, opset=opset, seed=seed, external_data_bytes=external_data_bytes)
        entries[name] = entry
        if report:
            reports[name] = report
        worst = max(results, key=lambda r: r.rel)
        log(f"{name}: {len(results)} outputs, worst {worst.describe()}")
        all_results += results
    check(all_results, what=f"ONNX parity (onnxruntime CPU vs torch fp32) of {folder}")

    chunk_record = None
    if chunk and set(default_graphs(config)) <= set(specs):
        exported = OnnxRuntimeBackend.from_files(config, {n: (folder / entries[n].onnx, specs[n]) for n in specs})
        results = chunk_parity(exported, TorchBackend(model), role=meta["role"], precision=precision, seed=seed)
        for r in results:
            log(r.describe())
        check(results, what=f"chunk parity (onnxruntime CPU vs torch fp32) of {folder}")
        chunk_record = {r.name: r.to_dict() for r in results}

    trt_entry = None
    if tensorrt:
        from fada_rt.export.tensorrt_build import build_tensorrt

        trt_entry = build_tensorrt(
            out=folder, specs=specs, entries=entries, samples=samples, model=model, role=meta["role"],
            precision=precision, seed=seed, chunk=chunk, timing_cache=timing_cache, workspace_gib=workspace_gib,
            rebuild=command, log=log,
        )

    manifest = Manifest(
        checkpoint=str(checkpoint), role=meta["role"], model=config.to_dict(), precision=precision, opset=opset,
        graphs=entries, exported_graphs=tuple(graphs) if graphs else None, denoiser_batch=denoiser_batch,
        chunk_parity=chunk_record, tensorrt=trt_entry, info=_info(reports),
    )
    write_manifest(manifest, folder)
    log(f"wrote {folder / MANIFEST_NAME}")
    return manifest


def _export_graph(model: FadaModel, spec: GraphSpec, folder: Path, *, precision: str, opset: int, seed: int,
                  external_data_bytes: int) -> tuple[GraphEntry, Any, list[ParityResult], str | None]:
    """Trace, (fp16-rewrite,) save and parity-check one graph; returns its manifest entry, its sample
    inputs with torch's outputs, the parity results and the fp16 rewrite's summary."""
    name = spec.name
    module = graph_module(model, spec)
    inputs = sample_inputs(model, spec, seed=seed)
    with torch.no_grad():
        expected = module(*inputs)
    fp32 = trace_to_onnx(module, spec, inputs, opset=opset)
    results: list[ParityResult] = []
    report = None
    if precision == "fp16":
        fp16, rewrite = convert_to_fp16(fp32)
        report = rewrite.summary()
        with tempfile.TemporaryDirectory(prefix="fada-export-") as tmp:  # the trace itself must match first
            save_onnx(fp32, Path(tmp) / f"{name}.onnx", external_data_bytes=external_data_bytes)
            results += _ort_parity(Path(tmp) / f"{name}.onnx", spec, model, inputs, expected, seed=seed,
                                   precision="fp32", label=f"{name} (fp32 trace)")
        del fp32
        files = save_onnx(fp16, folder / f"{name}.onnx", external_data_bytes=external_data_bytes)
        del fp16
    else:
        files = save_onnx(fp32, folder / f"{name}.onnx", external_data_bytes=external_data_bytes)
        del fp32
    results += _ort_parity(folder / files[0], spec, model, inputs, expected, seed=seed, precision=precision,
                           label=name)
    entry = GraphEntry(spec, files[0], {f: sha256_file(folder / f) for f in files}, {r.name: r.to_dict() for r in results})
    return entry, (inputs, expected), results, report


def _ort_parity(path: Path, spec: GraphSpec, model: FadaModel, inputs: tuple[Tensor, ...],
                expected: tuple[Tensor, ...], *, seed: int, precision: str, label: str) -> list[ParityResult]:
    """Run ``path`` with onnxruntime on the sample inputs (and wav2vec2 on a second length) vs torch."""
    runner = OrtRunner(open_session(path), spec)
    tol = GRAPH_TOLERANCE[precision]
    cases = [(inputs, expected, "")]
    if not spec.is_static:  # a dynamic graph must also hold at another length than it was traced at
        other = sample_inputs(model, spec, seed=seed + 1, samples=spec.dynamic[0].opt // 2 + 321)
        with torch.no_grad():
            cases.append((other, graph_module(model, spec)(*other), f" @{other[0].shape[1]}"))
    results = []
    for ins, exp, suffix in cases:
        outs = runner(dict(zip(spec.input_names, ins)))
        results += [compare(f"{label}/{o}{suffix}", outs[o], e, tolerance=tol) for o, e in zip(spec.output_names, exp)]
    return results


def _info(reports: dict[str, str]) -> dict[str, Any]:
    ort = import_onnxruntime()
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "fp16_rewrite": reports,
    }
