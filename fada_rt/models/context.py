"""Per-forward conditioning context handed to the FADA layers inside a diffusers UNet.

The context travels through diffusers' own ``cross_attention_kwargs={"fada": ctx}``, so it follows
the call explicitly (also through gradient checkpointing) instead of living in module state.
Layer ``l`` is the l-th ``BasicTransformerBlock`` in execution order (down, mid, up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class FadaContext:
    """What the FADA layers read (denoiser) or write (ReferenceNet) during one UNet forward.

    Attributes:
        num_frames: F, frames per clip; the UNet batch is ``B * F`` images.
        record: ReferenceNet mode — each attn1 stores its input in ``features[l]``.
        features: filled in record mode, ``(N, HW_l, C_l)`` per layer.
        ref_k, ref_v: per layer, the reference keys/values ``(B, HW_l, C_l)`` already projected by the
            denoiser's attn1 ``to_k``/``to_v`` (computed once per avatar).
        ref_mask: ``(B,)`` bool, False where the reference is dropped (reference-null branch); None = all True.
        motion: per layer, motion-frame features ``(B, M, HW_l, C_l)`` prefixed to temporal attention.
        cfg_tokens: ``(B, N_cfg, D_cfg)`` CFG tokens for the student's CFG layer, or None.
    """

    num_frames: int = 1
    record: bool = False
    features: dict[int, Tensor] = field(default_factory=dict)
    ref_k: Sequence[Tensor] | None = None
    ref_v: Sequence[Tensor] | None = None
    ref_mask: Tensor | None = None
    motion: Sequence[Tensor] | None = None
    cfg_tokens: Tensor | None = None

    def per_frame(self, x: Tensor) -> Tensor:
        """Repeat a per-clip tensor ``(B, ...)`` for every frame: ``(B * F, ...)``."""
        if self.num_frames == 1:
            return x
        return x.repeat_interleave(self.num_frames, dim=0)

    def key_mask(self, num_self: int, num_ref: int, dtype_device: Tensor) -> Tensor | None:
        """Boolean SDPA mask ``(B*F, 1, 1, num_self + num_ref)``: drop reference keys where masked."""
        if self.ref_mask is None:
            return None
        keep_ref = self.per_frame(self.ref_mask.to(torch.bool))  # (B*F,)
        n = keep_ref.shape[0]
        self_part = torch.ones(n, num_self, dtype=torch.bool, device=dtype_device.device)
        ref_part = keep_ref[:, None].expand(n, num_ref)
        return torch.cat([self_part, ref_part], dim=1)[:, None, None, :]
