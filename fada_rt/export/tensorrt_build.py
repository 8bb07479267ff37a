"""TensorRT plans from the exported ONNX graphs (docs/design.md §5), and their parity.

Strongly typed networks only (TensorRT 11 has nothing else; on TensorRT 10 the STRONGLY_TYPED
creation flag is set): the precision of every layer is the ONNX graph's, so an fp16 engine comes
from the fp16 ONNX with its fp32 islands, never from a builder flag. TF32 is cleared so that fp32
layers really are fp32. Shapes are static except the dimensions a spec declares dynamic, which get
one optimisation profile. A timing cache, keyed by TensorRT version and GPU
(:func:`~fada_rt.backends.manifest.timing_cache_name`), is read before and written after every
build, so rebuilding after a re-export reuses the kernel timings.

Only :func:`build_plan`'s TensorRT calls and :func:`build_tensorrt` need real TensorRT; the spec
checks (:func:`check_network_io`, :func:`profile_shapes`) are plain Python over duck-typed objects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fada_rt.backends.graph_backend import run_rows
from fada_rt.backends.graphs import GraphSpec, default_graphs
from fada_rt.backends.manifest import GraphEntry, PlanEntry, TensorRTEntry, sha256_file, timing_cache_name
from fada_rt.backends.tensorrt_backend import (
    TensorRTBackend,
    gpu_info,
    import_cudart,
    import_tensorrt,
    load_runners,
)
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.export.parity import GRAPH_TOLERANCE, ParityResult, check, chunk_parity, compare
from fada_rt.models.fada import FadaModel


def profile_shapes(spec: GraphSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input, dynamic dims from the spec's profile."""
    dims = {d.name: (d.min, d.opt, d.max) for d in spec.dynamic}
    return {
        t.name: tuple(tuple(dims[d][k] if isinstance(d, str) else d for d in t.shape) for k in range(3))  # type: ignore[misc]
        for t in spec.inputs
    }


def check_network_io(network: Any, spec: GraphSpec, *, trt: Any) -> None:
    """The parsed network's inputs/outputs have the spec's names, shapes (-1 = dynamic) and dtypes."""
    dtypes = {"float32": trt.DataType.FLOAT, "bool": trt.DataType.BOOL}
    have_in = [network.get_input(i) for i in range(network.num_inputs)]
    have_out = [network.get_output(i) for i in range(network.num_outputs)]
    problems = []
    for kind, have, want in (("inputs", have_in, spec.inputs), ("outputs", have_out, spec.outputs)):
        if [t.name for t in have] != [t.name for t in want]:
            problems.append(f"{kind} {[t.name for t in have]} != spec {[t.name for t in want]}")
            continue
        for tensor, t in zip(have, want):
            shape = tuple(tensor.shape)
            expected = tuple(-1 if isinstance(d, str) else d for d in t.shape)
            if shape != expected or tensor.dtype != dtypes[t.dtype]:
                problems.append(f"{t.name}: network {tensor.dtype} {shape}, spec {t.dtype} {expected}")
    if problems:
        raise ValueError(f"TensorRT parsed graph {spec.name!r} differently from its spec: {'; '.join(problems)}")


def build_plan(*, trt: Any, onnx_path: Path, plan_path: Path, spec: GraphSpec, timing_cache: Path,
               workspace_bytes: int | None = None) -> None:
    """Parse ``onnx_path`` into a strongly typed network and serialise its engine to ``plan_path``."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # TensorRT 10; always on (deprecated) in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external data next to the file
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    check_network_io(network, spec, trt=trt)
    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if not spec.is_static:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes(spec).items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path.write_bytes(memoryview(serialized))
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))


@contextlib.contextmanager
def _exact_fp32() -> Iterator[None]:
    """torch's CUDA reference without TF32 (cuDNN convolutions default to it)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def build_tensorrt(
    *, out: Path, specs: dict[str, GraphSpec], entries: dict[str, GraphEntry], samples: dict[str, Any],
    model: FadaModel, role: str, precision: str, seed: int, chunk: bool, timing_cache: str | Path | None,
    workspace_gib: float | None, rebuild: str, log: Callable[[str], None],
) -> TensorRTEntry:
    """Build a plan per graph on this GPU, check parity against torch fp32, return the manifest entry."""
    trt, cudart = import_tensorrt(), import_cudart()
    if not torch.cuda.is_available():
        raise RuntimeError("--tensorrt needs a CUDA GPU; torch.cuda.is_available() is False")
    device = torch.device("cuda", torch.cuda.current_device())
    gpu = gpu_info(device.index)
    cache = Path(timing_cache) if timing_cache else out.parent / "timing-caches" / timing_cache_name(trt.__version__, gpu)
    workspace = int(workspace_gib * 2**30) if workspace_gib else None
    plans = {}
    for name, spec in tqdm(specs.items(), desc="tensorrt", unit="plan"):
        plans[name] = out / f"{name}.plan"
        build_plan(trt=trt, onnx_path=out / entries[name].onnx, plan_path=plans[name], spec=spec, timing_cache=cache,
                   workspace_bytes=workspace)
    runners = load_runners(trt, cudart, plans, specs, device=device, cuda_graphs=False, rebuild=rebuild)
    tol = GRAPH_TOLERANCE[precision]
    per_plan: dict[str, list[ParityResult]] = {}
    for name, runner in runners.items():
        inputs, expected = samples[name]
        outs = run_rows(runner, {k: v.to(device) for k, v in zip(specs[name].input_names, inputs)})
        per_plan[name] = [compare(f"{name}/{o} (TensorRT)", outs[o], e, tolerance=tol)
                          for o, e in zip(specs[name].output_names, expected)]
        worst = max(per_plan[name], key=lambda r: r.rel)
        log(f"{name} (TensorRT): worst {worst.describe()}")
    results = [r for rs in per_plan.values() for r in rs]
    if chunk and set(default_graphs(model.config)) <= set(specs):
        engine = TensorRTBackend(model.config, runners, device=device)
        with _exact_fp32():
            chunk_results = chunk_parity(engine, TorchBackend(model.to(device)), role=role, precision=precision,
                                         seed=seed, label="chunk (TensorRT)")
        model.to("cpu")
        for r in chunk_results:
            log(r.describe())
        results += chunk_results
    check(results, what=f"TensorRT parity (vs torch fp32) of {out}")
    return TensorRTEntry(
        version=trt.__version__,
        gpu=gpu,
        plans={
            n: PlanEntry(plan=p.name, sha256=sha256_file(p), onnx_sha256=entries[n].onnx_sha256,
                         parity={r.name: r.to_dict() for r in per_plan[n]})
            for n, p in plans.items()
        },
        timing_cache=str(cache),
    )
