"""Checkpoint folders: exact round trips, SD1.5-layout initialisation, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model, make_wav2vec2_model, random_chunk, randomize_zero_init
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from fada_rt.checkpoint import (
    CheckpointError,
    init_from_sd15,
    load_model,
    load_vae,
    read_model_config,
    save_model,
    save_vae,
)
from fada_rt.config import get_preset
from fada_rt.models.unet import build_unet
from fada_rt.models.vae import autoencoder_kwargs


def _outputs(model, cfg=None):
    z, t, cond = random_chunk(model)
    with torch.no_grad():
        return model.bind(cond)(z, t, branches=("a",) if cfg is not None else ("a", "r", "b"), cfg=cfg)


@pytest.mark.parametrize("mode", ["none", "layer_tokens"])
def test_round_trip_is_exact(tmp_path: Path, mode: str) -> None:
    model = make_tiny_model(seed=11).make_student(mode)
    randomize_zero_init(model)
    save_model(model, tmp_path / "ckpt", role="student", info={"step": 7})
    loaded, meta = load_model(tmp_path / "ckpt", preset="tiny", role="student")
    assert meta["info"] == {"step": 7} and loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = torch.tensor([[6.5, 2.0]]) if mode != "none" else None
    assert torch.equal(_outputs(model, cfg), _outputs(loaded, cfg))


def test_wrong_preset_role_and_missing_folder(tmp_path: Path) -> None:
    save_model(make_tiny_model(), tmp_path / "t", role="teacher")
    with pytest.raises(CheckpointError, match="preset 'tiny', but preset 'sd15'"):
        load_model(tmp_path / "t", preset="sd15")
    with pytest.raises(CheckpointError, match="holds a teacher, but a student"):
        load_model(tmp_path / "t", role="student")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_model(tmp_path)


def test_corrupt_or_mismatched_checkpoint(tmp_path: Path) -> None:
    folder = save_model(make_tiny_model(), tmp_path / "c", role="teacher")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(folder)

    # weights of a student in a teacher-config folder: keys do not fit
    student = make_tiny_model().make_student("layer_tokens")
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(weights))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_model(folder)

    # a config edited to another width: shapes do not fit
    save_model(make_tiny_model(), tmp_path / "d", role="teacher")
    raw = json.loads((tmp_path / "d" / "config.json").read_text())
    raw["model"]["audio_proj"]["hidden_dim"] = 96
    (tmp_path / "d" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="mismatched shapes"):
        load_model(tmp_path / "d")
    raw["model"]["audio_proj"]["hidden"] = 96
    (tmp_path / "d" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="unknown config keys"):
        read_model_config(tmp_path / "d")


def _write_sd_folder(root: Path, config, *, seed: int = 0) -> tuple[dict, dict]:
    """An SD1.5-layout diffusers folder (unet/, vae/) with random weights of the preset's shape."""
    torch.manual_seed(seed)
    unet = build_unet(config)
    vae = AutoencoderKL(**autoencoder_kwargs(config.vae))
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    return unet.state_dict(), vae.state_dict()


def test_init_from_sd15_layout_loads_strictly(tmp_path: Path) -> None:
    config = get_preset("tiny")
    unet_state, vae_state = _write_sd_folder(tmp_path / "sd", config)
    model = init_from_sd15(tmp_path / "sd", config)
    for net in (model.reference_net.unet, model.denoiser.unet):
        state = net.state_dict()
        assert all(torch.equal(state[k], v) for k, v in unet_state.items())
    assert all(torch.equal(model.vae.model.state_dict()[k], v) for k, v in vae_state.items())
    # the audio attention starts from SD's text cross-attention
    blk = model.denoiser.blocks[0]
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert torch.equal(blk.attn2.to_k.weight, unet_state[key])
    assert torch.isfinite(_outputs(model)).all()


def test_init_from_sd15_errors(tmp_path: Path) -> None:
    config = get_preset("tiny")
    with pytest.raises(CheckpointError, match="does not exist"):
        init_from_sd15(tmp_path / "missing", config)
    (tmp_path / "flat").mkdir()
    with pytest.raises(CheckpointError, match="no unet/ folder"):
        init_from_sd15(tmp_path / "flat", config)

    _write_sd_folder(tmp_path / "wide", config.replace(unet=config.unet.__class__(
        **{**config.unet.__dict__, "block_out_channels": (48, 64)})))
    with pytest.raises(CheckpointError, match=r"block_out_channels: folder \(48, 64\) vs preset \(32, 64\)"):
        init_from_sd15(tmp_path / "wide", config)

    _write_sd_folder(tmp_path / "bad", config)
    weights = tmp_path / "bad" / "unet" / "diffusion_pytorch_model.safetensors"
    state = {k: v for k, v in build_unet(config).state_dict().items() if "conv_in" not in k}
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"2 missing keys \['conv_in.bias', 'conv_in.weight'\]"):
        init_from_sd15(tmp_path / "bad", config)


def test_vae_checkpoint_round_trip(tmp_path: Path) -> None:
    model = make_tiny_model()
    save_vae(model.vae, tmp_path / "vae")
    vae = load_vae(tmp_path / "vae", expect=model.config.vae)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.encode(images), model.vae.encode(images))
    with pytest.raises(CheckpointError, match="does not match the preset"):
        load_vae(tmp_path / "vae", expect=get_preset("sd15").vae)


def test_wav2vec2_model_round_trip(tmp_path: Path) -> None:
    """A wav2vec2 front-end travels inside the checkpoint, with its transformers config."""
    model = make_wav2vec2_model(seed=0)
    save_model(model, tmp_path / "w", role="teacher")
    loaded, _ = load_model(tmp_path / "w")
    wave = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        assert torch.equal(model.audio_features(wave), loaded.audio_features(wave))
