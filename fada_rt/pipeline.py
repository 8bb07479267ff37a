"""AvatarPipeline: prepare a portrait once, then generate chunk after chunk (docs/design.md §4).

``portrait(image) -> Portrait``: the face found, aligned and cut to the model's framing, with its
paste-back (:mod:`fada_rt.face`). ``prepare(portrait or framed image) -> Avatar``: VAE encode,
ReferenceNet once, the reference K/V of every layer cached in the :class:`Avatar` (and in a small
per-pipeline cache keyed by the prepared pixels, so preparing the same portrait again is free).
Switching avatars costs one ``prepare``, never a rebuild.

``generate(avatar, windows, state) -> (frames, state)``: one chunk of ``F`` frames from its
windowed audio features ``(1, n, 2w+1, L, D)``, n <= F:

1. conditions = reference K/V (cached) + motion features of ``state.motion_latents`` + audio tokens;
2. ``denoiser = backend.bind(conditions)`` — the sampler never knows which backend runs;
3. noise ``(1, F, C, h, w)`` from the pipeline's explicit generator (with a share ``noise_sharing`` common to
   every frame of the session, drawn once per state), sampled by the chosen sampler:
   ``fast`` (PeRFlow 6 steps, CFG-distilled student, 6 NFE), ``balanced`` (6 steps x 3 multi-CFG
   branches, 18 NFE), ``teacher`` (trailing DDIM 25 steps x 3 branches, 75 NFE); the guidance
   scales of Eq. 9 are a pipeline parameter (``cfg_audio``, ``cfg_ref``; default the checkpoint's own,
   else the paper's);
4. VAE decode of the first ``n`` latents;
5. the new motion latents are the last ``M`` generated **latents** (no decode/encode round trip); they
   condition the next chunk pulled towards the portrait's latent by ``motion_anchor`` (0: not at all),
   forward-noised to ``motion_noise_step`` (0: clean), and with a ``reference_sink`` the first slot holds
   the portrait's latent instead.

``noise_sharing``, ``motion_anchor``, ``motion_noise_step`` and ``reference_sink`` are the checkpoint's
:class:`fada_rt.config.RolloutConfig` (what it was trained to be fed) unless the pipeline is given another
``rollout``.

The first chunk's motion latents are the reference latent repeated ``M`` times. A partial last chunk
(n < F) is padded by repeating its last audio window (as :func:`window_features` replicates the
clip's edge) and its output trimmed to ``n`` frames.

A rolling sampler (``--sampler stream``, :mod:`fada_rt.sampling.rolling`) makes no chunks:
``advance(avatar, state, windows) -> (frames, state)`` is one denoiser call over the frames in flight (kept in the
state with their stages and audio windows), the new frames joining at t = 1 and the clean ones decoded, with the
same start noise and motion conditioning as a chunk. ``frames(avatar, windows)`` runs a whole clip either way.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fada_rt.backends.base import Backend
from fada_rt.backends.options import LoadOptions
from fada_rt.config import RolloutConfig
from fada_rt.face import MAX_SIDE, CropMode, Portrait, load_portrait
from fada_rt.media import load_image
from fada_rt.models.fada import ChunkConditions, ReferenceCache
from fada_rt.sampling import (
    SD15_SCHEDULE,
    noise_motion,
    rolling_step,
    share_noise,
)
from fada_rt.sampling.samplers import SAMPLERS, SamplerSpec


def check_sampler(sampler: str, backend: Backend, *, cfg_audio: float | None = None,
                  cfg_ref: float | None = None) -> SamplerSpec:
    """The sampler spec, after checking the backend's model can run it. Guidance scales: the given ones,
    else the model's own (``ModelConfig.guidance_scales``, set per checkpoint), else the paper's."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    spec = SAMPLERS[sampler]
    own = backend.config.guidance_scales
    if own is not None and spec.guidance.mode != "conditional":
        spec = spec.with_scales(cfg_audio=own[0], cfg_ref=own[1])
    spec = spec.with_scales(cfg_audio=cfg_audio, cfg_ref=cfg_ref)
    if spec.cfg_conditioned and not backend.cfg_conditioned:
        raise ValueError(f"sampler {sampler!r} needs a CFG-distilled student (cfg mode layer_tokens etc.); this "
                         f"model's cfg mode is {backend.config.cfg.mode!r}: use --sampler balanced or a fast student")
    if not spec.cfg_conditioned and backend.cfg_conditioned:
        raise ValueError(f"this model is a CFG-distilled student ({backend.config.cfg.mode}): use --sampler fast")
    if spec.rolling and backend.static_frames:
        raise ValueError(f"sampler {sampler!r} keeps 1..N frames in flight, but the {backend.name} backend's exported "
                         f"denoiser runs exactly {backend.config.num_frames} frames per call: run it on the torch "
                         f"backend (--backend torch)")
    role = backend.role
    if role is not None and role != spec.role:
        raise ValueError(f"sampler {sampler!r} runs a {spec.role} but the checkpoint holds a {role}; use "
                         f"{'--sampler fast/balanced' if role == 'student' else '--sampler teacher'} or another checkpoint")
    return spec


# ---- state ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Avatar:
    """One prepared portrait: its pixels, latent and the cached reference K/V of every layer."""

    image: np.ndarray  # (H, W, 3) uint8, after crop/resize
    latent: Tensor  # (1, C, h, w) scaled latent
    reference: ReferenceCache  # per layer (1, HW_l, C_l)
    key: str  # sha1 of the prepared pixels


@dataclass(frozen=True, eq=False)
class ChunkState:
    """What carries over between chunks (or rolling calls): the motion latents, the session's shared noise, the
    frame counter and, for a rolling sampler, the frames in flight."""

    motion_latents: Tensor  # (1, M, C, h, w)
    next_frame: int = 0  # index of the next frame out
    chunks: int = 0  # chunks made (rolling: denoiser calls)
    shared_noise: Tensor | None = None  # (1, 1, C, h, w), drawn at the first chunk when noise is shared
    flight: Tensor | None = None  # (1, n, C, h, w) rolling: frames in flight, oldest first
    stage: Tensor | None = None  # (n,) int64 rolling: steps each has taken
    flight_windows: Tensor | None = None  # (1, n, 2w+1, L, D) rolling: their audio windows
    motion_cache: tuple[Tensor, list[Tensor]] | None = None  # rolling: the last call's motion latents and features

    @property
    def in_flight(self) -> int:
        return 0 if self.flight is None else self.flight.shape[1]


# ---- the pipeline --------------------------------------------------------------------------------


class AvatarPipeline:
    def __init__(self, backend: Backend, *, sampler: str = "fast", cfg_audio: float | None = None,
                 cfg_ref: float | None = None, rollout: RolloutConfig | None = None, cache_size: int = 4,
                 group: int = 1) -> None:
        """``cfg_audio``/``cfg_ref``: guidance scales of Eq. 9 (None: the model's own, else the paper's);
        ``rollout``: how chunks are chained (None: the model's own, ``ModelConfig.rollout``); ``group``: a rolling
        sampler's frames joining per call at most."""
        self.backend = backend
        self.config = backend.config
        self.sampler = check_sampler(sampler, backend, cfg_audio=cfg_audio, cfg_ref=cfg_ref)
        self.rollout = rollout if rollout is not None else self.config.rollout
        if not (isinstance(group, int) and group >= 1):
            raise ValueError(f"group must be an int >= 1 (frames joining per rolling call), got {group!r}")
        self.group = group
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Avatar] = OrderedDict()

    @classmethod
    def load(cls, options: LoadOptions | None = None, *, sampler: str = "fast", cfg_audio: float | None = None,
             cfg_ref: float | None = None, rollout: RolloutConfig | None = None) -> AvatarPipeline:
        """Build the backend ``options`` describe (default: torch on the CPU) and a pipeline on it. With the torch
        backend and no ``options.checkpoint``, the shipped tiny checkpoint of ``sampler``."""
        from fada_rt.assets import default_checkpoint
        from fada_rt.backends import create_backend

        options = options if options is not None else LoadOptions()
        if options.backend == "torch" and options.checkpoint is None:
            options = options.replace(checkpoint=default_checkpoint(sampler))
        return cls(create_backend(options), sampler=sampler, cfg_audio=cfg_audio, cfg_ref=cfg_ref, rollout=rollout)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | None = None, *, sampler: str = "fast",
                        cfg_audio: float | None = None, cfg_ref: float | None = None,
                        rollout: RolloutConfig | None = None, **options: Any) -> AvatarPipeline:
        """Keyword shorthand of :meth:`load`: ``options`` are :class:`~fada_rt.backends.LoadOptions` fields
        (``backend``, ``engine_dir``, ``device``, ``dtype``, ``compile``, ``cuda_graphs``, ``threads``, ``preset``,
        ``decoder``)."""
        return cls.load(LoadOptions(checkpoint=checkpoint, **options), sampler=sampler, cfg_audio=cfg_audio,
                        cfg_ref=cfg_ref, rollout=rollout)

    # ---- shapes ----------------------------------------------------------------------------------
    @property
    def chunk_frames(self) -> int:
        return self.config.num_frames

    @property
    def motion_frames(self) -> int:
        return self.config.motion_frames

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def nfe(self) -> int:
        return self.sampler.nfe

    @property
    def step_frames(self) -> int:
        """Frames a step of the runtime waits for: a chunk, or for a rolling sampler the ``group`` joining per call."""
        return self.group if self.rolling else self.chunk_frames

    @property
    def rolling(self) -> bool:
        """The sampler keeps frames in flight (``advance`` per call) rather than making whole chunks."""
        return self.sampler.rolling

    # ---- avatars -----------------------------------------------------------------------------------
    def portrait(self, image: str | Path | np.ndarray, *, crop: CropMode = "face", face_index: int | None = None,
                 max_side: int | None = MAX_SIDE) -> Portrait:
        """The picture with its face found and cut to this model's framing (``config.crop``); see
        :func:`fada_rt.face.load_portrait`."""
        return load_portrait(image, resolution=self.resolution, crop=self.config.crop, mode=crop,
                             face_index=face_index, max_side=max_side)

    def prepare(self, image: Portrait | str | Path | np.ndarray) -> Avatar:
        """VAE encode and run the ReferenceNet once. ``image``: a :class:`~fada_rt.face.Portrait` (its crop), or
        a picture already framed like the training crops (:func:`fada_rt.media.load_image`: the centre square)."""
        pixels = image.crop if isinstance(image, Portrait) else load_image(image, resolution=self.resolution)
        key = hashlib.sha1(pixels.tobytes()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # (1, 3, H, W) in [-1, 1]
        latent = self.backend.encode(x).float()  # (1, C, h, w)
        avatar = Avatar(image=pixels, latent=latent, reference=self.backend.reference(latent), key=key)
        self._cache[key] = avatar
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return avatar

    def initial_state(self, avatar: Avatar) -> ChunkState:
        """Motion latents of the first chunk: the reference latent repeated M times."""
        motion = avatar.latent[:, None].expand(-1, self.motion_frames, -1, -1, -1).contiguous()  # (1, M, C, h, w)
        return ChunkState(motion_latents=motion)

    # ---- chunks -------------------------------------------------------------------------------------
    def audio_windows(self, wave: np.ndarray | Tensor) -> Tensor:
        """Offline windowed features of a whole mono clip at the model's sample rate: (1, T, 2w+1, L, D)."""
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))[None]  # (1, S)
        return self.backend.audio_features(wave).float()

    def generate(self, avatar: Avatar, windows: Tensor, state: ChunkState, *,
                 generator: torch.Generator) -> tuple[np.ndarray, ChunkState]:
        """One chunk: windows (1, n, 2w+1, L, D), 1 <= n <= F -> frames (n, H, W, 3) uint8, next state."""
        frames, state = self.launch(avatar, windows, state, generator=generator)
        return frames(), state

    def launch(self, avatar: Avatar, windows: Tensor, state: ChunkState, *, generator: torch.Generator,
               background: bool = False) -> tuple[Callable[[], np.ndarray], ChunkState]:
        """:meth:`generate` in two halves: the chunk's steps now, its frames when the returned function is called.
        The next state needs only the clean latents, so the next chunk can start before this one is decoded; with
        ``background`` the decode runs beside it (:meth:`Backend.decode_async`: a second CUDA stream, or a worker
        thread)."""
        if self.rolling:
            raise ValueError(f"sampler {self.sampler.name!r} runs frames in flight: use advance(), not generate()")
        f, m = self.chunk_frames, self.motion_frames
        if windows.dim() != 5 or windows.shape[0] != 1 or not 1 <= windows.shape[1] <= f:
            raise ValueError(f"windows must be (1, n, 2w+1, L, D) with 1 <= n <= {f}, got {tuple(windows.shape)}")
        n = windows.shape[1]
        if n < f:  # partial last chunk: repeat the last window, trim the output below
            windows = torch.cat([windows, windows[:, -1:].expand(-1, f - n, -1, -1, -1)], dim=1)
        start, shared = self._start_latents(avatar, f, state.shared_noise, generator)
        conditions = self.backend.conditions(avatar.reference, self._motion(avatar, state, generator), windows)
        if self.backend.chunk_graph:  # the steps and the decode as one program
            latents, images = self.backend.sample_chunk(self.sampler, conditions, start, frames=n)
            decoded: Callable[[], Tensor] = lambda: images  # noqa: E731
        else:
            latents = self.sampler.run(denoiser=self.backend.bind(conditions), noise=start).z0.float()  # (1, F, ...)
            if background:
                decoded = self.backend.decode_async(latents[0, :n])
            else:
                images = self.backend.decode(latents[0, :n])  # (n, 3, H, W)
                decoded = lambda: images  # noqa: E731
        motion = torch.cat([state.motion_latents.to(latents.device), latents[:, :n]], dim=1)[:, -m:]
        return lambda: self._to_frames(decoded()), ChunkState(
            motion_latents=motion.contiguous(), next_frame=state.next_frame + n, chunks=state.chunks + 1,
            shared_noise=shared)

    def advance(self, avatar: Avatar, state: ChunkState, windows: Tensor | None = None, *,
                generator: torch.Generator) -> tuple[np.ndarray, ChunkState]:
        """One call of a rolling sampler (:mod:`fada_rt.sampling.rolling`): the frames of ``windows`` (1, a, 2w+1, L, D)
        join at t = 1 (None: none join), one denoiser call moves every frame in flight one step with a timestep of its
        own, and the frames that took the last step are decoded -> (e, H, W, 3) uint8 (e may be 0), next state."""
        if not self.rolling:
            raise ValueError(f"sampler {self.sampler.name!r} makes whole chunks: use generate(), not advance()")
        flight, stage, held, shared = state.flight, state.stage, state.flight_windows, state.shared_noise
        if windows is not None and windows.shape[1] > 0:
            if windows.dim() != 5 or windows.shape[0] != 1:
                raise ValueError(f"windows must be (1, a, 2w+1, L, D), got {tuple(windows.shape)}")
            new, shared = self._start_latents(avatar, windows.shape[1], shared, generator)
            joined = torch.zeros(windows.shape[1], dtype=torch.int64)
            flight = new if flight is None else torch.cat([flight, new], dim=1)
            stage = joined if stage is None else torch.cat([stage, joined])
            held = windows if held is None else torch.cat([held, windows], dim=1)
        if flight is None or flight.shape[1] == 0:
            raise ValueError("no frames in flight and none joining: pass the next frames' audio windows")
        conditioning = self._motion(avatar, state, generator)  # (1, M, C, h, w)
        features = self._motion_features(conditioning, state.motion_cache)
        conditions = ChunkConditions(avatar.reference, features, self.backend.audio_tokens(held))
        flight, _ = rolling_step(denoiser=self.backend.bind(conditions), z=flight, stage=stage,
                                 guidance=self.sampler.guidance, plan=self.sampler.plan)
        stage = stage + 1
        done = int((stage == self.sampler.plan.num_steps).sum())  # the oldest frames: clean now
        clean = flight[:, :done].float()  # (1, e, C, h, w)
        motion = torch.cat([state.motion_latents.to(clean.device), clean], dim=1)[:, -self.motion_frames:]
        frames = self._to_frames(self.backend.decode(clean[0])) if done else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        rest = None if done == flight.shape[1] else slice(done, None)
        return frames, ChunkState(
            motion_latents=motion.contiguous(), next_frame=state.next_frame + done, chunks=state.chunks + 1,
            shared_noise=shared, flight=None if rest is None else flight[:, rest],
            stage=None if rest is None else stage[rest], flight_windows=None if rest is None else held[:, rest],
            motion_cache=(conditioning, features))

    def frames(self, avatar: Avatar, windows: Tensor, *, generator: torch.Generator) -> Iterator[np.ndarray]:
        """Every frame of a whole clip's windows (1, T, 2w+1, L, D), in pieces as they come out: chunk by chunk, or
        for a rolling sampler call by call, ``group`` frames joining per call."""
        state = self.initial_state(avatar)
        total = windows.shape[1]
        step = self.step_frames
        start = 0
        while start < total or state.in_flight:
            part = windows[:, start : start + step]
            start += part.shape[1]
            if self.rolling:
                frames, state = self.advance(avatar, state, part if part.shape[1] else None, generator=generator)
            else:
                frames, state = self.generate(avatar, part, state, generator=generator)
            if len(frames):
                yield frames

    # ---- the pieces of a chunk or call ----------------------------------------------------------------
    def _start_latents(self, avatar: Avatar, n: int, shared: Tensor | None,
                       generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Start latents (1, n, C, h, w) at t = 1 from the pipeline's generator, with the session's shared noise
        (drawn at the first call) when noise is shared; returns them and the shared noise."""
        c, h, ro = self.config.vae.latent_channels, self.config.latent_size, self.rollout
        noise = torch.randn((1, n, c, h, h), generator=generator, dtype=torch.float32, device=generator.device)
        if ro.noise_sharing > 0:
            if shared is None:  # once per session: every frame shares it
                shared = torch.randn((1, 1, c, h, h), generator=generator, dtype=torch.float32, device=generator.device)
            noise = share_noise(noise, shared, ro.noise_sharing)
        start = SD15_SCHEDULE.start_latent(noise.to(self.backend.device), avatar.latent.to(self.backend.device))
        return start, shared

    def _motion(self, avatar: Avatar, state: ChunkState, generator: torch.Generator) -> Tensor:
        """The motion latents (1, M, C, h, w) as they condition the next frames: pulled towards the portrait
        (``motion_anchor``), forward-noised (``motion_noise_step``), the portrait in the first slot (``reference_sink``)."""
        ro = self.rollout
        motion = state.motion_latents[:, int(ro.reference_sink):]  # (1, M or M - 1, C, h, w)
        ref = avatar.latent[:, None].to(motion)  # (1, 1, C, h, w)
        if ro.motion_anchor > 0:
            motion = ref + (1.0 - ro.motion_anchor) * (motion - ref)
        if ro.motion_noise_step > 0:
            drawn = torch.randn(motion.shape, generator=generator, dtype=torch.float32, device=generator.device)
            motion = noise_motion(motion, drawn.to(motion.device), ro.motion_noise_step)
        if ro.reference_sink:
            motion = torch.cat([ref, motion], dim=1)  # (1, M, C, h, w)
        return motion

    def _motion_features(self, motion: Tensor, cache: tuple[Tensor, list[Tensor]] | None) -> list[Tensor]:
        """Per-layer ReferenceNet features (1, M, HW, C) of the conditioning motion latents (1, M, C, h, w). The
        ReferenceNet sees each latent on its own, so a latent the last call already saw (a rolling sampler shifts one
        frame per call) reuses its features; only the new ones run."""
        m = motion.shape[1]
        known: dict[int, int] = {}
        if cache is not None:
            old, _ = cache
            for j in range(m):
                match = next((i for i in range(old.shape[1]) if torch.equal(motion[:, j], old[:, i])), None)
                if match is not None:
                    known[j] = match
        todo = [j for j in range(m) if j not in known]
        if cache is None or not known:
            return self.backend.motion_features(motion)
        fresh = self.backend.motion_features(motion[:, todo]) if todo else None  # per layer (1, len(todo), HW, C)
        layers = []
        for layer, old_feat in enumerate(cache[1]):
            slots = [old_feat[:, known[j]] if j in known else fresh[layer][:, todo.index(j)] for j in range(m)]
            layers.append(torch.stack(slots, dim=1))  # (1, M, HW, C)
        return layers

    @staticmethod
    def _to_frames(images: Tensor) -> np.ndarray:
        """Decoded images (n, 3, H, W) in [-1, 1] -> frames (n, H, W, 3) uint8."""
        frames = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return frames.permute(0, 2, 3, 1).cpu().numpy()
