"""Tracing one graph to ONNX, checking it against its spec, and saving it (docs/design.md §5).

Export is by tracing (``torch.onnx.export(..., dynamo=False)``): the FADA layers receive their
conditions through diffusers' ``cross_attention_kwargs`` and a forward hook, which tracing follows
as plain Python; parity against torch (fada_rt/export/parity.py) is what proves it. Shapes are static
except the dimensions a spec declares dynamic. Models whose weights exceed ``EXTERNAL_DATA_BYTES``
(protobuf's 2 GB limit, with headroom) are saved with their tensors in ``NAME.onnx.data``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from fada_rt.backends.graphs import OPSET, GraphSpec

EXTERNAL_DATA_BYTES = 2**31 - 2**27  # 1.875 GiB of tensor data


def trace_to_onnx(module: nn.Module, spec: GraphSpec, inputs: tuple[Tensor, ...], *, opset: int = OPSET
                  ) -> onnx.ModelProto:
    """Trace ``module`` on ``inputs`` into an in-memory ONNX model whose I/O matches ``spec``."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    dynamic_axes = {
        t.name: {axis: d for axis, d in enumerate(t.shape) if isinstance(d, str)}
        for t in (*spec.inputs, *spec.outputs)
        if any(isinstance(d, str) for d in t.shape)
    }
    with tempfile.TemporaryDirectory(prefix=f"fada-export-{spec.name}-") as tmp:
        path = Path(tmp) / f"{spec.name}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # Static shapes are intended: Python branches on shapes are fine to freeze.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # dynamo=False is a deliberate choice (module docstring); torch warns about it on every call.
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(
                module,
                inputs,
                str(path),
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_axes=dynamic_axes or None,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(path))  # pulls external data (if torch wrote any) into memory
    _fill_output_shapes(model, spec)
    check_io(model, spec)
    return model


def _fill_output_shapes(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Where tracing could not infer an output dim (an auto-named symbol), write the spec's static value.

    Parity then checks the outputs' real shapes against torch; ORT and TensorRT see static outputs.
    """
    for v, t in zip(model.graph.output, spec.outputs):
        dims = v.type.tensor_type.shape.dim
        if len(dims) != len(t.shape):
            continue  # check_io reports it
        for d, want in zip(dims, t.shape):
            if isinstance(want, int) and d.dim_param:
                d.ClearField("dim_param")
                d.dim_value = want
            elif isinstance(want, str) and d.dim_param != want:
                d.dim_param = want


def check_io(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """The ONNX graph's inputs/outputs have the spec's names, dtypes and shapes (dynamic dims by name)."""
    elem = {"float32": onnx.TensorProto.FLOAT, "bool": onnx.TensorProto.BOOL}
    problems = []
    for kind, have, want in (("inputs", model.graph.input, spec.inputs), ("outputs", model.graph.output, spec.outputs)):
        names = [v.name for v in have]
        if names != [t.name for t in want]:
            problems.append(f"{kind} {names} != spec {[t.name for t in want]} (unused inputs are dropped by tracing)")
            continue
        for v, t in zip(have, want):
            tt = v.type.tensor_type
            dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim)
            if tt.elem_type != elem[t.dtype] or len(dims) != len(t.shape) or any(
                isinstance(w, int) and w != d for w, d in zip(t.shape, dims)
            ):
                problems.append(f"{t.name}: ONNX {onnx.TensorProto.DataType.Name(tt.elem_type)} {dims}, "
                                f"spec {t.dtype} {t.shape}")
    if problems:
        raise ValueError(f"the traced {spec.name!r} graph does not match its spec "
                         f"(fada_rt/backends/graphs.py): {'; '.join(problems)}")


def save_onnx(model: onnx.ModelProto, path: str | Path, *, external_data_bytes: int = EXTERNAL_DATA_BYTES
              ) -> list[str]:
    """Write ``model`` to ``path`` (+ ``path.data`` when its tensors exceed the limit); returns file names."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # a leftover from an earlier, larger export would be stale
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size <= external_data_bytes:
        onnx.save_model(model, str(path))
        return [path.name]
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    return [path.name, data.name]
