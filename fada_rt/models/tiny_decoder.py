"""A tiny VAE decoder: TAESD's shape (diffusers' ``DecoderTiny``), distilled from a preset's VAE decoder.

The SD VAE decoder is a large share of a chunk on a GPU (sd15 on an H200: 95 of 499 ms compiled, 247 of 785 ms
eager). TAESD (Bohan 2023) replaces it by a plain conv stack: 3x3 convs with residual blocks and
nearest-neighbour upsampling, no attention, no norms. ``TinyDecoder`` decodes the same *scaled* latents the
pipeline carries to images in [-1, 1], so it drops in for ``VAE.decode``. It is trained by
``python -m train.tiny_decoder`` on the preset's own VAE: latents in, that VAE's decoded frames as the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.models.autoencoders.vae import DecoderTiny
from torch import Tensor, nn

from fada_rt.config import ModelConfig


@dataclass(frozen=True)
class TinyDecoderConfig:
    """The decoder's shape: ``upsamplings`` x2 stages (the VAE's factor is 2^upsamplings), each of ``blocks``
    residual blocks at ``channels``, then one block at full size."""

    latent_channels: int = 4
    upsamplings: int = 2
    channels: int = 32
    blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("latent_channels", "upsamplings", "channels", "blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "upsamplings" else 1):
                raise ValueError(f"TinyDecoderConfig.{name} must be a positive int, got {value!r}")

    @classmethod
    def for_model(cls, config: ModelConfig) -> TinyDecoderConfig:
        """The decoder for a preset's VAE: TAESD's 64 channels x 3 blocks for SD-scale VAEs (f = 8 at 512 px), 32 x 1
        for the small ones."""
        ups = len(config.vae.block_out_channels) - 1
        big = config.resolution >= 256
        return cls(latent_channels=config.vae.latent_channels, upsamplings=ups, channels=64 if big else 32,
                   blocks=3 if big else 1)


class TinyDecoder(nn.Module):
    def __init__(self, config: TinyDecoderConfig) -> None:
        super().__init__()
        self.config = config
        stages = config.upsamplings + 1
        self.decoder = DecoderTiny(in_channels=config.latent_channels, out_channels=3,
                                   num_blocks=(config.blocks,) * (stages - 1) + (1,),
                                   block_out_channels=(config.channels,) * stages, upsampling_scaling_factor=2,
                                   act_fn="relu", upsample_fn="nearest")

    def forward(self, latents: Tensor) -> Tensor:
        """Scaled latents (N, C, h, w) -> images (N, 3, h 2^u, w 2^u) in [-1, 1] (unclamped while training)."""
        images = self.decoder(latents.to(next(self.parameters()).dtype))  # (N, 3, H, W)
        return images if self.training else images.clamp(-1.0, 1.0)

    def decode(self, latents: Tensor) -> Tensor:
        """``VAE.decode``'s contract: scaled latents -> images clamped to [-1, 1]."""
        return self.forward(latents).clamp(-1.0, 1.0)
