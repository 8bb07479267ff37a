"""Attention processors that turn SD's transformer blocks into FADA's (docs/design.md §2).

They are diffusers attention processors (``Attention.set_processor``), so the UNet, its weights and
its block code stay diffusers' own:

* :class:`ReferenceAttnProcessor` on ``attn1`` — in the ReferenceNet it records the hidden states
  entering self-attention; in the denoiser it attends over ``concat([h, h_ref])`` with the
  reference keys/values precomputed once per avatar.
* :class:`AudioAttnProcessor` on ``attn2`` — cross-attention over the frame's audio tokens, and for
  a student with a CFG layer (paper §3.3) a second, zero-initialised cross-attention over the CFG
  tokens applied after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn

from fada_rt.models.context import FadaContext


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(N, L, H*d) -> (N, H, L, d)"""
    n, length, inner = x.shape
    return x.view(n, length, heads, inner // heads).transpose(1, 2)


def attend(attn: Attention, query_in: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
    """Multi-head attention of ``attn`` with already projected ``key``/``value``.

    query_in (N, Lq, C); key/value (N, Lk, inner) -> (N, Lq, C) after ``to_out``.
    """
    q = split_heads(attn.to_q(query_in), attn.heads)  # (N, H, Lq, d)
    k = split_heads(key, attn.heads)  # (N, H, Lk, d)
    v = split_heads(value, attn.heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, Lq, d)
    out = out.transpose(1, 2).flatten(2)  # (N, Lq, inner)
    return attn.to_out[1](attn.to_out[0](out))


class ReferenceAttnProcessor:
    """Self-attention (attn1) of transformer block ``layer``: records or reads the reference.

    Record mode (ReferenceNet): plain self-attention; stores its input ``(N, HW, C)`` as the layer's
    reference feature. Read mode (denoiser): keys/values ``[to_k(h); ref_k]``, ``[to_v(h); ref_v]``;
    where ``ref_mask`` is False the reference keys are masked out, which is exactly attention over
    ``h`` alone (the reference-null CFG branch).
    """

    def __init__(self, layer: int) -> None:
        self.layer = layer

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        fada: FadaContext | None = None,
    ) -> Tensor:
        if fada is None:
            raise RuntimeError("FADA attention layers need cross_attention_kwargs={'fada': FadaContext(...)}")
        h = hidden_states  # (N, HW, C), N = B*F
        key, value = attn.to_k(h), attn.to_v(h)
        mask = None
        if fada.record:
            fada.features[self.layer] = h
        elif fada.ref_k is not None:
            ref_k = fada.per_frame(fada.ref_k[self.layer])  # (N, HW_ref, inner)
            ref_v = fada.per_frame(fada.ref_v[self.layer])
            mask = fada.key_mask(h.shape[1], ref_k.shape[1], h)
            key = torch.cat([key, ref_k.to(key.dtype)], dim=1)
            value = torch.cat([value, ref_v.to(value.dtype)], dim=1)
        return attend(attn, h, key, value, mask)


class AudioAttnProcessor(nn.Module):
    """Audio cross-attention (attn2) plus, for students, the CFG layer (paper §3.3).

    ``cfg_attn`` is a diffusers :class:`Attention` over the CFG tokens ``Emb_cfg`` (Eq. 10) with a
    zero-initialised output projection, so a student made from its teacher starts bit-identical.
    It runs after the audio attention on ``LayerNorm(x + audio_out)`` and its output is added to
    the audio output (the block then adds the residual).
    """

    def __init__(self, layer: int, dim: int, cfg_dim: int | None = None, heads: int = 1) -> None:
        super().__init__()
        self.layer = layer
        self.cfg_norm: nn.LayerNorm | None = None
        self.cfg_attn: Attention | None = None
        if cfg_dim is not None:
            self.cfg_norm = nn.LayerNorm(dim)
            self.cfg_attn = Attention(query_dim=dim, cross_attention_dim=cfg_dim, heads=heads, dim_head=dim // heads)
            nn.init.zeros_(self.cfg_attn.to_out[0].weight)
            nn.init.zeros_(self.cfg_attn.to_out[0].bias)

    def __call__(  # diffusers calls processors directly; nn.Module keeps the CFG weights registered
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        fada: FadaContext | None = None,
    ) -> Tensor:
        if encoder_hidden_states is None:
            raise RuntimeError("audio attention needs encoder_hidden_states (the audio tokens)")
        x = hidden_states  # (N, HW, C)
        ctx = encoder_hidden_states  # (N, N_audio, D_audio)
        out = attend(attn, x, attn.to_k(ctx), attn.to_v(ctx))
        if self.cfg_attn is not None:
            if fada is None or fada.cfg_tokens is None:
                raise RuntimeError("this student has a CFG layer: pass cfg scales (FadaContext.cfg_tokens)")
            tokens = fada.per_frame(fada.cfg_tokens).to(x.dtype)  # (N, N_cfg, D_cfg)
            y = self.cfg_norm(x + out)
            out = out + attend(self.cfg_attn, y, self.cfg_attn.to_k(tokens), self.cfg_attn.to_v(tokens))
        return out
