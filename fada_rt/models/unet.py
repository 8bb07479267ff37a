"""The diffusers UNet both FADA networks are built on, and its transformer blocks in order."""

from __future__ import annotations

from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from fada_rt.config import ModelConfig


def unet_kwargs(config: ModelConfig) -> dict:
    """``UNet2DConditionModel`` constructor arguments of a preset (SD1.5's defaults otherwise)."""
    u = config.unet
    return {
        "sample_size": config.latent_size,
        "in_channels": u.latent_channels,
        "out_channels": u.latent_channels,
        "down_block_types": tuple(u.down_block_types),
        "up_block_types": tuple(u.up_block_types),
        "mid_block_type": u.mid_block_type,
        "block_out_channels": tuple(u.block_out_channels),
        "layers_per_block": u.layers_per_block,
        "attention_head_dim": u.attention_head_dim,
        "norm_num_groups": u.norm_num_groups,
        "cross_attention_dim": u.cross_attention_dim,
    }


def build_unet(config: ModelConfig) -> UNet2DConditionModel:
    """A plain diffusers UNet with the preset's shape (random init, fp32)."""
    return UNet2DConditionModel(**unet_kwargs(config))


def transformer_models(unet: UNet2DConditionModel) -> list[Transformer2DModel]:
    """The UNet's ``Transformer2DModel``s in execution order: down blocks, mid block, up blocks.

    Within a block diffusers runs ``resnet_i`` then ``attentions_i``, so ``attentions`` order is
    execution order.
    """
    stages = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [t for stage in stages for t in (getattr(stage, "attentions", None) or [])]


def transformer_blocks(unet: UNet2DConditionModel) -> list[BasicTransformerBlock]:
    """The transformer blocks in execution order; layer ``l`` of the ReferenceNet feeds layer ``l``
    of the denoiser."""
    return [block for t in transformer_models(unet) for block in t.transformer_blocks]
