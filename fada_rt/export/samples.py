"""Sample inputs of each graph, made the way the runtime makes them (docs/design.md §5).

The exporter traces with these and checks parity on them, so they must look like real inputs:
the denoiser's conditions come from the model's own ReferenceNet, K/V projections and AudioProj
on random latents and audio; its rows are the CFG branches the profile serves (a, r, b with the
reference mask for batch 3; branch "a" with the paper's scales for a CFG-distilled student).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fada_rt.backends.graphs import GraphSpec
from fada_rt.models.fada import FadaModel
from fada_rt.sampling import DISTILLED_CFG_A, DISTILLED_CFG_R

#: Network timesteps of the denoiser sample, one per frame from the first to the last (a rolling sampler's levels;
#: student 1000 t, teacher indices are < 1000).
SAMPLE_TIMESTEPS = (250.0, 900.0)


@torch.no_grad()
def sample_inputs(model: FadaModel, spec: GraphSpec, *, seed: int, samples: int | None = None) -> tuple[Tensor, ...]:
    """Inputs of graph ``spec`` in spec order, seeded. ``samples``: waveform length (wav2vec2 only)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    c, h, r = cfg.vae.latent_channels, cfg.latent_size, cfg.resolution
    if spec.name == "vae_encoder":
        return (torch.rand(spec.batch, 3, r, r, generator=gen) * 2 - 1,)
    if spec.name in ("vae_decoder", "reference_encoder"):
        return (torch.randn(spec.batch, c, h, h, generator=gen),)
    if spec.name == "audio_proj":
        return (model.audio_features(_wave(cfg.num_frames, model, gen))[0],)
    if spec.name == "wav2vec2":
        n = samples if samples is not None else spec.dynamic[0].opt
        x = torch.randn(1, n, generator=gen) * 0.1
        return ((x - x.mean()) / torch.sqrt(x.var() + 1e-7),)
    if spec.name == "denoiser":
        return _denoiser_inputs(model, spec, gen)
    raise ValueError(f"no sample inputs for graph {spec.name!r}")


def _wave(frames: int, model: FadaModel, gen: torch.Generator) -> Tensor:
    return torch.randn(1, frames * model.config.audio.samples_per_frame, generator=gen) * 0.1


def _denoiser_inputs(model: FadaModel, spec: GraphSpec, gen: torch.Generator) -> tuple[Tensor, ...]:
    cfg = model.config
    b, f, m = spec.batch, cfg.num_frames, cfg.motion_frames
    c, h = cfg.vae.latent_channels, cfg.latent_size
    cond = model.conditions(
        torch.randn(1, c, h, h, generator=gen),
        torch.randn(1, m, c, h, h, generator=gen),
        model.audio_features(_wave(f, model, gen)),
    )
    branches = tuple(("a", "r", "b")[i % 3] for i in range(b))
    values = {
        "latents": torch.randn(b, f, c, h, h, generator=gen),
        "timestep": torch.linspace(SAMPLE_TIMESTEPS[0], SAMPLE_TIMESTEPS[1], f).expand(b, f).contiguous(),
        "audio_tokens": torch.cat([cond.audio_tokens if br == "a" else cond.audio_tokens * 0 for br in branches]),
        "ref_mask": torch.tensor([br != "b" for br in branches]),
        "cfg": torch.tensor([[DISTILLED_CFG_A, DISTILLED_CFG_R]]).repeat(b, 1),
    }
    for i, (k, v, mo) in enumerate(zip(cond.reference.keys, cond.reference.values, cond.motion)):
        values[f"ref_k_{i}"], values[f"ref_v_{i}"], values[f"motion_{i}"] = (x.repeat_interleave(b, 0) for x in (k, v, mo))
    return tuple(values[name] for name in spec.input_names)
