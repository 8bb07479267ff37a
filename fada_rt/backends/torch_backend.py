"""The torch backend: the :class:`~fada_rt.models.fada.FadaModel` itself, on CPU or CUDA (docs/design.md §4).

Options, all off by default (fp32 eager is the reference every other backend is checked against):

* ``dtype`` fp16 (or bf16; :class:`~fada_rt.backends.options.LoadOptions`) — the networks run in half precision, but every
  ``GroupNorm``/``LayerNorm`` keeps fp32 weights and computes its statistics in fp32 (inputs cast
  up, outputs cast back). The audio front-end (STFT / wav2vec2) stays fp32. The sampler's state
  stays fp32: the bound denoiser casts its inputs to the network dtype and its eps back to fp32,
  so the PeRFlow/DDIM updates do not accumulate half-precision rounding.
* ``compile=True`` — ``torch.compile`` of every network on the hot path: the denoising UNet, the decoder, the audio
  tokens, the motion features (static shapes: one chunk size per pipeline, so each compiles once; a rolling
  sampler's 1..N frames in flight compile once each) and the audio front-end (dynamic: clips and blocks differ).
* ``chunk_graph=True`` — a chunk sampler's whole chunk (every step, its updates and the decode) compiled as ONE
  graph (:mod:`fada_rt.backends.chunk_graph`); with ``cuda_graphs`` it replays as one CUDA graph per chunk.
* ``cuda_graphs=True`` (CUDA only) — every denoiser call of a chunk (one per sampler step) replays
  a captured CUDA graph: the chunk's conditions are copied into static buffers once per chunk at
  :meth:`bind`, then each step copies ``z``/``t``/``cfg`` in and replays. One graph per CFG-branch
  set and shape (a timestep per clip or per frame, a rolling sampler's frames in flight); captured lazily on
  first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from fada_rt.backends.base import Backend, BackendUnavailable
from fada_rt.backends.chunk_graph import CastingDenoiser, ChunkProgram
from fada_rt.backends.options import LoadOptions
from fada_rt.config import ModelConfig
from fada_rt.models.fada import BRANCHES, ChunkConditions, FadaModel, ReferenceCache
from fada_rt.models.tiny_decoder import TinyDecoder

if TYPE_CHECKING:
    from fada_rt.sampling.samplers import SamplerSpec

_NORMS = (nn.GroupNorm, nn.LayerNorm)


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        model: FadaModel,
        *,
        compile: bool = False,
        cuda_graphs: bool = False,
        role: str | None = None,
        decoder: TinyDecoder | None = None,
        chunk_graph: bool = False,
        compile_backend: str = "inductor",
    ) -> None:
        """Wrap an already loaded model; device and dtype are the model's (see :func:`prepare_model`). ``decoder``: a
        tiny decoder (:mod:`fada_rt.models.tiny_decoder`) instead of the VAE's, moved to the model's device/dtype.
        ``compile_backend``: ``torch.compile``'s backend for ``compile`` and ``chunk_graph`` (the tests trace with
        "aot_eager", which generates no kernels)."""
        param = next(model.denoiser.parameters())
        super().__init__(model.config, device=param.device, dtype=param.dtype, role=role)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, the model is on {self.device}")
        if self.dtype != torch.float32:  # half precision: norms and the audio front-end stay fp32
            keep_fp32_parts(model, dtype=self.dtype)
        self.model = model.eval()
        self.compiled = compile
        self.decoder = "vae" if decoder is None else "tiny"
        if decoder is not None:
            decoder = decoder.to(device=self.device, dtype=self.dtype).eval()
        self._decode = self.model.vae.decode if decoder is None else decoder.decode
        self.chunk_graph = chunk_graph
        self._chunk = None
        if chunk_graph:
            self._chunk = ChunkProgram(denoiser=self.model.denoiser, decode=self._decode,
                                       cfg_conditioned=self.cfg_conditioned, dtype=self.dtype,
                                       mode="reduce-overhead" if cuda_graphs else None, backend=compile_backend)
        self._denoise: Any = self.model.denoiser
        self._audio_features: Any = self.model.audio_features
        self._audio_tokens: Any = self.model.audio_proj
        self._motion_features: Any = self.model.motion_features
        if compile:
            def static(fn: Any) -> Any:
                return torch.compile(fn, dynamic=False, backend=compile_backend)

            self._denoise, self._decode = static(self.model.denoiser), static(self._decode)
            self._audio_tokens, self._motion_features = static(self.model.audio_proj), static(self.model.motion_features)
            self._audio_features = torch.compile(self.model.audio_features, dynamic=True, backend=compile_backend)
        self._graphs = _CudaGraphRunner(self._denoise) if cuda_graphs else None
        self._side_stream: Any = None  # decode_async's CUDA stream

    @classmethod
    def load(cls, options: LoadOptions) -> TorchBackend:
        """Load ``options.checkpoint`` (strict; ``options.preset`` checked when given) onto ``options.device`` in
        ``options.dtype``, with ``options.compile`` / ``options.cuda_graphs``."""
        from fada_rt.checkpoint import load_model

        if options.backend != "torch" or options.checkpoint is None:
            raise ValueError(f"TorchBackend.load needs torch LoadOptions with a checkpoint, got {options}")
        device = _check_device(options.device)
        model, meta = load_model(options.checkpoint, preset=options.preset, device="cpu", dtype=torch.float32)
        return cls(prepare_model(model, device=device, dtype=options.torch_dtype), compile=options.compile,
                   cuda_graphs=bool(options.cuda_graphs), role=meta["role"], chunk_graph=options.chunk_graph,
                   decoder=tiny_decoder_for(options.decoder, model.config))

    # ---- the Backend interface ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.model.vae.encode(images.to(self.device, self.dtype)).float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        return self._decode(latents.to(self.device, self.dtype)).float()

    def decode_async(self, latents: Tensor) -> Callable[[], Tensor]:
        """On CUDA the decode is queued on a second stream, after the work queued so far: the next chunk's steps,
        queued next on the main stream, run beside it. Elsewhere a worker thread (:meth:`Backend.decode_async`)."""
        if self.device.type != "cuda":
            return super().decode_async(latents)
        main = torch.cuda.current_stream(self.device)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        side = self._side_stream
        side.wait_stream(main)  # the latents are made
        with torch.cuda.stream(side), torch.no_grad():
            latents = latents.to(self.device, self.dtype)
            latents.record_stream(side)
            images = self._decode(latents).float()  # (N, 3, H, W)
        done = torch.cuda.Event()
        done.record(side)

        def result() -> Tensor:
            main.wait_event(done)
            images.record_stream(main)
            return images

        return result

    @torch.no_grad()
    def audio_features(self, wave: Tensor) -> Tensor:
        return self._audio_features(wave.to(self.device, torch.float32))

    @torch.no_grad()
    def audio_tokens(self, windows: Tensor) -> Tensor:
        return self._audio_tokens(windows.to(self.device, self.dtype))

    @torch.no_grad()
    def reference(self, ref_latent: Tensor) -> ReferenceCache:
        return self.model.reference(ref_latent.to(self.device, self.dtype))

    @torch.no_grad()
    def motion_features(self, motion_latents: Tensor) -> list[Tensor]:
        return self._motion_features(motion_latents.to(self.device, self.dtype))

    def sample_chunk(self, sampler: SamplerSpec, conditions: ChunkConditions, start: Tensor, *,
                     frames: int) -> tuple[Tensor, Tensor]:
        """One chunk from ``start`` (1, F, C, h, w) at t = 1 as one compiled program (``chunk_graph``): its clean
        latents (1, F, C, h, w) fp32 and the first ``frames`` decoded, (frames, 3, H, W) in [-1, 1]."""
        if self._chunk is None:
            raise ValueError("sample_chunk runs the chunk graph: build the backend with chunk_graph=True")
        return self._chunk(sampler, conditions, start.to(self.device), frames=frames)

    def bind(self, conditions: ChunkConditions):
        if self._graphs is not None:
            return self._graphs.bind(conditions, cfg_conditioned=self.cfg_conditioned, dtype=self.dtype)
        return CastingDenoiser(self._denoise, conditions, cfg_conditioned=self.cfg_conditioned, dtype=self.dtype)


# ---- model preparation ---------------------------------------------------------------------------


def tiny_decoder_for(decoder: str | Path, config: ModelConfig) -> TinyDecoder | None:
    """The tiny decoder ``decoder`` names for a model of ``config`` (None for "vae"): "tiny" is the shipped one of
    the tiny preset, anything else a folder of ``python -m train.tiny_decoder``; it must come from this VAE."""
    from fada_rt.assets import TINY_DECODER
    from fada_rt.checkpoint import load_tiny_decoder

    if str(decoder) == "vae":
        return None
    if str(decoder) == "tiny":
        if config.preset != "tiny":
            raise ValueError(f"no tiny decoder is shipped for preset {config.preset!r}: distil one from its VAE with "
                             "python -m train.tiny_decoder and pass --decoder FOLDER")
        decoder = TINY_DECODER
    return load_tiny_decoder(decoder, expect=config.vae)



def _check_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"device {device} was asked for but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); install a CUDA build of torch or use --device cpu"
        )
    return device


def prepare_model(model: FadaModel, *, device: str | torch.device, dtype: torch.dtype) -> FadaModel:
    """Move ``model`` to ``device``/``dtype`` for inference; half precision keeps norms and audio in fp32."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    model = model.to(device=_check_device(device)).eval()
    for child in _beside_audio(model):  # the audio front-end (STFT / wav2vec2) stays fp32, never rounded
        child.to(dtype)
    if dtype != torch.float32:
        keep_fp32_parts(model, dtype=dtype)
    return model


def keep_fp32_parts(model: FadaModel, *, dtype: torch.dtype) -> None:
    """In a half-precision model: the audio front-end wholly fp32 (STFT or wav2vec2; its inputs and outputs
    are fp32, so its own norms must not cast their outputs to ``dtype``) and every other norm fp32 inside."""
    model.audio_encoder.float()
    for child in _beside_audio(model):
        keep_norms_fp32(child, dtype=dtype)


def _beside_audio(model: FadaModel) -> list[nn.Module]:
    """The model's networks other than its audio front-end."""
    return [child for child in model.children() if child is not model.audio_encoder]


def keep_norms_fp32(module: nn.Module, *, dtype: torch.dtype) -> int:
    """Give every GroupNorm/LayerNorm fp32 weights and fp32 statistics inside a half-precision model.

    Inputs are cast to fp32 before the norm and its output back to ``dtype``. Returns how many norms
    were converted. Idempotent: a norm converted before keeps its hooks, and its weights are made fp32 again (a
    ``module.to(half)`` since, e.g. :func:`prepare_model` of a model two backends share, casts them down).
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, _NORMS):
            sub.float()
            if not getattr(sub, "_fada_fp32", False):
                sub.register_forward_pre_hook(_to_fp32)
                sub.register_forward_hook(_cast_back(dtype))
                sub._fada_fp32 = True
                count += 1
    return count


def _to_fp32(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def _cast_back(dtype: torch.dtype):
    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        return output.to(dtype)

    return hook


# ---- bound denoisers -----------------------------------------------------------------------------


class _CudaGraphRunner:
    """Captured CUDA graphs of the denoiser, one per (branches, shapes); static buffers per chunk.

    At :meth:`bind` the chunk's conditions are tiled for the branch set and copied into the graph's
    static inputs, so each sampler step only copies ``z``, ``t`` and ``cfg`` and replays.
    """

    def __init__(self, denoiser: Any) -> None:
        self.denoiser = denoiser
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = None

    def bind(self, conditions: ChunkConditions, *, cfg_conditioned: bool, dtype: torch.dtype) -> _GraphedDenoiser:
        return _GraphedDenoiser(self, conditions, cfg_conditioned=cfg_conditioned, dtype=dtype)

    def graph(self, key: tuple, inputs: dict[str, Any]) -> _Graph:
        if key not in self.graphs:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            self.graphs[key] = _Graph(self.denoiser, inputs, self.pool)
        return self.graphs[key]


class _Graph:
    def __init__(self, denoiser: Any, inputs: dict[str, Any], pool: Any) -> None:
        # static copies of every input; the graph reads them by address
        self.static = {k: _clone_tree(v) for k, v in inputs.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):  # warm-up outside capture (allocator, cuDNN autotune, compile)
                denoiser(**self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), torch.no_grad():
            self.output = denoiser(**self.static)

    def load(self, inputs: dict[str, Any]) -> None:
        for k, v in inputs.items():
            _copy_tree(self.static[k], v)

    def replay(self) -> Tensor:
        self.graph.replay()
        return self.output


class _GraphedDenoiser:
    def __init__(self, runner: _CudaGraphRunner, conditions: ChunkConditions, *, cfg_conditioned: bool,
                 dtype: torch.dtype) -> None:
        self.runner = runner
        self.conditions = conditions
        self.cfg_conditioned = cfg_conditioned
        self.dtype = dtype
        self.loaded: dict[tuple, _Graph] = {}

    @torch.no_grad()
    def __call__(self, z: Tensor, timestep: Tensor, *, branches: Sequence[str], cfg: Tensor | None = None) -> Tensor:
        branches = tuple(branches)
        if not branches or any(br not in BRANCHES for br in branches):
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {branches}")
        nb, b = len(branches), z.shape[0]
        t = timestep.float().reshape(b) if timestep.numel() == b else timestep.float().reshape(b, z.shape[1])
        key = (branches, tuple(z.shape), tuple(t.shape), cfg is not None)  # per clip (B,) or per frame (B, F)
        step = {"sample": _tile(z.to(self.dtype), nb), "timestep": _tile(t, nb),
                "cfg": _tile(cfg.to(self.dtype), nb) if cfg is not None else None}
        graph = self.loaded.get(key)
        if graph is None:
            chunk = self._chunk_inputs(branches, b)
            graph = self.runner.graph(key, {**chunk, **step})
            graph.load(chunk)  # this chunk's conditions (once per chunk and branch set)
            self.loaded[key] = graph
        graph.load(step)
        eps = graph.replay()  # (nb*B, F, C, h, w)
        return eps.float().view(nb, b, *z.shape[1:]).clone()

    def _chunk_inputs(self, branches: tuple[str, ...], b: int) -> dict[str, Any]:
        c, nb = self.conditions, len(branches)
        audio = torch.cat([c.audio_tokens if br == "a" else torch.zeros_like(c.audio_tokens) for br in branches])
        ref_mask = None
        if "b" in branches:
            ref_mask = torch.tensor([br != "b" for br in branches], device=audio.device).repeat_interleave(b)
        return {
            "audio_tokens": audio.to(self.dtype),
            "ref_k": [_tile(k, nb) for k in c.reference.keys],
            "ref_v": [_tile(v, nb) for v in c.reference.values],
            "motion": [_tile(m, nb) for m in c.motion],
            "ref_mask": ref_mask,
        }


def _tile(x: Tensor, n: int) -> Tensor:
    return x.repeat((n,) + (1,) * (x.dim() - 1))


def _clone_tree(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_clone_tree(v) for v in value]
    return value


def _copy_tree(dst: Any, src: Any) -> None:
    if isinstance(dst, Tensor):
        dst.copy_(src)
    elif isinstance(dst, list):
        for d, s in zip(dst, src, strict=True):
            _copy_tree(d, s)
