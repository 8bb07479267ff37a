"""One interface over every way of running the networks (docs/design.md §4).

The pipeline and the samplers talk to a :class:`Backend`; whether torch, an onnxruntime session
set or TensorRT engines run underneath is the backend's business. Each method is one network (or
one exported graph) at the rate it runs:

==================  =======================================  ==============
method              shapes                                   runs
==================  =======================================  ==============
encode              (N, 3, H, W) [-1, 1] -> (N, C, h, w)     once per avatar
reference           (B, C, h, w) -> ReferenceCache           once per avatar
audio_features      (B, S) 16 kHz -> (B, T, 2w+1, L, D)      per audio block
audio_tokens        (B, T, 2w+1, L, D) -> (B, T, N, D)       per chunk
motion_features     (B, M, C, h, w) -> per layer (B, M, HW, C) per chunk
bind(...)           -> fada_rt.sampling Denoiser             per chunk
decode              (N, C, h, w) -> (N, 3, H, W) [-1, 1]     per chunk (decode_async: beside the next one)
==================  =======================================  ==============

A backend with ``chunk_graph`` (the torch backend's option) also has ``sample_chunk``: ``bind``, the sampler and
``decode`` of one chunk as one program.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from fada_rt.backends.options import follow_torch_threads
from fada_rt.config import ModelConfig
from fada_rt.models.fada import ChunkConditions, ReferenceCache


class BackendUnavailable(RuntimeError):
    """A backend whose libraries or artifacts are missing; the message names what to install/build."""


class Backend(ABC):
    name: str = "abstract"
    #: the denoiser runs exactly ``config.num_frames`` frames per clip (exported graphs), not any count
    static_frames: bool = False
    #: the backend runs a whole chunk as one program (``sample_chunk``), not bind + sampler + decode
    chunk_graph: bool = False

    def __init__(self, config: ModelConfig, *, device: torch.device, dtype: torch.dtype,
                 role: str | None = None) -> None:
        """``role``: "teacher" or "student" as the checkpoint / engine manifest says (None: unknown)."""
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.role = role
        self._decoder_thread: ThreadPoolExecutor | None = None

    @property
    def cfg_conditioned(self) -> bool:
        """True for a CFG-distilled student (one branch per step, scales as input)."""
        return self.config.cfg.conditioned

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor: ...

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor: ...

    @abstractmethod
    def audio_features(self, wave: Tensor) -> Tensor: ...

    @abstractmethod
    def audio_tokens(self, windows: Tensor) -> Tensor: ...

    @abstractmethod
    def reference(self, ref_latent: Tensor) -> ReferenceCache: ...

    @abstractmethod
    def motion_features(self, motion_latents: Tensor) -> list[Tensor]: ...

    @abstractmethod
    def bind(self, conditions: ChunkConditions):
        """A ``fada_rt.sampling.Denoiser`` for one chunk."""

    def decode_async(self, latents: Tensor) -> Callable[[], Tensor]:
        """:meth:`decode` beside the caller's next work: a function that returns the images once they are made. Here
        in a worker thread (the networks release the GIL); the torch backend on CUDA uses a second stream."""
        if self._decoder_thread is None:
            self._decoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-decode",
                                                      initializer=follow_torch_threads)
        return self._decoder_thread.submit(self.decode, latents).result

    def conditions(self, reference: ReferenceCache, motion_latents: Tensor, windows: Tensor) -> ChunkConditions:
        return ChunkConditions(reference, self.motion_features(motion_latents), self.audio_tokens(windows))
