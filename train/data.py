"""Training chunks drawn from the latent cache (paper §3.1, docs/design.md §2).

A training chunk is ``F`` consecutive frames of one clip with
* a reference frame drawn from the same clip (as EMO / Hallo do),
* motion frames = the ``M`` frames preceding the chunk (the reference latent where the clip has
  none before, and, with probability ``p_motion_from_reference``, for all of them — which is what
  the runtime feeds the first chunk),
* optionally, motion-frame noise (``motion_noise_steps`` N: per chunk ``s ~ U{0..N-1}``, the motion latents
  forward-noised to training index s, :func:`fada_rt.sampling.noise_motion`; Hallo2). At inference the
  motion frames are the previous chunk's *generated* latents, never the ground truth: trained on clean
  ground truth only, the network copies their detail, errors compound chunk by chunk and long videos
  drift (exposure bias). The noise teaches it to take detail from the reference and only pose and
  motion from the motion frames; the runtime feeds them noised to its checkpoint's
  ``RolloutConfig.motion_noise_step``.
* optionally a reference sink (``reference_sink``): the first motion slot holds the chunk's reference latent
  (never noised) and the other ``M - 1`` the frames preceding the chunk, as the runtime feeds a model
  whose ``RolloutConfig.reference_sink`` is set;
* the audio windows (±w frames, edges replicated at the clip's ends, as offline inference does).

Every random draw of a batch comes from ``numpy.random.default_rng([seed, step, rank])``, so a
batch is a pure function of its step: resuming a run replays it exactly, on any number of ranks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fada_rt.config import ModelConfig, RolloutConfig
from fada_rt.sampling import noise_motion, share_noise


@dataclass
class ChunkBatch:
    x0: Tensor  # (B, F, C, h, w) clean latents
    reference: Tensor  # (B, C, h, w)
    motion: Tensor  # (B, M, C, h, w)
    audio: Tensor  # (B, F, 2w+1, L, D) windowed audio features
    clip_ids: tuple[str, ...]
    starts: tuple[int, ...]

    def first_frames(self, n: int) -> ChunkBatch:
        """The first ``n`` frames of every chunk (the frames right after its motion frames)."""
        if not 1 <= n <= self.x0.shape[1]:
            raise ValueError(f"first_frames needs 1 <= n <= {self.x0.shape[1]}, got {n}")
        return dataclasses.replace(self, x0=self.x0[:, :n], audio=self.audio[:, :n])

    def select(self, index: Tensor) -> ChunkBatch:
        """The samples at ``index`` (int64, repeats allowed)."""
        ids = index.tolist()
        return ChunkBatch(self.x0[index], self.reference[index], self.motion[index], self.audio[index],
                          tuple(self.clip_ids[i] for i in ids), tuple(self.starts[i] for i in ids))

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ChunkBatch:
        return ChunkBatch(self.x0.to(device, dtype), self.reference.to(device, dtype), self.motion.to(device, dtype),
                          self.audio.to(device, dtype), self.clip_ids, self.starts)


def check_motion_noise_steps(steps: int) -> None:
    """Motion-frame noise levels U{0..steps-1} must be training indices (0: clean motion frames)."""
    if not (isinstance(steps, int) and 0 <= steps <= 1000):
        raise ValueError(f"motion_noise_steps must be an int in [0, 1000] (0: clean motion frames), got {steps!r}")


def check_audio_augment(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"audio_augment must be in [0, 1], got {p}")


def check_noise_sharing_max(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"noise_sharing_max must be in [0, 1] (0: independent noise per frame), got {value!r}")


def draw_shared_noise(eps: Tensor, sharing_max: float, gen: torch.Generator) -> Tensor:
    """Training noise under the mixed noise prior (:func:`fada_rt.sampling.share_noise`): ``eps`` (B, F, *S)
    mixed with a noise shared by each sample's frames at a share ``rho ~ U(0, sharing_max)`` per sample,
    drawn after ``eps`` from the same generator (so the other draws of a step do not change); 0: ``eps``."""
    check_noise_sharing_max(sharing_max)
    if sharing_max == 0:
        return eps
    shared = torch.randn((eps.shape[0], 1, *eps.shape[2:]), generator=gen).to(eps)
    rho = sharing_max * torch.rand(eps.shape[0], generator=gen)
    return share_noise(eps, shared, rho.to(eps.device))


def trained_rollout(config: ModelConfig, *, motion_noise_steps: int, noise_sharing_max: float,
                    reference_sink: bool) -> ModelConfig:
    """The model config a run exports: its :class:`fada_rt.config.RolloutConfig` set to what the run trains
    on (the sink; motion noise at the middle of its range, ``N // 2``; the largest noise share), so the
    runtime feeds the checkpoint what it learnt. A run without these options keeps the config's own;
    measure and adjust with ``python -m fada_rt.checkpoint --set-rollout``."""
    if not (motion_noise_steps or noise_sharing_max or reference_sink):
        return config
    return config.replace(rollout=RolloutConfig(motion_noise_step=motion_noise_steps // 2,
                                                noise_sharing=noise_sharing_max, reference_sink=reference_sink))


class ChunkSampler:
    def __init__(self, cache: dict[str, dict[str, Tensor]], *, config: ModelConfig, seed: int,
                 p_motion_from_reference: float = 0.1, motion_noise_steps: int = 0,
                 reference_sink: bool = False, audio_augment: float = 0.0) -> None:
        if not 0.0 <= p_motion_from_reference <= 1.0:
            raise ValueError(f"p_motion_from_reference must be in [0, 1], got {p_motion_from_reference}")
        check_audio_augment(audio_augment)
        if audio_augment > 0 and not any("audio_aug" in c for c in cache.values()):
            raise ValueError("audio_augment > 0 needs a cache with augmented audio: build it with "
                             "python -m train.cache --audio-variants K")
        self.audio_augment = audio_augment
        check_motion_noise_steps(motion_noise_steps)
        self.config = config
        self.seed = seed
        self.p_ref_motion = p_motion_from_reference
        self.motion_noise_steps = motion_noise_steps
        self.sink = int(reference_sink)  # motion slots before the generated ones
        f = config.num_frames
        self.clips = {cid: c for cid, c in cache.items() if c["latents"].shape[0] >= f}
        if not self.clips:
            raise ValueError(f"no cached clip has the {f} frames a training chunk needs")
        self.ids = sorted(self.clips)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, *, step: int, batch_size: int, rank: int = 0) -> ChunkBatch:
        rng = np.random.default_rng([self.seed, step, rank])
        items = [self.chunk(self.ids[rng.integers(len(self.ids))], rng) for _ in range(batch_size)]
        motion = torch.stack([it[2] for it in items]).float()  # (B, M, C, h, w)
        if self.motion_noise_steps > 0:  # its own stream: the chunks are those of the same run without noise
            noise_rng = np.random.default_rng([self.seed, step, rank, 1])
            s = torch.from_numpy(noise_rng.integers(0, self.motion_noise_steps, size=batch_size))
            n = torch.from_numpy(noise_rng.standard_normal(tuple(motion.shape), dtype=np.float32))
            k = self.sink  # the sink slot stays clean
            motion = torch.cat([motion[:, :k], noise_motion(motion[:, k:], n[:, k:], s).float()], dim=1)
        return ChunkBatch(
            x0=torch.stack([it[0] for it in items]).float(),
            reference=torch.stack([it[1] for it in items]).float(),
            motion=motion,
            audio=torch.stack([it[3] for it in items]).float(),
            clip_ids=tuple(it[4] for it in items),
            starts=tuple(it[5] for it in items),
        )

    def chunk(self, clip_id: str, rng: np.random.Generator, start: int | None = None):
        """(x0 (F,C,h,w), reference (C,h,w), motion (M,C,h,w), audio (F,W,L,D), id, start)."""
        c = self.config
        lat, feats = self.clips[clip_id]["latents"], self.clips[clip_id]["audio"]
        if self.audio_augment > 0:  # drawn only then: runs without augmentation keep their streams
            variants = self.clips[clip_id].get("audio_aug")  # (K, T, L, D); clips cached without copies: clean
            if rng.random() < self.audio_augment and variants is not None:
                feats = variants[int(rng.integers(variants.shape[0]))]
        t = lat.shape[0]
        s = int(rng.integers(0, t - c.num_frames + 1)) if start is None else start
        ref = lat[int(rng.integers(0, t))]
        if rng.random() < self.p_ref_motion:
            motion = ref[None].expand(c.motion_frames, *ref.shape)
        else:
            generated = c.motion_frames - self.sink  # slots the runtime fills with generated latents
            idx = [s - generated + j for j in range(generated)]
            motion = torch.stack([ref] * self.sink + [lat[i] if i >= 0 else ref for i in idx])
        w = c.audio.window
        win = (s + torch.arange(c.num_frames)[:, None] + torch.arange(-w, w + 1)[None]).clamp(0, t - 1)  # (F, W)
        return lat[s : s + c.num_frames], ref, motion, feats[win], clip_id, s
