"""``python -m fada_rt.export``: a checkpoint folder -> an engine directory (docs/design.md §5).

Example::

    python -m fada_rt.export --checkpoint runs/student --out engines/tiny-fast
    python -m fada_rt.export --checkpoint runs/student --out engines/sd15-fast --precision fp16 --tensorrt

Exits with status 1 and the failing outputs (and by how much) when a parity check fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.graphs import GRAPH_NAMES, OPSET
from fada_rt.backends.manifest import ENGINE_PRECISIONS, engine_precision
from fada_rt.checkpoint import CheckpointError
from fada_rt.precision import Precision


def precision_arg(value: str) -> Precision:
    """argparse ``type=`` of --precision: fp32 or fp16 (float32/float16 too); bf16 is a clear error."""
    try:
        return engine_precision(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fada_rt.export", description="Export a checkpoint folder into an engine directory (docs/design.md §5).",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="engine directory to write, e.g. engines/NAME")
    p.add_argument("--graphs", nargs="+", choices=GRAPH_NAMES, default=None, metavar="GRAPH",
                   help=f"graphs to export, of {', '.join(GRAPH_NAMES)} (default: all the preset needs; "
                        "wav2vec2 only for wav2vec2 presets)")
    p.add_argument("--precision", type=precision_arg, choices=ENGINE_PRECISIONS, default=Precision.FP32,
                   metavar="{" + ",".join(ENGINE_PRECISIONS) + "}",
                   help="fp32, or fp16 with fp32 islands (norm statistics, softmax inputs, time embedding); "
                        "default: %(default)s")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build TensorRT plans on this GPU (needs pip install -e '.[trt]')")
    p.add_argument("--denoiser-batch", type=int, default=None,
                   help="static rows of the denoiser graph (default: 1 for a CFG-distilled student, else 3)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (>= 17; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample inputs used for tracing and parity (default: %(default)s)")
    p.add_argument("--no-chunk-parity", action="store_true",
                   help="skip the whole-chunk parity check (slow on CPU at sd15 scale); recorded in the manifest")
    p.add_argument("--timing-cache", default=None,
                   help="TensorRT timing cache file (default: OUT/../timing-caches/<TensorRT version and GPU>.cache)")
    p.add_argument("--workspace-gib", type=float, default=None, help="TensorRT builder workspace limit in GiB")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # onnx and onnxruntime (the [export] extra) only once there is work to do: --help needs neither
        from fada_rt.export.engines import export_engines
        from fada_rt.export.parity import ParityError
    except ImportError as err:
        print(f"export needs the [export] extra ({err.name} is missing): pip install 'fada-rt[export]'",
              file=sys.stderr)
        return 1
    try:
        export_engines(
            checkpoint=args.checkpoint, out=args.out, graphs=args.graphs, precision=args.precision,
            tensorrt=args.tensorrt, denoiser_batch=args.denoiser_batch, opset=args.opset, seed=args.seed,
            chunk=not args.no_chunk_parity, timing_cache=args.timing_cache, workspace_gib=args.workspace_gib,
        )
    except (ParityError, CheckpointError, BackendUnavailable, ValueError) as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
