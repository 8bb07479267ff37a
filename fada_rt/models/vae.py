"""The VAE: diffusers ``AutoencoderKL`` behind encode/decode in scaled-latent space (docs/design.md §2).

SD1.5: f=8, 4 channels, scaling factor 0.18215. Small presets use a small AutoencoderKL trained by
``python -m train.vae`` (its scaling factor is measured after training and saved in the config).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import Tensor, nn

from fada_rt.config import VAEConfig


def autoencoder_kwargs(config: VAEConfig) -> dict:
    n = len(config.block_out_channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": tuple(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "latent_channels": config.latent_channels,
        "norm_num_groups": config.norm_num_groups,
        "mid_block_add_attention": config.mid_block_add_attention,
        "scaling_factor": config.scaling_factor,
    }


class VAE(nn.Module):
    def __init__(self, config: VAEConfig, model: AutoencoderKL | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = model if model is not None else AutoencoderKL(**autoencoder_kwargs(config))

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    def encode(self, images: Tensor, *, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
        """images (N, 3, H, W) in [-1, 1] -> scaled latents (N, C, H/f, W/f).

        The posterior mean by default (deterministic); ``sample=True`` draws with ``generator``.
        """
        dist = self.model.encode(images.to(self._dtype)).latent_dist
        latents = dist.sample(generator) if sample else dist.mean
        return latents * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """scaled latents (N, C, h, w) -> images (N, 3, h*f, w*f) clamped to [-1, 1]."""
        images = self.model.decode(latents.to(self._dtype) / self.scaling_factor).sample
        return images.clamp(-1.0, 1.0)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype
