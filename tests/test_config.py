"""Config presets, strict (de)serialisation and the sd15 parameter count."""

from __future__ import annotations

import json

import pytest
import torch

from fada_rt.config import ModelConfig, get_preset
from fada_rt.models.fada import FadaModel


@pytest.mark.parametrize("name", ["tiny", "sd15"])
def test_preset_round_trip(name: str) -> None:
    config = get_preset(name)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_preset_values() -> None:
    tiny, sd15 = get_preset("tiny"), get_preset("sd15")
    assert (tiny.resolution, tiny.latent_size, tiny.num_frames, tiny.audio.kind) == (64, 16, 8, "mel")
    assert tiny.vae.downsample_factor == 4
    assert (sd15.resolution, sd15.latent_size, sd15.num_frames, sd15.motion_frames) == (512, 64, 16, 4)
    assert (sd15.audio.kind, sd15.audio.num_layers, sd15.audio.dim) == ("wav2vec2", 12, 768)
    assert (sd15.audio_proj.num_tokens, sd15.unet.cross_attention_dim, sd15.vae.scaling_factor) == (32, 768, 0.18215)
    with pytest.raises(ValueError, match="unknown preset 'sd21'"):
        get_preset("sd21")


def test_unknown_and_mistyped_keys_are_errors() -> None:
    data = get_preset("tiny").to_dict()
    data["unet"]["block_out_chanels"] = [32, 64]
    with pytest.raises(ValueError, match=r"unknown config keys at 'model.unet': \['block_out_chanels'\]"):
        ModelConfig.from_dict(data)
    data = get_preset("tiny").to_dict()
    data["num_frames"] = "8"
    with pytest.raises(TypeError, match=r"model\.num_frames"):
        ModelConfig.from_dict(data)
    data = get_preset("tiny").to_dict()
    data["cfg"]["mode"] = "tokens"
    with pytest.raises(ValueError, match=r"model\.cfg\.mode"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="divisible"):
        get_preset("tiny").replace(resolution=70)


def test_sd15_builds_and_reports_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    config = get_preset("sd15")
    with torch.device("meta"):
        model = FadaModel(config)

    def count(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if not any(s in n for s in skip))

    sd_unet = count(model.denoiser.unet, skip=(".temporal.",))
    added_temporal = count(model.denoiser.unet) - sd_unet
    counts = {
        "denoiser (SD1.5 UNet)": sd_unet,
        "denoiser temporal layers": added_temporal,
        "reference_net": count(model.reference_net),
        "vae": count(model.vae),
        "audio_proj": count(model.audio_proj),
        "wav2vec2": count(model.audio_encoder),
        "total": count(model),
    }
    assert sd_unet == 859_520_964  # SD1.5's UNet, exactly
    assert counts["reference_net"] == 859_520_964
    assert counts["vae"] == 83_653_863  # SD1.5's AutoencoderKL
    assert 90e6 < counts["wav2vec2"] < 100e6  # wav2vec2-base
    assert 0 < added_temporal < 200e6
    student = model.make_student("layer_tokens")
    counts["student CFG layers + tokens"] = count(student) - counts["total"]
    assert 0 < counts["student CFG layers + tokens"] < 100e6
    with capsys.disabled():
        print("\nsd15 parameter counts:")
        for name, n in counts.items():
            print(f"  {name:30s} {n / 1e6:9.2f} M")
