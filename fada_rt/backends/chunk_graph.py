"""A whole chunk as one compiled graph: every sampler step, its PeRFlow/DDIM update and the decode (torch backend,
``--chunk-graph``; docs/design.md §4).

Compiling only the denoiser leaves a chunk as 6 graph calls (the fast student) with Python, the sampler's updates
and the decode between them. :class:`ChunkProgram` hands ``torch.compile`` one function of the chunk's tensors
instead: the start latents and the conditions in, the clean latents and the decoded frames out. It is compiled
with ``fullgraph=True``, so a graph break is an error rather than a silent split, once per sampler and shape
(static shapes). The network is a nested compile region (``torch.compiler.nested_compile_region``): compiled once
and stamped out for every step, so a 6-step chunk compiles about as fast as one network call. With CUDA graphs (``mode="reduce-overhead"``, torch's CUDA-graph trees) the chunk replays as
ONE CUDA graph: the conditions are copied into its static inputs once per chunk, not once per step.

Rolling samplers (``--sampler stream``) make no chunks: their calls go through ``Backend.bind`` as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fada_rt.models.fada import BranchedDenoiser, ChunkConditions, ReferenceCache

if TYPE_CHECKING:
    from fada_rt.sampling.samplers import SamplerSpec


class CastingDenoiser(BranchedDenoiser):
    """BranchedDenoiser without autograd; fp32 sampler state in, fp32 eps out, network in ``dtype``.

    ``no_grad`` is a ``with`` inside the call, not a decorator, so ``torch.compile`` traces it whole."""

    def __init__(self, denoiser: Callable[..., Tensor], conditions: ChunkConditions, *, cfg_conditioned: bool,
                 dtype: torch.dtype) -> None:
        self.denoiser = denoiser
        self.conditions = conditions
        self.cfg_conditioned = cfg_conditioned
        self.dtype = dtype

    def __call__(self, z: Tensor, timestep: Tensor, *, branches: tuple[str, ...] | list[str],
                 cfg: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            cfg = cfg.to(self.dtype) if cfg is not None else None
            eps = super().__call__(z.to(self.dtype), timestep.float(), branches=branches, cfg=cfg)
            return eps.float()  # (len(branches), B, F, C, h, w)


def _call(module: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def network(*args: object, **kwargs: object) -> Tensor:
        return module(*args, **kwargs)

    return network


class ChunkProgram:
    """``sampler.run`` + decode of one chunk, compiled as one graph per sampler (and shape).

    ``denoiser``: the network (the model's DenoisingUNet, uncompiled: the whole program is compiled);
    ``decode``: scaled latents (N, C, h, w) -> images in [-1, 1]; ``mode``: ``torch.compile``'s (None, or
    "reduce-overhead" for a CUDA graph per chunk); ``backend``: ``torch.compile``'s ("inductor"; the tests use
    "aot_eager", which traces the same graph without generating kernels)."""

    def __init__(self, *, denoiser: Callable[..., Tensor], decode: Callable[[Tensor], Tensor], cfg_conditioned: bool,
                 dtype: torch.dtype, mode: str | None = None, backend: str = "inductor") -> None:
        region = getattr(torch.compiler, "nested_compile_region", None)
        if region is None:
            raise RuntimeError(f"chunk_graph needs torch.compiler.nested_compile_region (torch >= 2.8), this is torch "
                               f"{torch.__version__}: upgrade torch or drop --chunk-graph")
        self.denoiser = region(_call(denoiser))  # one compiled network reused by every step
        self.decode = decode
        self.cfg_conditioned, self.dtype = cfg_conditioned, dtype
        self.mode, self.backend = mode, backend
        self.graphs = mode == "reduce-overhead"
        self._programs: dict[SamplerSpec, Callable[..., tuple[Tensor, Tensor]]] = {}

    def __call__(self, sampler: SamplerSpec, conditions: ChunkConditions, start: Tensor, *,
                 frames: int) -> tuple[Tensor, Tensor]:
        """``start`` (1, F, C, h, w) at t = 1 -> clean latents (1, F, C, h, w) fp32 and the first ``frames`` decoded
        (frames, 3, H, W) fp32 in [-1, 1]. A CUDA-graph program's outputs are its static buffers, so they are
        copied before the next chunk overwrites them."""
        program = self._programs.get(sampler)
        if program is None:
            program = torch.compile(self._program(sampler), fullgraph=True, dynamic=False, mode=self.mode,
                                    backend=self.backend)
            self._programs[sampler] = program
        ref = conditions.reference
        with torch.no_grad():
            z0, images = program(start, conditions.audio_tokens, list(ref.keys), list(ref.values),
                                 list(conditions.motion))
        images = images[:frames]
        if self.graphs:
            z0, images = z0.clone(), images.clone()
        return z0, images

    def _program(self, sampler: SamplerSpec) -> Callable[..., tuple[Tensor, Tensor]]:
        def chunk(start: Tensor, audio_tokens: Tensor, keys: list[Tensor], values: list[Tensor],
                  motion: list[Tensor]) -> tuple[Tensor, Tensor]:
            conditions = ChunkConditions(ReferenceCache(keys, values), motion, audio_tokens)
            denoiser = CastingDenoiser(self.denoiser, conditions, cfg_conditioned=self.cfg_conditioned,
                                       dtype=self.dtype)
            z0 = sampler.run(denoiser=denoiser, noise=start).z0.float()  # (1, F, C, h, w)
            return z0, self.decode(z0[0].to(self.dtype)).float()  # (F, 3, H, W)

        return chunk
