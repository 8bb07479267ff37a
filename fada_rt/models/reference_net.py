"""ReferenceNet: a UNet with the denoiser's block layout, run at t=0 on clean latents (§2).

At every transformer block ``l`` it records the hidden states entering self-attention,
``h_ref[l] (N, HW_l, C_l)``. It serves the reference portrait (cached once per avatar) and the motion
frames (the last ``M`` latents of the previous chunk, once per chunk).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from fada_rt.config import ModelConfig
from fada_rt.models.attention import AudioAttnProcessor, ReferenceAttnProcessor
from fada_rt.models.context import FadaContext
from fada_rt.models.unet import build_unet, transformer_blocks, transformer_models


class ReferenceNet(nn.Module):
    def __init__(self, config: ModelConfig, unet: UNet2DConditionModel | None = None) -> None:
        """``unet``: an already built (e.g. SD1.5-initialised) diffusers UNet; a fresh one otherwise."""
        super().__init__()
        self.unet = unet if unet is not None else build_unet(config)
        self.context_dim = config.unet.cross_attention_dim
        blocks = transformer_blocks(self.unet)
        self.num_layers = len(blocks)
        for layer, block in enumerate(blocks):
            block.attn1.set_processor(ReferenceAttnProcessor(layer))
            block.attn2.set_processor(AudioAttnProcessor(layer, block.norm1.normalized_shape[0]))
        for module in self.unused_modules():
            module.requires_grad_(False)

    def unused_modules(self) -> list[nn.Module]:
        """Everything after the last recorded input: its output is discarded, so it stays frozen and
        optimisers and DDP see no parameters without gradients."""
        last = transformer_blocks(self.unet)[-1]
        unused = [last.attn1, last.norm2, last.attn2, last.norm3, last.ff, transformer_models(self.unet)[-1].proj_out]
        return unused + [m for m in (self.unet.conv_norm_out, self.unet.conv_out) if m is not None]

    def forward(self, latents: Tensor) -> list[Tensor]:
        """latents (N, C, h, w), scaled VAE latents -> per layer (N, HW_l, C_l)."""
        n = latents.shape[0]
        ctx = FadaContext(num_frames=1, record=True)
        timestep = torch.zeros(n, device=latents.device, dtype=latents.dtype)
        null_context = torch.zeros(n, 1, self.context_dim, device=latents.device, dtype=latents.dtype)
        self.unet(latents, timestep, encoder_hidden_states=null_context, cross_attention_kwargs={"fada": ctx})
        return [ctx.features[layer] for layer in range(self.num_layers)]
