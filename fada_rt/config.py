"""Model configuration: frozen dataclasses and a preset registry.

Every checkpoint stores ``ModelConfig.to_dict()`` in its ``config.json`` and is rebuilt with
``ModelConfig.from_dict``; unknown keys anywhere in the tree are errors (a typo must not pass
silently). Presets:

* ``tiny``  — 64x64 frames, a small AutoencoderKL with f=4 (16x16x4 latents), the ``mel`` audio
  front-end, chunks of F=8 frames with M=2 motion frames. The model of the synthetic world and of
  the embedded default; sized to run in real time on two CPU cores.
* ``sd15``  — the paper's scale: SD1.5 UNet and VAE shapes, 512x512, wav2vec2-base features
  (12 layers x 768), 32 audio tokens of 768, F=16, M=4 (docs/design.md §2).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

AudioKind = Literal["mel", "wav2vec2"]
CFGMode = Literal["none", "time_embed", "layer_mlp", "layer_tokens"]
CFG_MODES: tuple[str, ...] = ("none", "time_embed", "layer_mlp", "layer_tokens")
Prediction = Literal["epsilon", "v"]
PREDICTIONS: tuple[str, ...] = ("epsilon", "v")


@dataclass(frozen=True)
class VAEConfig:
    """diffusers ``AutoencoderKL`` shape. ``len(block_out_channels) - 1`` downsamplings."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    scaling_factor: float = 0.18215

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the diffusers ``UNet2DConditionModel`` shared by ReferenceNet and the denoiser.

    ``attention_head_dim`` keeps diffusers' (historical) meaning for SD1.5: the number of heads.
    ``cross_attention_dim`` is the audio token width (SD1.5's text width, 768, initialises it).
    """

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    up_block_types: tuple[str, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    layers_per_block: int = 2
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    cross_attention_dim: int = 768
    latent_channels: int = 4


@dataclass(frozen=True)
class TemporalConfig:
    """Temporal attention over the frame axis (docs/design.md §2, item 5)."""

    num_heads: int = 8
    max_positions: int = 64


@dataclass(frozen=True)
class AudioConfig:
    """Audio front-end producing ``(T, L, D)`` features at the video frame rate.

    ``mel``: log-mel from a torch STFT; L = sub-frames per video frame (``samples_per_frame /
    hop_length``), D = ``n_mels``. ``wav2vec2``: transformers ``Wav2Vec2Model``; L = its
    transformer layers (``hidden_states[1:]``), D = its hidden size. Both are windowed by
    ``±window`` frames before AudioProj, giving ``(T, 2*window+1, L, D)``.
    """

    kind: AudioKind = "wav2vec2"
    sample_rate: int = 16000
    fps: int = 25
    window: int = 2
    num_layers: int = 12
    dim: int = 768
    # mel front-end only
    n_fft: int = 400
    hop_length: int = 160
    f_min: float = 40.0
    f_max: float = 7600.0
    log_offset: float = 5.0
    log_scale: float = 2.5
    # wav2vec2 only: zero-mean / unit-variance input normalisation (as its feature extractor does)
    normalize_waveform: bool = True

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def window_frames(self) -> int:
        return 2 * self.window + 1

    def __post_init__(self) -> None:
        if self.sample_rate % self.fps:
            raise ValueError(f"sample_rate {self.sample_rate} is not a multiple of fps {self.fps}")
        if self.kind == "mel":
            if self.samples_per_frame % self.hop_length:
                raise ValueError(
                    f"mel hop_length {self.hop_length} must divide samples per frame {self.samples_per_frame}"
                )
            if self.num_layers != self.samples_per_frame // self.hop_length:
                raise ValueError(
                    f"mel num_layers must be samples_per_frame / hop_length = "
                    f"{self.samples_per_frame // self.hop_length}, got {self.num_layers}"
                )


@dataclass(frozen=True)
class AudioProjConfig:
    """MLP from the windowed features to ``num_tokens`` tokens of ``cross_attention_dim``."""

    hidden_dim: int = 512
    num_tokens: int = 32


@dataclass(frozen=True)
class CFGConfig:
    """How a student is told the CFG scales (paper §3.3, docs/design.md §3.6; Table 4's variants).

    ``none`` (teacher / balanced student: 3 branches at inference), ``time_embed`` (w-condition:
    sinusoidal embedding of the scales added to the time embedding), ``layer_mlp`` (CFG layer fed
    with tokens from an MLP of the scales: no learnable basis tokens), ``layer_tokens`` (CFG layer
    fed with Eq. 10's ``Emb_cfg`` built from learnable tokens gamma_b, gamma_r, gamma_a).
    """

    mode: CFGMode = "none"
    num_tokens: int = 8
    embed_dim: int = 256

    def __post_init__(self) -> None:
        if self.mode not in CFG_MODES:
            raise ValueError(f"unknown cfg mode {self.mode!r}; expected one of {CFG_MODES}")

    @property
    def conditioned(self) -> bool:
        return self.mode != "none"

    @property
    def has_layer(self) -> bool:
        return self.mode in ("layer_mlp", "layer_tokens")


@dataclass(frozen=True)
class RolloutConfig:
    """How chunk after chunk is generated at run time: what a model was trained to be fed (docs/design.md §8).

    Each chunk's motion frames are the model's own previous output, so what it gets wrong is fed to the
    next chunk. ``motion_noise_step``: the motion latents are forward-noised to this training index before
    they condition a chunk (Hallo2's motion-frame noise; for a model trained with motion latents noised
    to ``U{0..N-1}``); 0 feeds them clean. ``noise_sharing``: the share rho of every frame's start noise
    that is common to all frames of the session, ``eps = sqrt(rho) shared + sqrt(1 - rho) own`` (PYoCo's
    mixed noise prior; for a model trained with it), so each frame's fine detail is not drawn on its own;
    0 draws every frame's noise independently. ``reference_sink``: the first of the ``M`` motion-frame slots
    always holds the portrait's latent and the other ``M - 1`` the last generated latents (a clean anchor in
    the temporal context, where the model already looks for detail; for a model trained with it).
    ``motion_anchor``: the motion latents are pulled towards the portrait's latent before they condition a
    chunk, ``ref + (1 - a) (m - ref)``: whatever the model got wrong in a chunk reaches the next one
    scaled by ``1 - a``, so errors cannot pile up chunk after chunk (re-anchoring; needs no training).
    """

    motion_noise_step: int = 0
    noise_sharing: float = 0.0
    reference_sink: bool = False
    motion_anchor: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.motion_noise_step < 1000:
            raise ValueError(f"motion_noise_step must be a training index in [0, 999], got {self.motion_noise_step}")
        if not 0.0 <= self.noise_sharing <= 1.0:
            raise ValueError(f"noise_sharing must be in [0, 1], got {self.noise_sharing}")
        if not 0.0 <= self.motion_anchor <= 1.0:
            raise ValueError(f"motion_anchor must be in [0, 1] (0: none, 1: the portrait alone), got {self.motion_anchor}")


@dataclass(frozen=True)
class CropConfig:
    """Where the face sits in the model's square frames: the face-aligned crop of docs/portraits.md.

    Run time (:func:`fada_rt.face.load_portrait`) and ``train.prepare`` cut crops with these numbers and
    the same code, so the model sees at run time the framing it was trained on.
    """

    eye_distance: float = 0.25  # between the two eye centres, as a fraction of the crop side
    eye_y: float = 0.42  # height of the eye line below the top edge, as a fraction of the side

    def __post_init__(self) -> None:
        if not 0.05 <= self.eye_distance <= 0.6 or not 0.1 <= self.eye_y <= 0.8:
            raise ValueError(f"crop eye_distance must be in [0.05, 0.6] and eye_y in [0.1, 0.8], got {self}")


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "sd15"
    resolution: int = 512
    num_frames: int = 16
    motion_frames: int = 4
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    audio_proj: AudioProjConfig = field(default_factory=AudioProjConfig)
    cfg: CFGConfig = field(default_factory=CFGConfig)
    #: What the denoising UNet's raw output means. Its ``forward`` always returns eps (the one
    #: denoiser interface); "v" (Salimans & Ho 2022) converts ``eps = sqrt(1 - abar) z + sqrt(abar) v``
    #: inside the network, so x0 errors at high noise are not amplified by ``1 / sqrt(abar)`` (14.6x
    #: at t = 1). "epsilon": SD1.5's own meaning (checkpoints without the key are epsilon).
    prediction: Prediction = "epsilon"
    #: (cfg_a, cfg_r) of Eq. 9 that guided samplers use for this model when the caller gives none: a
    #: property of trained weights (the shipped tiny ones are best at 1.5 / 1, the paper's SD1.5 at 6.5 / 2.5).
    #: None: the paper's §4.1 scales of the sampler. Set on a checkpoint with ``python -m
    #: fada_rt.checkpoint --set-guidance``.
    guidance_scales: tuple[float, float] | None = None
    #: how chunks are chained at run time (checkpoints without the key: clean motion frames, independent noise)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    #: the face framing of the training crops (checkpoints without the key: the default, real-video framing)
    crop: CropConfig = field(default_factory=CropConfig)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {PREDICTIONS}")
        if self.guidance_scales is not None and (
                len(self.guidance_scales) != 2 or not all(0.0 <= float(x) <= 20.0 for x in self.guidance_scales)):
            raise ValueError(f"guidance_scales must be (cfg_a, cfg_r) in [0, 20], got {self.guidance_scales!r}")
        f = self.vae.downsample_factor
        if self.resolution % (f * 2 ** (len(self.unet.block_out_channels) - 1)):
            raise ValueError(
                f"resolution {self.resolution} must be divisible by the VAE factor {f} times the UNet's "
                f"{2 ** (len(self.unet.block_out_channels) - 1)}x downsampling"
            )
        if self.vae.latent_channels != self.unet.latent_channels:
            raise ValueError("vae.latent_channels and unet.latent_channels differ")
        if self.num_frames < 1 or self.motion_frames < 1:
            raise ValueError("num_frames and motion_frames must be >= 1")
        if self.num_frames + self.motion_frames > self.temporal.max_positions:
            raise ValueError("num_frames + motion_frames exceeds temporal.max_positions")

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae.downsample_factor

    def with_cfg_mode(self, mode: str) -> ModelConfig:
        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, mode=mode))

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return dataclass_from_dict(cls, data, path="model")


def dataclass_from_dict(cls: type, data: Any, *, path: str) -> Any:
    """Build a (nested) frozen dataclass from plain JSON data; unknown keys raise."""
    if not isinstance(data, dict):
        raise TypeError(f"config at {path!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config keys at {path!r}: {unknown}; known keys: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, path=f"{path}.{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, *, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, path=path)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config at {path!r} must be a list, got {type(value).__name__}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}  # tuple[X, ...] or tuple[X, X]
        return tuple(_coerce(item, v, path=f"{path}[]") for v in value)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"config at {path!r} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or len(args) != 1:
            return value
        return _coerce(args[0], value, path=path)  # Optional[X]: a value is coerced as X
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise TypeError(f"config at {path!r} must be {hint.__name__}, got {value!r}")
    return value


def _tiny() -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        resolution=64,
        num_frames=8,
        motion_frames=2,
        vae=VAEConfig(
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            mid_block_add_attention=False,
            scaling_factor=1.0,
        ),
        unet=UNetConfig(
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            attention_head_dim=2,
            norm_num_groups=16,
            cross_attention_dim=64,
            latent_channels=4,
        ),
        temporal=TemporalConfig(num_heads=2, max_positions=32),
        audio=AudioConfig(kind="mel", num_layers=4, dim=32),
        audio_proj=AudioProjConfig(hidden_dim=128, num_tokens=8),
        cfg=CFGConfig(mode="none", num_tokens=4, embed_dim=64),
        prediction="v",  # trained from scratch: x0 at high noise must be learnt (README "Training")
        # the synthetic world's framing, measured with ``python -m train.face_template`` (docs/portraits.md)
        crop=CropConfig(eye_distance=0.223, eye_y=0.437),
    )


def _sd15() -> ModelConfig:
    return ModelConfig(preset="sd15")


PRESETS: dict[str, typing.Callable[[], ModelConfig]] = {"tiny": _tiny, "sd15": _sd15}


def get_preset(name: str) -> ModelConfig:
    """Return the model config of a registered preset (``tiny``, ``sd15``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(PRESETS)}")
    return PRESETS[name]()
