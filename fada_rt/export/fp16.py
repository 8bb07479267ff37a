"""fp16 ONNX with fp32 islands, for TensorRT's strongly typed networks (docs/design.md §5).

TensorRT 11 builds strongly typed networks only: every tensor's type comes from the ONNX graph, so
the fp16 engine is an fp16 ONNX. This module rewrites an fp32 graph node by node:

* every node computes in fp16, with fp16 weights, EXCEPT these fp32 islands:
  - norm statistics: the fused normalisation ops (LayerNormalization, InstanceNormalization — what
    torch exports GroupNorm as —, GroupNormalization, BatchNormalization) and the ops of decomposed
    statistics chains (ReduceMean, ReduceSumSquare, ReduceL2, Pow, Sqrt) (``KEEP_FP32_OPS``);
  - softmax inputs: Softmax (and LogSoftmax) read their logits in fp32 — the QK^T product leaves
    its fp16 MatMul and is cast up before the softmax; the probabilities are cast back to fp16;
  - the time embedding: every node whose float inputs derive only from the ``timestep``/``cfg``
    graph inputs and constants (the sinusoidal projection, the time-embedding MLP, the resnets'
    time projections, the CFG scale embedding and tokens) — found by data flow, not by names;
  - ops without fp16 kernels (``NO_FP16_OPS``), and nodes without float inputs (shape arithmetic);
* Casts are inserted where a tensor crosses between fp16 and fp32 nodes; a constant that crosses is
  converted once instead. Weights beyond fp16's range are clamped to +-65504 and counted.
* graph inputs and outputs keep their fp32/bool types: the runtime feeds fp32 at every precision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fada_rt.backends.graphs import CONDITION_INPUTS

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
KEEP_FP32_OPS = frozenset({
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "BatchNormalization",
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSumSquare", "ReduceL2", "Pow", "Sqrt",
})
NO_FP16_OPS = frozenset({"Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign"})
#: Inputs that stay float32 whatever the node's precision (their type is fixed by the op).
FP32_INPUT_SLOTS = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
FP16_MAX = 65504.0


@dataclass
class Fp16Report:
    fp16_nodes: int = 0
    fp32_nodes: Counter = field(default_factory=Counter)  # reason -> count
    casts: int = 0
    converted_constants: int = 0
    clamped_values: int = 0

    def summary(self) -> str:
        kept = ", ".join(f"{n} {reason}" for reason, n in sorted(self.fp32_nodes.items()))
        return (f"{self.fp16_nodes} nodes in fp16; fp32 islands: {kept}; {self.casts} casts inserted; "
                f"{self.converted_constants} constants converted; {self.clamped_values} weights clamped to fp16 range")


def infer_types(model: onnx.ModelProto, *, strict: bool = False) -> dict[str, int]:
    """Element type of every value in ``model.graph`` (graphs over 2 GB too: big weights are set aside)."""
    aside = {}
    for t in model.graph.initializer:
        if len(t.raw_data) > 4096:
            aside[t.name] = t.raw_data
            t.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=strict)
    finally:
        for t in model.graph.initializer:
            if t.name in aside:
                t.raw_data = aside[t.name]
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def condition_island(graph: onnx.GraphProto, types: dict[str, int], condition_inputs: tuple[str, ...]) -> set[int]:
    """Indices of nodes whose float inputs come only from the condition inputs and constants."""
    const = {t.name for t in graph.initializer}
    tainted = {i.name for i in graph.input if i.name in condition_inputs}
    nodes = set()
    for idx, node in enumerate(graph.node):
        ins = [x for x in node.input if x]
        if all(x in const for x in ins):
            const.update(node.output)
            continue
        floats = [x for x in ins if types.get(x) in (F32, F16)]
        if any(x in tainted for x in ins) and all(x in tainted or x in const for x in floats):
            nodes.add(idx)
            tainted.update(node.output)
    return nodes


def convert_to_fp16(
    model: onnx.ModelProto,
    *,
    condition_inputs: tuple[str, ...] = CONDITION_INPUTS,
    keep_ops: frozenset[str] = KEEP_FP32_OPS,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A new model: ``model`` in fp16 with the fp32 islands described in the module docstring."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"node {node.name} ({node.op_type}) has subgraphs; the fp16 rewrite handles flat graphs only")
    types = infer_types(out)
    island = condition_island(g, types, condition_inputs)
    report = Fp16Report()
    rewriter = _Rewriter(g, types, report)
    for idx, node in enumerate(list(g.node)):
        reason = _fp32_reason(node, idx, island, keep_ops, types)
        if reason:
            report.fp32_nodes[reason] += 1
        elif node.op_type != "Constant":
            report.fp16_nodes += 1
        rewriter.rewrite(node, fp16=reason is None)
    rewriter.finish()
    infer_types(out, strict=True)  # the rewritten graph must type-check
    return out, report


def _fp32_reason(node: onnx.NodeProto, idx: int, island: set[int], keep_ops: frozenset[str],
                 types: dict[str, int]) -> str | None:
    if node.op_type == "Constant":
        return None  # constants are converted where they are consumed
    if node.op_type in keep_ops:
        return node.op_type
    if idx in island:
        return "time embedding"
    if node.op_type in NO_FP16_OPS:
        return "no fp16 kernel"
    if not any(types.get(x) in (F32, F16) for x in node.input if x):
        return "no float input"
    return None


class _Rewriter:
    def __init__(self, graph: onnx.GraphProto, types: dict[str, int], report: Fp16Report) -> None:
        self.g, self.types, self.report = graph, types, report
        self.cur = {i.name: i.type.tensor_type.elem_type for i in graph.input}
        self.cur.update({t.name: t.data_type for t in graph.initializer})
        self.constants = {t.name: t for t in graph.initializer}
        self.converted: dict[tuple[str, int], str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[TensorProto] = []

    def rewrite(self, node: onnx.NodeProto, *, fp16: bool) -> None:
        if node.op_type == "Constant":
            attr = node.attribute[0]
            if attr.type == onnx.AttributeProto.TENSOR:
                self.constants[node.output[0]] = attr.t
            self.cur[node.output[0]] = self.types[node.output[0]]
            self.nodes.append(node)
            return
        slots = FP32_INPUT_SLOTS.get(node.op_type, frozenset())
        for i, x in enumerate(node.input):
            if not x:
                continue
            if x not in self.cur:
                raise ValueError(f"node {node.name} reads {x!r} before it is produced: the graph is not sorted")
            have = self.cur[x]
            if have in (F32, F16):
                want = F16 if fp16 and i not in slots else F32
                if have != want:
                    node.input[i] = self._convert(x, want)
        if fp16:
            for a in node.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == F32:
                    a.i = F16
                if node.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == F32:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        for o in node.output:
            if o:
                self.cur[o] = F16 if fp16 and self.types.get(o) == F32 else self.types.get(o, 0)
        self.nodes.append(node)

    def _convert(self, name: str, to: int) -> str:
        key = (name, to)
        if key in self.converted:
            return self.converted[key]
        new = f"{name}__{'fp16' if to == F16 else 'fp32'}"
        src = self.constants.get(name)
        if src is not None:
            arr = numpy_helper.to_array(src)
            if to == F16:
                outside = np.abs(arr) > FP16_MAX
                self.report.clamped_values += int(np.count_nonzero(outside & np.isfinite(arr)))
                arr = np.where(outside & np.isfinite(arr), np.sign(arr) * FP16_MAX, arr)
            self.new_inits.append(numpy_helper.from_array(arr.astype(np.float16 if to == F16 else np.float32), new))
            self.report.converted_constants += 1
        else:
            self.nodes.append(helper.make_node("Cast", [name], [new], to=to, name=f"{new}/Cast"))
            self.report.casts += 1
        self.cur[new] = to
        self.converted[key] = new
        return new

    def finish(self) -> None:
        g = self.g
        renames = {}
        for o in g.output:
            want = o.type.tensor_type.elem_type
            if self.cur.get(o.name) != want:  # an fp16 result: cast back under the output's own name
                renames[o.name] = f"{o.name}__fp16"
        for node in self.nodes:
            for i, x in enumerate(node.input):
                node.input[i] = renames.get(x, x)
            for i, x in enumerate(node.output):
                node.output[i] = renames.get(x, x)
        for name, inner in renames.items():
            self.nodes.append(helper.make_node("Cast", [inner], [name], to=F32, name=f"{name}/CastOutput"))
            self.report.casts += 1
        used = {x for n in self.nodes for x in n.input} | {o.name for o in g.output}
        nodes = [n for n in self.nodes if n.op_type != "Constant" or n.output[0] in used]
        del g.node[:]
        g.node.extend(nodes)
        for i in reversed(range(len(g.initializer))):  # in place: no copy of (possibly GBs of) weights
            if g.initializer[i].name not in used:
                del g.initializer[i]
        g.initializer.extend(t for t in self.new_inits if t.name in used)
        del g.value_info[:]
