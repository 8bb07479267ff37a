"""Augmented audio in the latent cache, drawn by the training chunks, and worlds merged into one training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from fada_rt.clips import read_manifest
from train.cache import build_synthetic_cache, merge_worlds, open_cache, read_index, weights_digest
from train.data import ChunkSampler


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("variants")
    model = make_tiny_model(seed=0)
    for name, first, variants in (("a", 0, 2), ("b", 100, 0)):
        build_synthetic_cache(data=root / f"data-{name}", out=root / f"cache-{name}", vae=model.vae,
                              config=model.config, clips=4, seed=3, tier="B", first_index=first,
                              audio_variants=variants)
    return root, model


def _open(folder: Path, model) -> dict[str, dict[str, torch.Tensor]]:
    return open_cache(folder, config=model.config, vae_digest=weights_digest(model.vae))


def test_cache_holds_deterministic_augmented_copies(worlds, tmp_path: Path) -> None:
    root, model = worlds
    entries = _open(root / "cache-a", model)
    assert read_index(root / "cache-a")["audio_variants"] == 2
    for entry in entries.values():
        clean, aug = entry["audio"], entry["audio_aug"]
        assert aug.shape == (2, *clean.shape) and aug.dtype == torch.float16
        for k in range(2):  # each copy is changed audio, and the two copies differ
            assert (aug[k].float() - clean.float()).abs().mean() > 1e-3
        assert not torch.equal(aug[0], aug[1])
    # the copies are seeded by the clip id: a rebuild gives the same features
    build_synthetic_cache(data=tmp_path / "data", out=tmp_path / "cache", vae=model.vae, config=model.config,
                          clips=4, seed=3, tier="B", audio_variants=2)
    again = _open(tmp_path / "cache", model)
    assert all(torch.equal(again[c]["audio_aug"], entries[c]["audio_aug"]) for c in entries)
    assert "audio_aug" not in next(iter(_open(root / "cache-b", model).values()))


def test_chunks_draw_augmented_audio_only_when_asked(worlds) -> None:
    root, model = worlds
    cache = _open(root / "cache-a", model)
    plain = ChunkSampler(cache, config=model.config, seed=1).batch(step=0, batch_size=6)
    off = ChunkSampler(cache, config=model.config, seed=1, audio_augment=0.0).batch(step=0, batch_size=6)
    assert torch.equal(plain.audio, off.audio)  # the default draws nothing more
    on = ChunkSampler(cache, config=model.config, seed=1, audio_augment=1.0).batch(step=0, batch_size=6)
    assert on.audio.shape == plain.audio.shape
    for i, (cid, start) in enumerate(zip(on.clip_ids, on.starts)):
        clean = ChunkSampler(cache, config=model.config, seed=1).chunk(cid, np.random.default_rng(0), start)[3]
        assert not torch.equal(on.audio[i], clean.float())  # every chunk's audio is an augmented copy
    with pytest.raises(ValueError, match="--audio-variants"):
        ChunkSampler(_open(root / "cache-b", model), config=model.config, seed=1, audio_augment=0.5)
    with pytest.raises(ValueError, match="audio_augment"):
        ChunkSampler(cache, config=model.config, seed=1, audio_augment=1.5)


def test_merged_worlds(worlds, tmp_path: Path) -> None:
    root, model = worlds
    merge_worlds(sources=[(root / "data-a", root / "cache-a"), (root / "data-b", root / "cache-b")],
                 data_out=tmp_path / "data", cache_out=tmp_path / "cache")
    for name in ("A", "B"):
        assert read_manifest(tmp_path / "data", name) == sorted(read_manifest(root / "data-a", name)
                                                                + read_manifest(root / "data-b", name))
    merged = _open(tmp_path / "cache", model)
    a, b = _open(root / "cache-a", model), _open(root / "cache-b", model)
    assert sorted(merged) == sorted([*a, *b]) and len(merged) == 8
    assert all(torch.equal(merged[c]["latents"], a[c]["latents"]) for c in a)
    assert (tmp_path / "data" / "labels" / f"{next(iter(b))}.json").is_file()
    with pytest.raises(FileExistsError):
        merge_worlds(sources=[(root / "data-a", root / "cache-a")], data_out=tmp_path / "data",
                     cache_out=tmp_path / "cache")
    with pytest.raises(ValueError, match="share clip ids"):
        merge_worlds(sources=[(root / "data-a", root / "cache-a"), (root / "data-a", root / "cache-a")],
                     data_out=tmp_path / "d2", cache_out=tmp_path / "c2")
