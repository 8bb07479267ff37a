"""Training chunks drawn from the latent cache (paper §3.1, DESIGN.md §2).

A training chunk is ``F`` consecutive frames of one clip with
* a reference frame drawn from the same clip (as EMO / Hallo do),
* motion frames = the ``M`` frames preceding the chunk (the reference latent where the clip has
  none before, and, with probability ``p_motion_from_reference``, for all of them — which is what
  the runtime feeds the first chunk),
* optionally, Gaussian noise on the motion frames (``motion_noise``: per chunk ``sigma ~ U(0, max)``,
  ``motion + sigma * n``). At inference the motion frames are the previous chunk's *generated*
  latents, never the ground truth: trained on clean ground truth only, the network copies their
  detail, errors compound chunk by chunk and long videos drift (exposure bias). The noise teaches it
  to take detail from the reference and only pose and motion from the motion frames.
* the audio windows (±w frames, edges replicated at the clip's ends, as offline inference does).

Every random draw of a batch comes from ``numpy.random.default_rng([seed, step, rank])``, so a
batch is a pure function of its step: resuming a run replays it exactly, on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fada_rt.config import ModelConfig


@dataclass
class ChunkBatch:
    x0: Tensor  # (B, F, C, h, w) clean latents
    reference: Tensor  # (B, C, h, w)
    motion: Tensor  # (B, M, C, h, w)
    audio: Tensor  # (B, F, 2w+1, L, D) windowed audio features
    clip_ids: tuple[str, ...]
    starts: tuple[int, ...]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ChunkBatch:
        return ChunkBatch(self.x0.to(device, dtype), self.reference.to(device, dtype), self.motion.to(device, dtype),
                          self.audio.to(device, dtype), self.clip_ids, self.starts)


class ChunkSampler:
    def __init__(self, cache: dict[str, dict[str, Tensor]], *, config: ModelConfig, seed: int,
                 p_motion_from_reference: float = 0.1, motion_noise: float = 0.0) -> None:
        if not 0.0 <= p_motion_from_reference <= 1.0:
            raise ValueError(f"p_motion_from_reference must be in [0, 1], got {p_motion_from_reference}")
        if motion_noise < 0.0:
            raise ValueError(f"motion_noise (the largest noise std on motion latents) must be >= 0, got {motion_noise}")
        self.config = config
        self.seed = seed
        self.p_ref_motion = p_motion_from_reference
        self.motion_noise = motion_noise
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
        if self.motion_noise > 0:  # its own stream: the chunks are those of the same run without noise
            noise_rng = np.random.default_rng([self.seed, step, rank, 1])
            sigma = noise_rng.uniform(0.0, self.motion_noise, size=batch_size).astype(np.float32)
            n = noise_rng.standard_normal(tuple(motion.shape), dtype=np.float32)
            motion = motion + torch.from_numpy(sigma).view(-1, 1, 1, 1, 1) * torch.from_numpy(n)
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
        t = lat.shape[0]
        s = int(rng.integers(0, t - c.num_frames + 1)) if start is None else start
        ref = lat[int(rng.integers(0, t))]
        if rng.random() < self.p_ref_motion:
            motion = ref[None].expand(c.motion_frames, *ref.shape)
        else:
            idx = [s - c.motion_frames + j for j in range(c.motion_frames)]
            motion = torch.stack([lat[i] if i >= 0 else ref for i in idx])
        w = c.audio.window
        win = (s + torch.arange(c.num_frames)[:, None] + torch.arange(-w, w + 1)[None]).clamp(0, t - 1)  # (F, W)
        return lat[s : s + c.num_frames], ref, motion, feats[win], clip_id, s
