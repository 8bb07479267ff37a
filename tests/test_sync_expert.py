"""Latent lip-sync expert (train/sync_expert.py): learning, offset search, round trip, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from fada_rt.models.audio import window_features
from train.sync_expert import (
    SyncExpert,
    SyncExpertConfig,
    WindowSampler,
    load_sync_expert,
    offset_scores,
    save_sync_expert,
    train_sync_expert,
)

SMALL = SyncExpertConfig(latent_size=8, audio_layers=2, audio_dim=6, channels=(16, 32), audio_hidden=32, embed_dim=16)


def toy_cache(n: int, *, seed: int, frames: int = 40) -> dict[str, dict[str, torch.Tensor]]:
    """Clips whose lower latent half is a fixed function of each frame's audio (a "mouth"), the upper
    half a per-clip constant (a "face"): in sync by construction."""
    gen = torch.Generator().manual_seed(1234)  # the same world for every call
    mix = torch.randn(2 * 6, 4 * 4 * 8, generator=gen) / 3.0
    clip_gen = torch.Generator().manual_seed(seed)
    cache = {}
    for i in range(n):
        audio = torch.randn(frames, 2, 6, generator=clip_gen)
        mouth = torch.tanh(audio.flatten(1) @ mix).view(frames, 4, 4, 8)  # (T, C, 4, w)
        face = torch.randn(1, 4, 4, 8, generator=clip_gen).expand(frames, -1, -1, -1)
        latents = torch.cat([face, mouth], dim=2) + 0.05 * torch.randn(frames, 4, 8, 8, generator=clip_gen)
        cache[f"{seed}-{i}"] = {"latents": latents.half(), "audio": audio.half()}
    return cache


def test_the_expert_learns_to_find_the_offset() -> None:
    untrained = SyncExpert(SMALL).eval()
    held = toy_cache(24, seed=1)
    before = offset_scores(untrained, held, max_offset=4)
    expert, losses = train_sync_expert(cache=toy_cache(64, seed=0), config=SMALL, steps=150, clips_per_batch=8,
                                       per_clip=4, lr=3e-3)
    after = offset_scores(expert, held, max_offset=4)
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    assert after["offset_accuracy"] >= 0.9 and after["margin"] > 0.3, after
    assert before["offset_accuracy"] < 0.5 and abs(before["margin"]) < 0.1, before
    assert after["clips"] == 24


def test_chunk_cosines_are_the_windows_cosines() -> None:
    torch.manual_seed(0)
    expert = SyncExpert(SMALL).eval()
    latents, feats = torch.randn(2, 7, 4, 8, 8), torch.randn(2, 7, 2, 6)
    windows = window_features(feats, SMALL.window)  # (B, F, 5, L, D)
    with torch.no_grad():
        cos = expert.chunk_cosines(latents, windows)
        k = 4  # centre frame 4 of clip 1: frames 2..6
        v = expert.embed_video(latents[1:, k - 2 : k + 3])
        a = expert.embed_audio(windows[1:, k])
    assert cos.shape == (2, 3)
    assert cos[1, k - 2].item() == pytest.approx((v * a).sum().item(), abs=1e-6)
    assert v.norm().item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        same = expert.chunk_video_cosines(latents, latents)
        other = expert.chunk_video_cosines(latents, latents.flip(0))
        v2 = expert.embed_video(latents[:1, k - 2 : k + 3])
    assert torch.allclose(same, torch.ones(2, 3), atol=1e-5)
    assert other[1, k - 2].item() == pytest.approx((v * v2).sum().item(), abs=1e-6)
    with pytest.raises(ValueError, match="no full 5-frame window"):
        expert.chunk_cosines(latents[:, :4], windows[:, :4])


def test_window_sampler_keeps_one_clips_windows_apart() -> None:
    cache = toy_cache(3, seed=2, frames=30)
    sampler = WindowSampler(cache, window=2, per_clip=4, seed=0)
    video, audio = sampler.batch(step=3, clips=2)
    assert video.shape == (8, 5, 4, 8, 8) and audio.shape == (8, 5, 2, 6)
    # the four windows of one clip: the audio centre frames are >= 5 frames apart
    feats = {cid: c["audio"].float() for cid, c in cache.items()}
    centres = []
    for row in audio[:4]:
        k = next(k for f in feats.values() for k in range(30) if torch.equal(f[k], row[2]))
        centres.append(k)
    assert all(b - a >= 5 for a, b in itertools.pairwise(centres)), centres
    with pytest.raises(ValueError, match="frames 4 separate windows need"):
        WindowSampler(toy_cache(2, seed=3, frames=20), window=2, per_clip=4, seed=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    expert = SyncExpert(SMALL).eval()
    save_sync_expert(expert, tmp_path / "e", meta={"vae_sha256": "abc", "audio": {"kind": "mel"}})
    loaded, meta = load_sync_expert(tmp_path / "e")
    latents, windows = torch.randn(1, 6, 4, 8, 8), torch.randn(1, 6, 5, 2, 6)
    assert torch.equal(loaded.chunk_cosines(latents, windows), expert.chunk_cosines(latents, windows).detach())
    assert meta == {"vae_sha256": "abc", "audio": {"kind": "mel"}}
    assert not any(p.requires_grad for p in loaded.parameters())
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    cfg["config"]["depth"] = 3
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown sync-expert config keys"):
        load_sync_expert(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match=r"python -m train\.sync_expert"):
        load_sync_expert(tmp_path / "missing")
