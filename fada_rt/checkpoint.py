"""Checkpoints: a folder with ``config.json`` and ``model.safetensors`` (docs/design.md §2).

``config.json`` holds the format tag, the role (``teacher`` / ``student``), the full
:class:`~fada_rt.config.ModelConfig` and free-form ``info`` (training step, command, metrics).
The model is rebuilt from that config and its weights are loaded with strict key and shape checks;
every problem is a :class:`CheckpointError` that names it. Nothing is unpickled.

Also here: initialising ReferenceNet, denoiser and VAE from a local SD1.5 diffusers folder
(``unet/``, ``vae/``), and the stand-alone VAE checkpoints of small presets (``train.vae``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fada_rt.config import ModelConfig, RolloutConfig, VAEConfig, dataclass_from_dict
from fada_rt.models.audio import Wav2Vec2Frontend, build_audio_frontend
from fada_rt.models.denoiser import DenoisingUNet
from fada_rt.models.fada import FadaModel
from fada_rt.models.reference_net import ReferenceNet
from fada_rt.models.tiny_decoder import TinyDecoder, TinyDecoderConfig
from fada_rt.models.unet import build_unet, unet_kwargs
from fada_rt.models.vae import VAE, autoencoder_kwargs

FORMAT = "fada-rt-model"
VAE_FORMAT = "fada-rt-vae"
DECODER_FORMAT = "fada-rt-tiny-decoder"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VAE_WEIGHTS_NAME = "vae.safetensors"
DECODER_WEIGHTS_NAME = "decoder.safetensors"


class CheckpointError(ValueError):
    """A checkpoint or weight folder that cannot be used, with what is wrong and what to do."""


# ---- strict state-dict loading ---------------------------------------------------------------


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``module`` requiring the exact same keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the weights do not fit this model ({len(missing)} missing keys {_head(missing)}, "
            f"{len(unexpected)} unexpected keys {_head(unexpected)}): they come from another preset, CFG mode or "
            f"model version; pass --checkpoint the folder they were saved in, whole"
        )
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensors have mismatched shapes: {_head(wrong)}")
    module.load_state_dict(state, strict=True)


def _head(items: list[str], n: int = 6) -> str:
    return str(items[:n])[:-1] + (", ...]" if len(items) > n else "]")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); re-save or re-download it") from err


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs {CONFIG_NAME} next to its weights")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def _check_folder(path: str | Path, *, weights: str = WEIGHTS_NAME) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist: pass --checkpoint a folder with "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME}, or leave it out for the shipped model")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; a checkpoint is a folder with {CONFIG_NAME} and {weights}")
    return folder


# ---- FADA model checkpoints ---------------------------------------------------------------------


def save_model(model: FadaModel, path: str | Path, *, role: str, info: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (fp32 or the model's dtype, contiguous)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "role": role,
              "model": model.config.to_dict(), "info": info or {}}
    if isinstance(model.audio_encoder, Wav2Vec2Frontend):  # its own shape travels with its weights
        config["wav2vec2"] = model.audio_encoder.model.config.to_dict()
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_model_config(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model config and the rest of ``config.json`` (role, info) without loading weights."""
    folder = _check_folder(path)
    raw = _read_json(folder / CONFIG_NAME)
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: not a fada-rt model checkpoint (format {raw.get('format')!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder}: checkpoint format version {raw.get('format_version')} is not "
                              f"supported (this fada-rt reads version {FORMAT_VERSION})")
    unknown = sorted(set(raw) - {"format", "format_version", "role", "model", "info", "wav2vec2"})
    if unknown:
        raise CheckpointError(f"{folder / CONFIG_NAME}: unknown keys {unknown}: written by another fada-rt version? "
                              "read it with that version, or remove the keys")
    try:
        config = ModelConfig.from_dict(raw["model"])
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{folder / CONFIG_NAME}: invalid model config: {err}") from err
    if (config.audio.kind == "wav2vec2") != ("wav2vec2" in raw):
        raise CheckpointError(f"{folder / CONFIG_NAME}: audio kind {config.audio.kind!r} but the wav2vec2 "
                              f"config is {'missing' if 'wav2vec2' not in raw else 'unexpected'}")
    return config, {"role": raw.get("role"), "info": raw.get("info", {}), "wav2vec2": raw.get("wav2vec2")}


def set_guidance_scales(path: str | Path, scales: tuple[float, float] | None) -> ModelConfig:
    """Make ``scales`` = (cfg_a, cfg_r) the checkpoint's default guidance (None: back to the paper's);
    rewrites ``config.json`` only (weights untouched) and returns the new config."""
    config, _ = read_model_config(path)  # validates the folder first
    return _rewrite_config(path, config.replace(
        guidance_scales=None if scales is None else (float(scales[0]), float(scales[1]))))


def set_rollout(path: str | Path, rollout: RolloutConfig) -> ModelConfig:
    """Make ``rollout`` (motion-frame noise step, noise sharing) what the runtime feeds this checkpoint;
    rewrites ``config.json`` only. Set what the model was trained for and measured with
    (``python -m benchmarks.long_run``)."""
    config, _ = read_model_config(path)
    return _rewrite_config(path, config.replace(rollout=rollout))


def rollout_with(rollout: RolloutConfig, pairs: list[str]) -> RolloutConfig:
    """``rollout`` with the ``KEY=VALUE`` pairs of the command line applied (typed and checked as config)."""
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set-rollout takes KEY=VALUE pairs, got {pair!r}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"--set-rollout {key}: {value!r} is not a number or true/false") from err
    return dataclass_from_dict(RolloutConfig, {**dataclasses.asdict(rollout), **changes}, path="rollout")


def _rewrite_config(path: str | Path, new: ModelConfig) -> ModelConfig:
    file = Path(path) / CONFIG_NAME
    raw = json.loads(file.read_text())
    raw["model"] = new.to_dict()
    file.write_text(json.dumps(raw, indent=2) + "\n")
    return new


def load_model(
    path: str | Path,
    *,
    preset: str | None = None,
    role: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[FadaModel, dict[str, Any]]:
    """Rebuild a model from its checkpoint folder; ``preset``/``role`` are checked when given."""
    folder = _check_folder(path)
    config, meta = read_model_config(folder)
    if preset is not None and config.preset != preset:
        raise CheckpointError(f"{folder} is a checkpoint of preset {config.preset!r}, but preset {preset!r} "
                              f"was asked for; pass a {preset} checkpoint or use --preset {config.preset}")
    if role is not None and meta["role"] != role:
        raise CheckpointError(f"{folder} holds a {meta['role']}, but a {role} was asked for")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing: the checkpoint folder has no weights; pass --checkpoint a "
                              f"whole checkpoint ({CONFIG_NAME} + {WEIGHTS_NAME})")
    audio_encoder = None
    if meta["wav2vec2"] is not None:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        w2v = Wav2Vec2Model(Wav2Vec2Config.from_dict(meta["wav2vec2"]))
        audio_encoder = build_audio_frontend(config.audio, w2v)
    model = FadaModel(config, audio_encoder=audio_encoder)
    load_strict(model, _read_safetensors(weights), source=str(weights))
    return model.to(device=device, dtype=dtype).eval(), meta


# ---- stand-alone VAE checkpoints (small presets) ----------------------------------------------


def save_vae(vae: VAE, path: str | Path, *, info: dict[str, Any] | None = None) -> Path:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in vae.state_dict().items()}, str(folder / VAE_WEIGHTS_NAME))
    config = {"format": VAE_FORMAT, "format_version": FORMAT_VERSION,
              "vae": {**vae.config.__dict__, "block_out_channels": list(vae.config.block_out_channels)},
              "info": info or {}}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_vae(path: str | Path, *, expect: VAEConfig | None = None) -> VAE:
    """Load a VAE checkpoint; with ``expect`` the architecture (all but the scaling factor) must match."""
    folder = _check_folder(path)
    raw = _read_json(folder / CONFIG_NAME)
    if raw.get("format") != VAE_FORMAT:
        raise CheckpointError(f"{folder}: not a fada-rt VAE checkpoint (format {raw.get('format')!r})")
    config = dataclass_from_dict(VAEConfig, raw["vae"], path="vae")
    if expect is not None:
        a = {**config.__dict__, "scaling_factor": 0}
        b = {**expect.__dict__, "scaling_factor": 0}
        if a != b:
            raise CheckpointError(f"{folder}: VAE architecture {config} does not match the preset's {expect}")
    vae = VAE(config)
    load_strict(vae, _read_safetensors(folder / VAE_WEIGHTS_NAME), source=str(folder / VAE_WEIGHTS_NAME))
    return vae.eval()


# ---- tiny decoders (train.tiny_decoder) --------------------------------------------------------------


def save_tiny_decoder(decoder: TinyDecoder, path: str | Path, *, vae: VAEConfig,
                      info: dict[str, Any] | None = None) -> Path:
    """``config.json`` (format, the decoder's and its VAE's config) + ``decoder.safetensors``."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in decoder.state_dict().items()},
              str(folder / DECODER_WEIGHTS_NAME))
    config = {"format": DECODER_FORMAT, "format_version": FORMAT_VERSION, "decoder": dataclasses.asdict(decoder.config),
              "vae": {**vae.__dict__, "block_out_channels": list(vae.block_out_channels)}, "info": info or {}}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_tiny_decoder(path: str | Path, *, expect: VAEConfig | None = None) -> TinyDecoder:
    """Load a tiny decoder; with ``expect`` it must have been distilled from a VAE of that config (scaling factor
    included: it decodes that VAE's scaled latents)."""
    folder = _check_folder(path, weights=DECODER_WEIGHTS_NAME)
    raw = _read_json(folder / CONFIG_NAME)
    if raw.get("format") != DECODER_FORMAT:
        raise CheckpointError(f"{folder}: not a fada-rt tiny decoder (format {raw.get('format')!r}); make one with "
                              "python -m train.tiny_decoder")
    unknown = sorted(set(raw) - {"format", "format_version", "decoder", "vae", "info"})
    if unknown:
        raise CheckpointError(f"{folder}/config.json: unknown keys {unknown}")
    config = dataclass_from_dict(TinyDecoderConfig, raw["decoder"], path="decoder")
    vae = dataclass_from_dict(VAEConfig, raw["vae"], path="vae")
    if expect is not None and vae != expect:
        raise CheckpointError(f"{folder}: this decoder was distilled from the VAE {vae}, the model's is {expect}: "
                              "distil one from this model's VAE (python -m train.tiny_decoder)")
    decoder = TinyDecoder(config)
    load_strict(decoder, _read_safetensors(folder / DECODER_WEIGHTS_NAME), source=str(folder / DECODER_WEIGHTS_NAME))
    return decoder.eval()


# ---- SD1.5 initialisation -----------------------------------------------------------------------

_UNET_KEYS = ("down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
              "attention_head_dim", "cross_attention_dim", "in_channels", "out_channels", "norm_num_groups")
_VAE_KEYS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups")


def _component_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    for fname in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / fname).is_file():
            return _read_safetensors(folder / fname)
    binary = folder / "diffusion_pytorch_model.bin"
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for corrupt or pickled-code files
            raise CheckpointError(f"{binary}: not loadable as plain tensors ({err})") from err
    raise CheckpointError(f"{folder}: no {name} weights (diffusion_pytorch_model.safetensors)")


def _check_component_config(folder: Path, expected: dict[str, Any], keys: tuple[str, ...], name: str) -> None:
    raw = _read_json(folder / "config.json")
    diffs = []
    for key in keys:
        have, want = raw.get(key), expected[key]
        if isinstance(have, list):
            have = tuple(have)
        if have != (tuple(want) if isinstance(want, (list, tuple)) else want):
            diffs.append(f"{key}: folder {have!r} vs preset {want!r}")
    if diffs:
        raise CheckpointError(f"{folder}: the {name} does not have the preset's shape: {'; '.join(diffs)}")


def init_from_sd15(path: str | Path, config: ModelConfig, *, wav2vec2: str | Path | None = None) -> FadaModel:
    """A teacher whose ReferenceNet and denoiser start from a local SD1.5 diffusers folder.

    ``path/unet`` loads strictly into both UNets (its text cross-attention initialises the audio
    attention); ``path/vae`` into the VAE; the FADA layers are added after, zero-initialised where
    docs/design.md says so. ``wav2vec2``: a local transformers folder for the wav2vec2 front-end.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"SD1.5 folder {root} does not exist (expected a diffusers folder with unet/ and vae/)")
    for sub in ("unet", "vae"):
        if not (root / sub).is_dir():
            raise CheckpointError(f"{root} has no {sub}/ folder: expected the diffusers layout unet/, vae/")
    _check_component_config(root / "unet", unet_kwargs(config), _UNET_KEYS, "UNet")
    _check_component_config(root / "vae", autoencoder_kwargs(config.vae), _VAE_KEYS, "VAE")
    unet_state = _component_weights(root / "unet", "UNet")
    unets = []
    for _ in range(2):
        unet = build_unet(config)
        load_strict(unet, unet_state, source=str(root / "unet"))
        unets.append(unet)
    vae = VAE(config.vae)
    load_strict(vae.model, _component_weights(root / "vae", "VAE"), source=str(root / "vae"))
    audio_encoder = None
    if wav2vec2 is not None:
        audio_encoder = build_audio_frontend(config.audio, load_wav2vec2(wav2vec2))
    return FadaModel(config, vae=vae, reference_net=ReferenceNet(config, unets[0]),
                     denoiser=DenoisingUNet(config, unets[1]), audio_encoder=audio_encoder)


def load_wav2vec2(path: str | Path) -> nn.Module:
    """A transformers ``Wav2Vec2Model`` from a local folder (config.json + safetensors)."""
    from transformers import Wav2Vec2Model

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no wav2vec2 config.json (expected a local transformers folder)")
    return Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Show a fada-rt checkpoint, or set its default guidance scales.")
    p.add_argument("checkpoint", help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--set-guidance", nargs=2, type=float, metavar=("CFG_A", "CFG_R"), default=None,
                   help="make these Eq. 9 scales the default of guided samplers for this checkpoint "
                        "(measure first: python -m benchmarks.guidance_sweep)")
    p.add_argument("--clear-guidance", action="store_true", help="back to the paper's scales (§4.1)")
    p.add_argument("--set-rollout", nargs="+", default=None, metavar="KEY=VALUE",
                   help="how the runtime chains this model's chunks (fada_rt.config.RolloutConfig), e.g. "
                        "motion_anchor=0.5 noise_sharing=1; keys not given keep their value. Set what the model was "
                        "trained for and measured with (python -m benchmarks.long_run)")
    args = p.parse_args(argv)
    if args.set_guidance is not None and args.clear_guidance:
        p.error("give --set-guidance or --clear-guidance, not both")
    try:
        if args.set_guidance is not None or args.clear_guidance:
            set_guidance_scales(args.checkpoint, None if args.clear_guidance else tuple(args.set_guidance))
        if args.set_rollout is not None:
            set_rollout(args.checkpoint, rollout_with(read_model_config(args.checkpoint)[0].rollout, args.set_rollout))
    except (TypeError, ValueError) as err:
        p.error(str(err))
    config, meta = read_model_config(args.checkpoint)
    scales, ro = config.guidance_scales, config.rollout
    guidance = "the paper's" if scales is None else f"{scales[0]:g} / {scales[1]:g}"
    print(f"{args.checkpoint}: {meta['role']}, preset {config.preset}, cfg mode {config.cfg.mode}, "
          f"prediction {config.prediction}, step {meta['info'].get('step')}, default guidance {guidance}, "
          f"rollout {dataclasses.asdict(ro)}")


if __name__ == "__main__":
    main()
