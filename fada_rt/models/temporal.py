"""Temporal attention with the motion-frame prefix (docs/design.md §2, item 5).

One :class:`TemporalAttention` per transformer block, registered as ``block.temporal`` and run
after the block's feed-forward through a forward hook (the diffusers block code stays untouched).
At every spatial position it attends over the frame axis; keys and values are prefixed with the
ReferenceNet features of the last ``M`` generated frames at that layer, so consecutive chunks join
without seams. Frame positions are sinusoidal; the output projection is zero-initialised so that a
freshly added temporal layer is an identity.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn

from fada_rt.models.attention import attend
from fada_rt.models.context import FadaContext


def sinusoidal_positions(num: int, dim: int) -> Tensor:
    """(num, dim) transformer sinusoids, sin in the first half and cos in the second."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    angles = torch.arange(num, dtype=torch.float64)[:, None] * freqs[None]
    pe = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        pe = torch.cat([pe, torch.zeros(num, 1, dtype=torch.float64)], dim=1)
    return pe.float()


class TemporalAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, max_positions: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, heads=num_heads, dim_head=dim // num_heads)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)
        self.register_buffer("positions", sinusoidal_positions(max_positions, dim), persistent=False)

    def forward(self, hidden: Tensor, motion: Tensor, num_frames: int) -> Tensor:
        """hidden (B*F, HW, C) block output; motion (B, M, HW, C) -> (B*F, HW, C)."""
        n, hw, c = hidden.shape
        b = n // num_frames
        m = motion.shape[1]
        x = hidden.view(b, num_frames, hw, c).permute(0, 2, 1, 3).reshape(b * hw, num_frames, c)  # (B*HW, F, C)
        prefix = motion.to(hidden.dtype).permute(0, 2, 1, 3).reshape(b * hw, m, c)  # (B*HW, M, C)
        seq = self.norm(torch.cat([prefix, x], dim=1)) + self.positions[: m + num_frames].to(hidden.dtype)
        out = attend(self.attn, seq[:, m:], self.attn.to_k(seq), self.attn.to_v(seq))  # (B*HW, F, C)
        out = out.view(b, hw, num_frames, c).permute(0, 2, 1, 3).reshape(n, hw, c)
        return hidden + out


_BLOCK_SIGNATURE = inspect.signature(BasicTransformerBlock.forward)


def _context_of(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FadaContext:
    """Find the FadaContext in a block call, keyword or positional (gradient checkpointing)."""
    cak = kwargs.get("cross_attention_kwargs")
    if cak is None and len(args) > 1:
        cak = _BLOCK_SIGNATURE.bind(block, *args, **kwargs).arguments.get("cross_attention_kwargs")
    if not cak or "fada" not in cak:
        raise RuntimeError("temporal attention needs cross_attention_kwargs={'fada': FadaContext(...)}")
    return cak["fada"]


def _temporal_hook(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor) -> Tensor:
    ctx = _context_of(block, args, kwargs)
    if ctx.motion is None:
        raise RuntimeError("the denoiser needs motion-frame features (FadaContext.motion)")
    return block.temporal(output, ctx.motion[block.temporal_layer], ctx.num_frames)


def add_temporal_layer(block: BasicTransformerBlock, layer: int, *, num_heads: int, max_positions: int) -> None:
    """Attach ``block.temporal`` and run it after the block (idempotent per block)."""
    if hasattr(block, "temporal"):
        raise RuntimeError(f"transformer block {layer} already has a temporal layer")
    dim = block.norm1.normalized_shape[0]
    block.temporal = TemporalAttention(dim, num_heads, max_positions)
    block.temporal_layer = layer
    block.register_forward_hook(_temporal_hook, with_kwargs=True)
