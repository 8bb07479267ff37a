"""Latent lip-sync expert: a SyncNet over VAE latents and the model's own audio features.

SyncNet (Chung & Zisserman 2016), used as a frozen "lip-sync expert" by Wav2Lip (Prajwal et al. 2020,
the paper's Sync-D network [20]) and on decoded predictions by LatentSync: two encoders map a short
window of frames and the audio of its centre frame to unit vectors whose cosine is high when they are
in sync. This one reads what teacher training already has — cached latents (lower half of a
face-centred crop: the mouth) and windowed audio features — so it needs no labels, no landmarks and no
decoding, and works on real clips as on the synthetic world. It is trained contrastively (InfoNCE over
a batch that holds several windows of each clip: the hard negatives are the same face and voice at
another moment) and then gives the teacher an extra loss on its x0 prediction
(``python -m train.teacher --sync-expert DIR --sync-weight W``, :mod:`train.teacher`).

``python -m train.sync_expert --data DIR --cache DIR --out DIR [--steps 3000]``; the folder holds
``model.safetensors`` and ``config.json`` (its config, the VAE sha256 and audio front-end it reads,
held-out scores).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from fada_rt.checkpoint import load_strict
from fada_rt.models.audio import window_features

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class SyncExpertConfig:
    latent_channels: int = 4
    latent_size: int = 16
    window: int = 2  # frames on each side of the centre frame (both streams)
    audio_layers: int = 4  # L of the audio features
    audio_dim: int = 32  # D of the audio features
    rows: str = "lower"  # "lower": lower half of the latent (the mouth of a face-centred crop); "all"
    channels: tuple[int, ...] = (64, 128, 256)
    audio_hidden: int = 256
    embed_dim: int = 128
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.rows not in ("lower", "all"):
            raise ValueError(f"rows must be 'lower' or 'all', got {self.rows!r}")
        if self.latent_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"latent_size {self.latent_size} must be divisible by 2^{len(self.channels) - 1}")

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SyncExpertConfig:
        known = {f.name for f in fields(SyncExpertConfig)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sync-expert config keys {sorted(unknown)}; known: {sorted(known)}")
        return SyncExpertConfig(**{k: (tuple(v) if k == "channels" else v) for k, v in d.items()})


class SyncExpert(nn.Module):
    """(latent window, audio window) -> two unit embeddings; their cosine scores sync."""

    def __init__(self, config: SyncExpertConfig) -> None:
        super().__init__()
        self.config = c = config
        frames = 2 * c.window + 1
        layers: list[nn.Module] = []
        prev = frames * c.latent_channels
        for i, ch in enumerate(c.channels):
            layers += [nn.Conv2d(prev, ch, 3, stride=1 if i == 0 else 2, padding=1), nn.GroupNorm(8, ch), nn.SiLU()]
            prev = ch
        down = 2 ** (len(c.channels) - 1)
        rows = c.latent_size // 2 if c.rows == "lower" else c.latent_size
        self.visual = nn.Sequential(*layers, nn.Flatten(),
                                    nn.Linear(prev * (rows // down) * (c.latent_size // down), c.embed_dim))
        self.audio = nn.Sequential(
            nn.Linear(frames * c.audio_layers * c.audio_dim, c.audio_hidden), nn.SiLU(),
            nn.Linear(c.audio_hidden, c.audio_hidden), nn.SiLU(),
            nn.Linear(c.audio_hidden, c.embed_dim),
        )

    def embed_video(self, latents: Tensor) -> Tensor:
        """latents (N, 2w+1, C, h, w) -> (N, E) unit vectors."""
        if self.config.rows == "lower":
            latents = latents[..., latents.shape[-2] // 2 :, :]
        x = latents.flatten(1, 2).to(self.visual[0].weight.dtype)  # (N, (2w+1)*C, h', w)
        return F.normalize(self.visual(x).float(), dim=-1)

    def embed_audio(self, windows: Tensor) -> Tensor:
        """windows (N, 2w+1, L, D) -> (N, E) unit vectors."""
        return F.normalize(self.audio(windows.flatten(1).to(self.audio[0].weight.dtype)).float(), dim=-1)

    def chunk_cosines(self, latents: Tensor, audio_windows: Tensor) -> Tensor:
        """Sync cosine of every frame of a chunk with a full window: (B, F, C, h, w), (B, F, 2w+1, L, D)
        -> (B, F - 2w) for centre frames w .. F-w-1."""
        return (self.embed_chunk_video(latents) * self.embed_chunk_audio(audio_windows)).sum(-1)

    def embed_chunk_audio(self, audio_windows: Tensor) -> Tensor:
        """Audio embedding of the centre frames of a chunk's full windows: (B, F, 2w+1, L, D) -> (B, F - 2w, E)."""
        w, (b, f) = self.config.window, audio_windows.shape[:2]
        return self.embed_audio(audio_windows[:, w : f - w].flatten(0, 1)).view(b, f - 2 * w, -1)

    def chunk_video_cosines(self, latents: Tensor, target: Tensor) -> Tensor:
        """Cosine between the video embeddings of two chunks' windows (e.g. a prediction and the ground
        truth): (B, F, C, h, w) x 2 -> (B, F - 2w)."""
        w, (b, f) = self.config.window, latents.shape[:2]
        return (self.embed_chunk_video(latents) * self.embed_chunk_video(target)).sum(-1).view(b, f - 2 * w)

    def embed_chunk_video(self, latents: Tensor) -> Tensor:
        """Video embedding of every full window of a chunk: (B, F, C, h, w) -> (B, F - 2w, E), centre
        frames w .. F-w-1."""
        w, (b, f) = self.config.window, latents.shape[:2]
        if f < 2 * w + 1:
            raise ValueError(f"a chunk of {f} frames has no full {2 * w + 1}-frame window")
        video = latents.unfold(1, 2 * w + 1, 1).permute(0, 1, 5, 2, 3, 4)  # (B, F-2w, 2w+1, C, h, w)
        return self.embed_video(video.flatten(0, 1)).view(b, f - 2 * w, -1)


def save_sync_expert(expert: SyncExpert, folder: str | Path, *, meta: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in expert.state_dict().items()}, str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps({"config": asdict(expert.config), **meta}, indent=1) + "\n")
    return folder


def load_sync_expert(folder: str | Path) -> tuple[SyncExpert, dict[str, Any]]:
    """The expert (eval, frozen) and the rest of its config.json (``vae_sha256``, ``audio``, ``scores``)."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder} is not a sync expert ({CONFIG_NAME} + {WEIGHTS_NAME}); train one with "
                                f"python -m train.sync_expert")
    meta = json.loads((folder / CONFIG_NAME).read_text())
    expert = SyncExpert(SyncExpertConfig.from_dict(meta.pop("config")))
    load_strict(expert, load_file(str(folder / WEIGHTS_NAME)), source=str(folder / WEIGHTS_NAME))
    return expert.eval().requires_grad_(False), meta


class WindowSampler:
    """Batches of ``clips x per_clip`` windows; one clip's windows are >= 2w+1 frames apart."""

    def __init__(self, cache: dict[str, dict[str, Tensor]], *, window: int, per_clip: int, seed: int) -> None:
        self.window, self.per_clip, self.seed = window, per_clip, seed
        need = per_clip * (2 * window + 1) + 2 * window
        self.clips = {cid: c for cid, c in cache.items() if c["latents"].shape[0] >= need}
        if not self.clips:
            raise ValueError(f"no cached clip has the {need} frames {per_clip} separate windows need")
        self.ids = sorted(self.clips)

    def batch(self, *, step: int, clips: int) -> tuple[Tensor, Tensor]:
        """(N, 2w+1, C, h, w) latent windows, (N, 2w+1, L, D) audio windows; N = clips * per_clip."""
        rng = np.random.default_rng([self.seed, step])
        w, video, audio = self.window, [], []
        for cid in rng.choice(self.ids, size=clips, replace=len(self.ids) < clips):
            lat = self.clips[cid]["latents"]
            windows = window_features(self.clips[cid]["audio"][None], w)[0]  # (T, 2w+1, L, D)
            gap = (lat.shape[0] - 2 * w) // self.per_clip  # >= 2w+1
            offset = int(rng.integers(0, gap - 2 * w))
            for j in range(self.per_clip):
                k = w + j * gap + offset
                video.append(lat[k - w : k + w + 1])
                audio.append(windows[k])
        return torch.stack(video).float(), torch.stack(audio).float()


def info_nce(expert: SyncExpert, video: Tensor, audio: Tensor) -> Tensor:
    """Symmetric InfoNCE: window i's video and audio are the positive pair, all others negatives."""
    logits = expert.embed_video(video) @ expert.embed_audio(audio).T / expert.config.temperature  # (N, N)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def offset_scores(expert: SyncExpert, cache: dict[str, dict[str, Tensor]], *, max_offset: int = 6) -> dict[str, float]:
    """SyncNet's offset search per clip: the mean cosine of video frame k with audio frame k + d for
    |d| <= max_offset; ``offset_accuracy`` = share of clips whose best d is 0, ``margin`` = mean cosine at
    0 minus the mean over d != 0."""
    w = expert.config.window
    hits, margins = [], []
    for c in cache.values():
        lat, feats = c["latents"].float(), window_features(c["audio"].float()[None], w)[0]
        t = lat.shape[0]
        centres = torch.arange(w + max_offset, t - w - max_offset)
        if len(centres) < 1:
            continue
        v = expert.embed_chunk_video(lat[None])[0, centres - w]  # (K, E)
        a = expert.embed_audio(feats)  # (T, E)
        cos = torch.stack([(v * a[centres + d]).sum(-1).mean() for d in range(-max_offset, max_offset + 1)])
        hits.append(float(cos.argmax().item() == max_offset))
        margins.append(float(cos[max_offset] - torch.cat([cos[:max_offset], cos[max_offset + 1 :]]).mean()))
    if not hits:
        raise ValueError(f"no clip is long enough ({2 * (w + max_offset) + 1} frames) for the offset search")
    return {"offset_accuracy": float(np.mean(hits)), "margin": float(np.mean(margins)), "clips": len(hits)}


def train_sync_expert(*, cache: dict[str, dict[str, Tensor]], config: SyncExpertConfig, steps: int,
                      clips_per_batch: int = 16, per_clip: int = 4, lr: float = 1e-3, seed: int = 0,
                      log_dir: str | Path | None = None) -> tuple[SyncExpert, list[float]]:
    """AdamW on :func:`info_nce`; returns the expert and its losses (``metrics.csv`` in ``log_dir``)."""
    torch.manual_seed(seed)
    expert = SyncExpert(config).train()
    sampler = WindowSampler(cache, window=config.window, per_clip=per_clip, seed=seed)
    opt = torch.optim.AdamW(expert.parameters(), lr=lr, weight_decay=0.01)
    losses: list[float] = []
    log = None
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log = (Path(log_dir) / "metrics.csv").open("w", newline="")
        writer = csv.writer(log)
        writer.writerow(["step", "loss"])
    bar = tqdm(range(steps), desc="sync expert", unit="step")
    for step in bar:
        for group in opt.param_groups:  # cosine decay
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = info_nce(expert, *sampler.batch(step=step, clips=clips_per_batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log is not None and (step + 1) % 10 == 0:
            writer.writerow([step + 1, round(float(np.mean(losses[-10:])), 5)])
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    if log is not None:
        log.close()
    return expert.eval().requires_grad_(False), losses


def main(argv: list[str] | None = None) -> None:
    from fada_rt.clips import read_manifest
    from fada_rt.config import AudioConfig, get_preset
    from train.cache import open_cache, read_index

    p = argparse.ArgumentParser(description="Train the latent lip-sync expert (a SyncNet over cached latents).")
    p.add_argument("--data", required=True, help="dataset folder (for its manifests)")
    p.add_argument("--manifest", default="A", help="training manifest: in-sync clips (the strict set A)")
    p.add_argument("--cache", required=True, help="latent cache folder (python -m train.cache)")
    p.add_argument("--out", required=True, help="folder for the expert (model.safetensors, config.json, metrics)")
    p.add_argument("--preset", default="tiny", help="model preset the cache was built for")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--clips-per-batch", type=int, default=16, help="clips per batch")
    p.add_argument("--per-clip", type=int, default=4, help="windows per clip (the hard negatives)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--heldout", type=int, default=200, help="clips of the manifest kept out for the offset scores (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    args = p.parse_args(argv)
    index = read_index(Path(args.cache))
    audio = AudioConfig(**index["audio"])
    model_config = get_preset(args.preset).replace(audio=audio)
    ids = read_manifest(args.data, args.manifest)
    if not 1 <= args.heldout < len(ids):
        raise ValueError(f"manifest {args.manifest} has {len(ids)} clips; --heldout {args.heldout} must be in [1, {len(ids) - 1}]")
    cache = open_cache(args.cache, config=model_config, clip_ids=ids)
    train_ids, held_ids = ids[: -args.heldout], ids[-args.heldout :]
    latent = next(iter(cache.values()))["latents"]
    config = SyncExpertConfig(latent_channels=latent.shape[1], latent_size=latent.shape[-1], window=audio.window,
                              audio_layers=audio.num_layers, audio_dim=audio.dim)
    expert, losses = train_sync_expert(cache={i: cache[i] for i in train_ids}, config=config, steps=args.steps,
                                       clips_per_batch=args.clips_per_batch, per_clip=args.per_clip, lr=args.lr,
                                       seed=args.seed, log_dir=args.out)
    scores = offset_scores(expert, {i: cache[i] for i in held_ids})
    save_sync_expert(expert, args.out, meta={"vae_sha256": index["vae_sha256"], "audio": index["audio"],
                                             "scores": scores, "train_clips": len(train_ids)})
    print(f"sync expert -> {args.out}: held-out offset accuracy {scores['offset_accuracy']:.3f}, "
          f"margin {scores['margin']:.3f} over {scores['clips']} clips; last loss {np.mean(losses[-50:]):.3f}")


if __name__ == "__main__":
    main()
