"""The latent cache: the in-memory synthetic world caches exactly what its written clip files cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from fada_rt.clips import read_manifest, read_wav, write_wav
from train.cache import build_cache, build_synthetic_cache, open_cache, read_index, weights_digest
from train.cache import main as cache_main
from train.synthetic.dataset import generate_dataset

CLIPS, SEED = 8, 5


@pytest.fixture(scope="module")
def from_files(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cache")
    model = make_tiny_model(seed=0)
    generate_dataset(out=root / "data", clips=CLIPS, size=64, tier="B", seed=SEED)
    build_cache(data=root / "data", out=root / "cache", vae=model.vae, config=model.config)
    return root, model


def _entries(folder: Path, model) -> dict[str, dict[str, torch.Tensor]]:
    return open_cache(folder, config=model.config, vae_digest=weights_digest(model.vae))


def test_pcm16_round_trip_equals_the_wav_files(tmp_path: Path) -> None:
    from fada_rt.clips import pcm16_round_trip

    audio = np.random.default_rng(0).uniform(-1.2, 1.2, 1000).astype(np.float32)  # some samples clip
    write_wav(tmp_path / "a.wav", audio)
    assert np.array_equal(pcm16_round_trip(audio), read_wav(tmp_path / "a.wav"))
    assert pcm16_round_trip(audio).dtype == np.float32


def test_synthetic_cache_equals_the_cache_of_the_written_clips(from_files, tmp_path: Path) -> None:
    root, model = from_files
    build_synthetic_cache(data=tmp_path / "data", out=tmp_path / "cache", vae=model.vae, config=model.config,
                          clips=CLIPS, seed=SEED, tier="B")
    files, memory = _entries(root / "cache", model), _entries(tmp_path / "cache", model)
    assert sorted(files) == sorted(memory) and len(files) == CLIPS
    for cid in files:
        for key in ("latents", "audio"):
            assert torch.equal(files[cid][key], memory[cid][key]), (cid, key)
    assert read_index(root / "cache") == read_index(tmp_path / "cache")
    for manifest in ("A", "B"):
        assert read_manifest(root / "data", manifest) == read_manifest(tmp_path / "data", manifest)
    assert not (tmp_path / "data" / "clips").exists()
    for cid in files:  # labels (what distillation's per-sample log reads) are the same too
        assert (root / "data" / "labels" / f"{cid}.json").read_text() == \
            (tmp_path / "data" / "labels" / f"{cid}.json").read_text()
    world = json.loads((tmp_path / "data" / "world.json").read_text())
    assert world["clip_files"] is False
    assert world["kinds"] == json.loads((root / "data" / "world.json").read_text())["kinds"]


def test_synthetic_cache_of_manifest_a_renders_only_the_clean_clips(from_files, tmp_path: Path) -> None:
    root, model = from_files
    clean = read_manifest(root / "data", "A")
    assert 0 < len(clean) < CLIPS  # the seed gives a mixed world, so the filter is exercised
    build_synthetic_cache(data=tmp_path / "data", out=tmp_path / "cache", vae=model.vae, config=model.config,
                          clips=CLIPS, seed=SEED, tier="B", manifest="A", workers=2)
    memory, files = _entries(tmp_path / "cache", model), _entries(root / "cache", model)
    assert sorted(memory) == sorted(clean)
    assert all(torch.equal(memory[c]["latents"], files[c]["latents"]) for c in clean)
    assert read_manifest(tmp_path / "data", "A") == clean
    assert not (tmp_path / "data" / "manifest_B.txt").exists()  # B would be incomplete


def test_synthetic_cache_refusals(from_files, tmp_path: Path) -> None:
    root, model = from_files
    kw = dict(vae=model.vae, config=model.config, clips=2)
    with pytest.raises(FileExistsError, match="holds clip files"):
        build_synthetic_cache(data=root / "data", out=tmp_path / "c1", **kw)
    with pytest.raises(ValueError, match="tier-B world"):
        build_synthetic_cache(data=tmp_path / "d", out=tmp_path / "c2", tier="A", manifest="B", **kw)
    with pytest.raises(FileExistsError, match="already holds a cache"):
        build_synthetic_cache(data=tmp_path / "d", out=root / "cache", **kw)
    with pytest.raises(SystemExit):  # world options without --synthetic
        cache_main(["--data", str(root / "data"), "--vae", "unused", "--out", str(tmp_path / "c3"), "--seed", "3"])
