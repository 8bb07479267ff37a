"""Torch modules with the flat signatures of the exported graphs (fada_rt/backends/graphs.py).

Each wrapper takes its graph's inputs positionally in spec order and returns its outputs as a
tuple in spec order, calling the very modules the torch backend runs — so tracing one of them
exports exactly the computation the torch backend performs (docs/design.md §5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fada_rt.backends.graphs import GraphSpec, layer_shapes
from fada_rt.models.fada import FadaModel


class DenoiserGraph(nn.Module):
    """latents, timestep, audio_tokens, ref_k_*, ref_v_*, motion_*, [ref_mask | cfg] -> eps."""

    def __init__(self, model: FadaModel, spec: GraphSpec) -> None:
        super().__init__()
        self.denoiser = model.denoiser
        self.names = spec.input_names
        self.num_layers = len(layer_shapes(model.config))

    def forward(self, *inputs: Tensor) -> tuple[Tensor]:
        x = dict(zip(self.names, inputs))
        n = self.num_layers
        eps = self.denoiser(
            x["latents"],
            x["timestep"],
            x["audio_tokens"],
            [x[f"ref_k_{i}"] for i in range(n)],
            [x[f"ref_v_{i}"] for i in range(n)],
            [x[f"motion_{i}"] for i in range(n)],
            ref_mask=x.get("ref_mask"),
            cfg=x.get("cfg"),
        )
        return (eps,)


class ReferenceEncoderGraph(nn.Module):
    """latents (M, C, h, w) -> features_* (motion use), ref_k_*, ref_v_* (reference use)."""

    def __init__(self, model: FadaModel, spec: GraphSpec) -> None:
        super().__init__()
        self.reference_net = model.reference_net
        self.denoiser = model.denoiser

    def forward(self, latents: Tensor) -> tuple[Tensor, ...]:
        features = self.reference_net(latents)  # per layer (M, HW_l, C_l)
        keys, values = self.denoiser.reference_kv(features)
        return (*features, *keys, *values)


class VaeEncoderGraph(nn.Module):
    def __init__(self, model: FadaModel, spec: GraphSpec) -> None:
        super().__init__()
        self.vae = model.vae

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return (self.vae.encode(images),)  # posterior mean x scaling factor


class VaeDecoderGraph(nn.Module):
    def __init__(self, model: FadaModel, spec: GraphSpec) -> None:
        super().__init__()
        self.vae = model.vae

    def forward(self, latents: Tensor) -> tuple[Tensor]:
        return (self.vae.decode(latents),)  # clamped to [-1, 1]


class AudioProjGraph(nn.Module):
    """windows (F, 2w+1, L, D) -> tokens (F, N, D_audio): AudioProj on one clip of F frames."""

    def __init__(self, model: FadaModel, spec: GraphSpec) -> None:
        super().__init__()
        self.audio_proj = model.audio_proj

    def forward(self, windows: Tensor) -> tuple[Tensor]:
        return (self.audio_proj(windows[None])[0],)


class Wav2Vec2Graph(nn.Module):
    """normalised waveform (1, S) -> all transformer layers (1, T50, L, D), as Wav2Vec2Frontend stacks them."""

    def __init__(self, model: FadaModel, spec: GraphSpec) -> None:
        super().__init__()
        self.wav2vec2 = model.audio_encoder.model

    def forward(self, waveform: Tensor) -> tuple[Tensor]:
        hidden = self.wav2vec2(waveform, output_hidden_states=True).hidden_states
        return (torch.stack(hidden[1:], dim=2),)


WRAPPERS: dict[str, type[nn.Module]] = {
    "denoiser": DenoiserGraph,
    "reference_encoder": ReferenceEncoderGraph,
    "vae_encoder": VaeEncoderGraph,
    "vae_decoder": VaeDecoderGraph,
    "audio_proj": AudioProjGraph,
    "wav2vec2": Wav2Vec2Graph,
}


def graph_module(model: FadaModel, spec: GraphSpec) -> nn.Module:
    """The eval-mode torch module whose trace is graph ``spec.name``."""
    return WRAPPERS[spec.name](model, spec).eval()
