"""Declarative specs of the exported graphs (docs/design.md §5), shared by ``fada_rt/export/`` and the runtime.

One :class:`GraphSpec` per graph says its input and output names, shapes and dtypes, its static
row count and, where a dimension must stay dynamic, the TensorRT profile of that dimension. The
exporter traces the torch model against these specs; the onnxruntime and TensorRT backends feed
the graphs by the same names. Shapes come from the model config alone (no torch model needed).

Graphs (``GRAPH_NAMES``):

* ``denoiser`` — one static batch per profile: 1 row for a CFG-distilled ("fast") student, which
  runs branch "a" with the ``cfg`` scales as input; 3 rows for a teacher or balanced student,
  branches a, r, b in one forward with a ``ref_mask`` input (False drops the reference).
  Inputs: latents, a timestep per frame (B, F), audio tokens, per-layer reference K and V, per-layer motion
  features. The frame count F is static: the rolling sampler (frames in flight, 1..N of them) runs on torch.
* ``reference_encoder`` — ONE graph for both ReferenceNet uses, so its weights exist once on disk
  and on the GPU: clean latents (M, C, h, w) -> per-layer features (the motion-frame use, per
  chunk) and per-layer K/V through the denoiser's attn1 ``to_k``/``to_v`` (the reference use,
  once per avatar). Its static row count is M, the per-chunk hot path; the once-per-avatar
  reference call pads its single latent to M rows (M - 1 wasted ReferenceNet rows once per avatar;
  the per-chunk call computes K/V it does not use: two projections per layer, ~0.1% of a chunk).
* ``vae_encoder`` (1 image -> scaled posterior-mean latent), ``vae_decoder`` (F latents -> F images
  clamped to [-1, 1]), ``audio_proj`` (F windows -> F x N_audio tokens).
* ``wav2vec2`` (wav2vec2 presets only) — normalised 16 kHz waveform (1, S) -> all transformer
  layers at 50 Hz (1, T50, L, D). S is dynamic (profile ``samples``); the normalisation, padding
  and 50 Hz -> 25 fps resampling around it have no weights and stay in torch.

Every graph's rows are independent (per-sample norms, attention within a clip), so a backend runs
any number of rows by splitting along axis 0 into pieces of ``batch`` and padding the last piece.
Graph inputs and outputs are float32 (and bool) at every precision: an fp16 graph casts inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from fada_rt.config import ModelConfig

#: The ONNX opset the graphs are exported at (``python -m fada_rt.export --opset``).
OPSET = 17

GRAPH_NAMES: tuple[str, ...] = (
    "denoiser",
    "reference_encoder",
    "vae_encoder",
    "vae_decoder",
    "audio_proj",
    "wav2vec2",
)
DTYPES = ("float32", "bool")
#: wav2vec2's conv stack needs at least 400 samples; the profile's ceiling is 30 s of audio.
WAV2VEC2_MIN_SAMPLES = 400
WAV2VEC2_MAX_SAMPLES = 30 * 16000
#: Inputs that carry the scalar conditions (kept in fp32 with what they feed, fada_rt/export/fp16.py).
CONDITION_INPUTS: tuple[str, ...] = ("timestep", "cfg")

Dim = int | str  # a str names a dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        _check_keys(data, {"name", "shape", "dtype"}, "tensor spec")
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


@dataclass(frozen=True)
class DynamicDim:
    """A dynamic dimension and its TensorRT optimisation profile (min <= opt <= max)."""

    name: str
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"dynamic dim {self.name!r}: need 1 <= min <= opt <= max, got {self}")


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: names, shapes and dtypes of its inputs and outputs.

    ``batch`` is the static number of rows along axis 0 of every input and output. ``dynamic``
    lists the dynamic input dimensions with their profiles; an output dimension named by a string
    that is not in ``dynamic`` is derived by the graph (e.g. wav2vec2's 50 Hz frame count).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: int
    dynamic: tuple[DynamicDim, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"graph {self.name!r}: tensor names repeat: {names}")
        for t in (*self.inputs, *self.outputs):
            if not t.shape or t.shape[0] != self.batch:
                raise ValueError(f"graph {self.name!r}: {t.name} must have {self.batch} rows on axis 0, got {t.shape}")
        declared = {d.name for d in self.dynamic}
        used = {d for t in self.inputs for d in t.shape if isinstance(d, str)}
        if used != declared:
            raise ValueError(f"graph {self.name!r}: dynamic input dims {sorted(used)} != declared {sorted(declared)}")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def is_static(self) -> bool:
        return not self.dynamic

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"graph {self.name!r} has no input {name!r}; inputs: {self.input_names}")

    def has_input(self, name: str) -> bool:
        return name in self.input_names

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "batch": self.batch,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "dynamic": [[d.name, d.min, d.opt, d.max] for d in self.dynamic],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        _check_keys(data, {"name", "batch", "inputs", "outputs", "dynamic"}, "graph spec")
        return cls(
            name=data["name"],
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            batch=int(data["batch"]),
            dynamic=tuple(DynamicDim(*d) for d in data["dynamic"]),
        )


def _check_keys(data: dict[str, Any], keys: set[str], what: str) -> None:
    if not isinstance(data, dict) or set(data) != keys:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{what} must have exactly the keys {sorted(keys)}, got {got}")


# ---- the FADA layers' shapes, from the config --------------------------------------------------


@dataclass(frozen=True)
class LayerShape:
    """Transformer layer ``l``: ``tokens`` = HW_l, ``channels`` = C_l (= attn1's inner width)."""

    tokens: int
    channels: int


def layer_shapes(config: ModelConfig) -> list[LayerShape]:
    """Per transformer block in execution order (down, mid, up), as diffusers builds the UNet.

    Down block ``i`` runs at latent_size / 2**i with ``layers_per_block`` blocks when it has
    attention; the mid block (cross-attention type) adds one at the lowest resolution; up block
    ``i`` mirrors the down path with ``layers_per_block + 1`` blocks.
    """
    u = config.unet
    n = len(u.block_out_channels)
    size = config.latent_size
    layers: list[LayerShape] = []
    for i, kind in enumerate(u.down_block_types):
        if "CrossAttn" in kind:
            side = size // 2**i
            layers += [LayerShape(side * side, u.block_out_channels[i])] * u.layers_per_block
    if u.mid_block_type == "UNetMidBlock2DCrossAttn":
        side = size // 2 ** (n - 1)
        layers.append(LayerShape(side * side, u.block_out_channels[-1]))
    for i, kind in enumerate(u.up_block_types):
        if "CrossAttn" in kind:
            side = size // 2 ** (n - 1 - i)
            layers += [LayerShape(side * side, u.block_out_channels[n - 1 - i])] * (u.layers_per_block + 1)
    return layers


# ---- the specs ------------------------------------------------------------------------------


def default_graphs(config: ModelConfig) -> tuple[str, ...]:
    """The graphs a runtime backend needs for this config (wav2vec2 only for wav2vec2 presets)."""
    names = GRAPH_NAMES[:-1]
    return (*names, "wav2vec2") if config.audio.kind == "wav2vec2" else names


def default_denoiser_batch(config: ModelConfig) -> int:
    """1 for a CFG-distilled student (branch "a"), 3 for a teacher / balanced student (a, r, b)."""
    return 1 if config.cfg.conditioned else 3


def denoiser_spec(config: ModelConfig, *, batch: int | None = None) -> GraphSpec:
    batch = default_denoiser_batch(config) if batch is None else batch
    c, h = config.vae.latent_channels, config.latent_size
    f, m = config.num_frames, config.motion_frames
    layers = layer_shapes(config)
    inputs = [
        TensorSpec("latents", (batch, f, c, h, h)),
        TensorSpec("timestep", (batch, f)),  # one per frame (a rolling sampler's frames sit at their own levels)
        TensorSpec("audio_tokens", (batch, f, config.audio_proj.num_tokens, config.unet.cross_attention_dim)),
    ]
    inputs += [TensorSpec(f"ref_k_{i}", (batch, s.tokens, s.channels)) for i, s in enumerate(layers)]
    inputs += [TensorSpec(f"ref_v_{i}", (batch, s.tokens, s.channels)) for i, s in enumerate(layers)]
    inputs += [TensorSpec(f"motion_{i}", (batch, m, s.tokens, s.channels)) for i, s in enumerate(layers)]
    if not config.cfg.conditioned:
        inputs.append(TensorSpec("ref_mask", (batch,), "bool"))
    else:
        inputs.append(TensorSpec("cfg", (batch, 2)))
    return GraphSpec("denoiser", tuple(inputs), (TensorSpec("eps", (batch, f, c, h, h)),), batch)


def reference_encoder_spec(config: ModelConfig) -> GraphSpec:
    m, c, h = config.motion_frames, config.vae.latent_channels, config.latent_size
    layers = layer_shapes(config)
    outputs = [TensorSpec(f"features_{i}", (m, s.tokens, s.channels)) for i, s in enumerate(layers)]
    outputs += [TensorSpec(f"ref_k_{i}", (m, s.tokens, s.channels)) for i, s in enumerate(layers)]
    outputs += [TensorSpec(f"ref_v_{i}", (m, s.tokens, s.channels)) for i, s in enumerate(layers)]
    return GraphSpec("reference_encoder", (TensorSpec("latents", (m, c, h, h)),), tuple(outputs), m)


def vae_encoder_spec(config: ModelConfig) -> GraphSpec:
    r, c, h = config.resolution, config.vae.latent_channels, config.latent_size
    return GraphSpec("vae_encoder", (TensorSpec("images", (1, 3, r, r)),), (TensorSpec("latents", (1, c, h, h)),), 1)


def vae_decoder_spec(config: ModelConfig) -> GraphSpec:
    f, r, c, h = config.num_frames, config.resolution, config.vae.latent_channels, config.latent_size
    return GraphSpec("vae_decoder", (TensorSpec("latents", (f, c, h, h)),), (TensorSpec("images", (f, 3, r, r)),), f)


def audio_proj_spec(config: ModelConfig) -> GraphSpec:
    a, f = config.audio, config.num_frames
    windows = TensorSpec("windows", (f, a.window_frames, a.num_layers, a.dim))
    tokens = TensorSpec("tokens", (f, config.audio_proj.num_tokens, config.unet.cross_attention_dim))
    return GraphSpec("audio_proj", (windows,), (tokens,), f)


def wav2vec2_spec(config: ModelConfig) -> GraphSpec:
    a = config.audio
    if a.kind != "wav2vec2":
        raise ValueError(f"the wav2vec2 graph is for wav2vec2 presets; this config's audio front-end is {a.kind!r}")
    opt = max(WAV2VEC2_MIN_SAMPLES, (config.num_frames + 2 * a.window) * a.samples_per_frame)
    return GraphSpec(
        "wav2vec2",
        (TensorSpec("waveform", (1, "samples")),),
        (TensorSpec("hidden_states", (1, "frames50", a.num_layers, a.dim)),),
        1,
        (DynamicDim("samples", WAV2VEC2_MIN_SAMPLES, opt, WAV2VEC2_MAX_SAMPLES),),
    )


_BUILDERS = {
    "reference_encoder": reference_encoder_spec,
    "vae_encoder": vae_encoder_spec,
    "vae_decoder": vae_decoder_spec,
    "audio_proj": audio_proj_spec,
    "wav2vec2": wav2vec2_spec,
}


def graph_spec(config: ModelConfig, name: str, *, denoiser_batch: int | None = None) -> GraphSpec:
    if name == "denoiser":
        return denoiser_spec(config, batch=denoiser_batch)
    if name not in _BUILDERS:
        raise ValueError(f"unknown graph {name!r}; graphs: {GRAPH_NAMES}")
    return _BUILDERS[name](config)


def graph_specs(
    config: ModelConfig, names: Sequence[str] | None = None, *, denoiser_batch: int | None = None
) -> dict[str, GraphSpec]:
    """Specs of ``names`` (default: :func:`default_graphs`), in GRAPH_NAMES order."""
    wanted = default_graphs(config) if names is None else tuple(names)
    unknown = sorted(set(wanted) - set(GRAPH_NAMES))
    if unknown:
        raise ValueError(f"unknown graphs {unknown}; graphs: {GRAPH_NAMES}")
    return {n: graph_spec(config, n, denoiser_batch=denoiser_batch) for n in GRAPH_NAMES if n in wanted}


# ---- the denoiser's flat inputs -----------------------------------------------------------------


def denoiser_feeds(
    spec: GraphSpec,
    sample: Tensor,
    timestep: Tensor,
    audio_tokens: Tensor,
    ref_k: Sequence[Tensor],
    ref_v: Sequence[Tensor],
    motion: Sequence[Tensor],
    ref_mask: Tensor | None,
    cfg: Tensor | None,
) -> dict[str, Tensor]:
    """DenoisingUNet.forward's arguments as the denoiser graph's named inputs."""
    layers = sum(1 for t in spec.inputs if t.name.startswith("ref_k_"))
    if not len(ref_k) == len(ref_v) == len(motion) == layers:
        raise ValueError(f"the denoiser graph has {layers} layers; got {len(ref_k)} K, {len(ref_v)} V, "
                         f"{len(motion)} motion tensors")
    feeds = {"latents": sample, "timestep": timestep, "audio_tokens": audio_tokens}
    for i in range(layers):
        feeds[f"ref_k_{i}"], feeds[f"ref_v_{i}"], feeds[f"motion_{i}"] = ref_k[i], ref_v[i], motion[i]
    if spec.has_input("ref_mask"):
        feeds["ref_mask"] = ref_mask
    if spec.has_input("cfg"):
        feeds["cfg"] = cfg
    return feeds
