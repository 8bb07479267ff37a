"""How a model is loaded: one frozen :class:`LoadOptions` (docs/design.md §4).

A command line builds it once from its flags (:func:`add_load_options` + :func:`load_options_from_args`),
an embedding app builds it with keywords; it then travels unchanged through
:meth:`AvatarPipeline.load <fada_rt.pipeline.AvatarPipeline.load>` to :func:`~fada_rt.backends.create_backend`,
the one place that turns it into a backend. Combinations that can never work (``compile`` on prebuilt
engines, a ``dtype`` for engines whose precision was fixed at export, ...) are refused when the value is made.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fada_rt.precision import PRECISIONS, Precision

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def default_threads() -> int:
    """CPU threads for the model in a running call: half the cores (at least 1, at most 8). The other half is
    for the threads beside it (pacing, paste, encoding, the caller's audio): on 2 cores, 2 model threads
    made the streaming API 25 % slower than 1, and more under load (docs/calls.md)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def follow_torch_threads() -> None:
    """Run the calling thread's OpenMP work on torch's thread count (:func:`torch.get_num_threads`).

    ``torch.set_num_threads`` reaches OpenMP only in the thread that calls it; a thread started later gets
    ``OMP_NUM_THREADS``, or every core when it is unset (docs/experiments/2026-12-05-soak.md). Called first in
    every thread that runs the networks.
    """
    torch.set_num_threads(torch.get_num_threads())


@dataclass(frozen=True)
class LoadOptions:
    """Which backend runs the networks, from which artifacts, on which device and how.

    ``backend``: ``torch`` reads ``checkpoint`` (a checkpoint folder; None lets
    :meth:`AvatarPipeline.load <fada_rt.pipeline.AvatarPipeline.load>` pick the shipped tiny checkpoint of
    its sampler); ``onnxruntime`` / ``tensorrt`` read the exported engines in ``engine_dir``.
    ``dtype``: the torch backend's precision (a :class:`~fada_rt.precision.Precision` or its name:
    fp32, fp16, bf16, float16, ...; None is fp32); engines have the precision they were exported with.
    ``compile``: torch.compile of every network on the hot path (torch). ``chunk_graph``: a chunk sampler's whole
    chunk, every step and the decode, compiled as one graph (torch; :mod:`fada_rt.backends.chunk_graph`).
    ``cuda_graphs``: replay the denoiser as CUDA graphs, with ``chunk_graph`` one per chunk (torch on CUDA,
    tensorrt; None: the backend's default, off for torch, on for tensorrt).
    ``threads``: CPU threads for torch (and onnxruntime's intra-op threads); None: the libraries' choice, or in a
    running call :func:`default_threads` (:meth:`for_a_call`).
    ``preset``: when given, the checkpoint's or engines' preset must be this one.
    ``decoder``: what turns latents into frames (torch): ``vae``, the model's VAE decoder; ``tiny``, the shipped tiny
    decoder distilled from it (tiny preset, ``fada_rt/assets/tiny-decoder``); or the folder of one made by
    ``python -m train.tiny_decoder``.
    """

    backend: str = "torch"
    checkpoint: str | Path | None = None
    engine_dir: str | Path | None = None
    device: str = "cpu"
    dtype: Precision | None = None
    compile: bool = False
    chunk_graph: bool = False
    cuda_graphs: bool | None = None
    threads: int | None = None
    preset: str | None = None
    decoder: str | Path = "vae"

    def __post_init__(self) -> None:
        kind = self.backend
        if not str(self.decoder):
            raise ValueError("decoder must be 'vae', 'tiny' or a tiny decoder's folder")
        if kind not in BACKENDS:
            raise ValueError(f"unknown backend {kind!r}; choose one of {BACKENDS}")
        object.__setattr__(self, "device", str(self.device))  # a torch.device is fine too
        if self.dtype is not None:
            object.__setattr__(self, "dtype", Precision.parse(self.dtype))
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if kind == "torch":
            if self.engine_dir is not None:
                raise ValueError("engine_dir is for the onnxruntime/tensorrt backends; the torch backend reads a "
                                 "checkpoint")
            return
        if str(self.decoder) != "vae":
            raise ValueError(f"the tiny decoder runs on the torch backend; the {kind} backend's engines hold the VAE "
                             "decoder they were exported with (drop --decoder)")
        if self.checkpoint is not None:
            raise ValueError(f"the {kind} backend runs the engines in --engine-dir, not a checkpoint; drop "
                             "--checkpoint (it is for the torch backend)")
        if self.compile or self.chunk_graph:
            raise ValueError(f"compile and chunk_graph are torch-backend options; the {kind} backend runs prebuilt "
                             "graphs")
        if self.dtype is not None:
            raise ValueError(f"the {kind} backend's precision is fixed when its engines are built (fp32 or fp16, "
                             "see python -m fada_rt.export --precision); do not pass dtype")
        if kind == "onnxruntime" and self.cuda_graphs:
            raise ValueError("cuda_graphs is for the torch (CUDA) and tensorrt backends, not onnxruntime")
        if self.engine_dir is None:
            raise ValueError(f"the {kind} backend needs --engine-dir (a folder of exported engines); export them "
                             "with `python -m fada_rt.export --checkpoint CHECKPOINT_DIR --out ENGINE_DIR`")

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch backend's network dtype (float32 when ``dtype`` is None)."""
        return Precision.parse(self.dtype).dtype

    def replace(self, **changes: Any) -> LoadOptions:
        return dataclasses.replace(self, **changes)

    def for_a_call(self) -> LoadOptions:
        """These options for a running call (:class:`~fada_rt.api.StreamingAvatar`, ``fada_rt.live``,
        ``fada_rt.serve``): on the CPU without ``threads``, :func:`default_threads`."""
        return self.replace(threads=default_threads()) if self.threads is None and self.device == "cpu" else self


# ---- command lines -------------------------------------------------------------------------------


def precision_arg(value: str) -> Precision:
    """argparse ``type=`` for a precision name: fp32/fp16/bf16, or torch's float32/float16/bfloat16."""
    try:
        return Precision.parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_load_options(parser: argparse.ArgumentParser, *, checkpoint_help: str | None = None) -> None:
    """The model-loading flags every command line shares; read them back with :func:`load_options_from_args`."""
    g = parser.add_argument_group("model loading")
    g.add_argument("--backend", choices=BACKENDS, default=LoadOptions.backend,
                   help="which runtime runs the networks (default: %(default)s)")
    g.add_argument("--checkpoint", default=None,
                   help=checkpoint_help or "checkpoint folder (config.json + model.safetensors; torch backend)")
    g.add_argument("--engine-dir", default=None,
                   help="folder of engines exported by python -m fada_rt.export (onnxruntime/tensorrt backends)")
    g.add_argument("--device", default=LoadOptions.device, help="device, e.g. cpu, cuda, cuda:1 (default: %(default)s)")
    g.add_argument("--dtype", type=precision_arg, choices=PRECISIONS, default=None, metavar="{" + ",".join(PRECISIONS) + "}",
                   help=f"torch backend precision (default: {Precision.parse(None)}; half precision keeps norms and "
                        "the audio front-end in fp32; engines keep the precision they were exported with)")
    g.add_argument("--compile", action="store_true", help="torch backend: torch.compile every network on the hot path "
                   "(denoiser, decoder, audio front-end and tokens, motion features)")
    g.add_argument("--chunk-graph", action="store_true", help="torch backend: compile a chunk sampler's whole chunk "
                   "(every step and the decode) as one graph; with --cuda-graphs one CUDA graph per chunk")
    g.add_argument("--cuda-graphs", action="store_true", help="torch backend on CUDA: replay the denoiser as CUDA "
                   "graphs (the tensorrt backend uses them anyway)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime (default: the "
                   "libraries' choice; live and serve: half the cores)")
    g.add_argument("--preset", default=None, help="expected preset of the checkpoint/engines (checked if given)")
    g.add_argument("--decoder", default=LoadOptions.decoder, metavar="vae|tiny|DIR",
                   help="latents to frames (torch backend): the model's VAE decoder, the shipped tiny decoder distilled "
                        "from it, or a folder made by python -m train.tiny_decoder (default: %(default)s)")


def load_options_from_args(args: argparse.Namespace) -> LoadOptions:
    """The :class:`LoadOptions` of flags added by :func:`add_load_options` (a ValueError names a bad combination)."""
    return LoadOptions(backend=args.backend, checkpoint=args.checkpoint, engine_dir=args.engine_dir,
                       device=args.device, dtype=args.dtype, compile=args.compile, chunk_graph=args.chunk_graph,
                       cuda_graphs=True if args.cuda_graphs else None, threads=args.threads, preset=args.preset,
                       decoder=args.decoder)
