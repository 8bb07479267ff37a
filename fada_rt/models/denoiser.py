"""The denoising UNet (teacher and student; paper §3.1, docs/design.md §2).

A diffusers ``UNet2DConditionModel`` whose transformer blocks get, in order:
reference attention (attn1 over ``[h; h_ref]``), audio attention (attn2 over the frame's audio
tokens), the student's CFG layer (after attn2, :mod:`fada_rt.models.attention`), SD's feed-forward,
and temporal attention with the motion-frame prefix (:mod:`fada_rt.models.temporal`).
All frames of a clip share one timestep. The output is always eps; a ``prediction="v"`` config
converts the UNet's raw v output to eps inside ``forward`` (:func:`eps_from_v`), so samplers,
distillation targets and exported graphs see one interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from fada_rt.config import CFGConfig, ModelConfig
from fada_rt.models.attention import AudioAttnProcessor, ReferenceAttnProcessor
from fada_rt.models.cfg_embedding import CFGEmbedding
from fada_rt.models.context import FadaContext
from fada_rt.models.temporal import add_temporal_layer
from fada_rt.models.unet import build_unet, transformer_blocks
from fada_rt.sampling.schedule import SD15_SCHEDULE


def eps_from_v(sample: Tensor, v: Tensor, abar: Tensor) -> Tensor:
    """``eps = sqrt(1 - abar) z + sqrt(abar) v`` for ``z = sqrt(abar) x0 + sqrt(1 - abar) eps`` and
    ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans & Ho 2022, Eq. 9 reparametrised).

    sample, v: (B, F, C, h, w); abar: (B,) or, with a noise level per frame, (B, F). Computed in fp32, returned
    in ``v``'s dtype.
    """
    a = abar.float().reshape(*abar.shape, *([1] * (v.dim() - abar.dim())))  # (B, 1, 1, 1, 1) or (B, F, 1, 1, 1)
    return ((1.0 - a).sqrt() * sample.float() + a.sqrt() * v.float()).to(v.dtype)


class DenoisingUNet(nn.Module):
    def __init__(self, config: ModelConfig, unet: UNet2DConditionModel | None = None) -> None:
        """``unet``: an already built (e.g. SD1.5-initialised) diffusers UNet; a fresh one otherwise.

        The FADA layers are added on top of it; a CFG-conditioned config also adds the student's
        CFG conditioning (zero-initialised, see :meth:`add_cfg_conditioning`).
        """
        super().__init__()
        self.config = dataclasses.replace(config, cfg=dataclasses.replace(config.cfg, mode="none"))
        self.unet = unet if unet is not None else build_unet(config)
        self.cfg_embedding: CFGEmbedding | None = None
        self.blocks = tuple(transformer_blocks(self.unet))  # plain tuple: registered via self.unet
        # abar per network timestep for the v -> eps conversion (teacher index t, student 1000 t)
        self.register_buffer("abar", SD15_SCHEDULE.alphas_cumprod.float(), persistent=False)
        for layer, block in enumerate(self.blocks):
            block.attn1.set_processor(ReferenceAttnProcessor(layer))
            block.attn2.set_processor(AudioAttnProcessor(layer, self._dim(block)))
            add_temporal_layer(
                block, layer, num_heads=config.temporal.num_heads, max_positions=config.temporal.max_positions
            )
        if config.cfg.conditioned:
            self.add_cfg_conditioning(config.cfg)

    @staticmethod
    def _dim(block: nn.Module) -> int:
        return block.norm1.normalized_shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def cfg_conditioned(self) -> bool:
        return self.config.cfg.conditioned

    def add_cfg_conditioning(self, cfg: CFGConfig) -> None:
        """Turn a teacher-shaped denoiser into a CFG-conditioned student (paper §3.3).

        Every added output projection is zero-initialised, so the student's output equals the
        teacher's until training moves them.
        """
        if self.cfg_conditioned:
            raise RuntimeError(f"this denoiser already has CFG conditioning ({self.config.cfg.mode})")
        if not cfg.conditioned:
            raise ValueError("add_cfg_conditioning needs a CFG mode other than 'none'")
        self.cfg_embedding = CFGEmbedding(cfg)
        if cfg.has_layer:
            for layer, block in enumerate(self.blocks):
                dim = self._dim(block)
                block.attn2.set_processor(AudioAttnProcessor(layer, dim, cfg.embed_dim, heads=block.attn2.heads))
        if cfg.mode == "time_embed":
            te = self.unet.time_embedding
            te.cond_proj = nn.Linear(self.cfg_embedding.time_cond_dim, te.linear_1.in_features, bias=False)
            nn.init.zeros_(te.cond_proj.weight)
        self.config = dataclasses.replace(self.config, cfg=cfg)
        ref = next(self.unet.parameters())
        self.to(device=ref.device, dtype=ref.dtype)

    def reference_kv(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """ReferenceNet features -> per-layer reference keys/values ``(B, HW_l, C_l)``, computed once
        per avatar with this denoiser's attn1 projections."""
        if len(features) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} reference layers, got {len(features)}")
        keys = [block.attn1.to_k(f) for block, f in zip(self.blocks, features)]
        values = [block.attn1.to_v(f) for block, f in zip(self.blocks, features)]
        return keys, values

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        audio_tokens: Tensor,
        ref_k: Sequence[Tensor],
        ref_v: Sequence[Tensor],
        motion: Sequence[Tensor],
        ref_mask: Tensor | None = None,
        cfg: Tensor | None = None,
    ) -> Tensor:
        """Predict eps for a batch of clips (a v-prediction UNet's output is converted, :func:`eps_from_v`).

        Args:
            sample: (B, F, C, h, w) noisy latents.
            timestep: (B,) network timestep, shared by the frames of a clip, or (B, F): one per frame (the frames
                fold into the UNet's batch, so each gets its own time embedding; the pipelined sampler of
                docs/design.md §8 keeps frames at different noise levels in one call).
            audio_tokens: (B, F, N_audio, D_audio); zeros for the audio-null branch.
            ref_k, ref_v: per layer (B, HW_l, C_l), from :meth:`reference_kv`.
            motion: per layer (B, M, HW_l, C_l) motion-frame features from the ReferenceNet.
            ref_mask: (B,) bool, False drops the reference (reference-null branch); None keeps it.
            cfg: (B, 2) [cfg_a, cfg_r] for a CFG-conditioned student; must be None otherwise.
        Returns:
            (B, F, C, h, w) predicted eps.
        """
        b, f = sample.shape[:2]
        if self.cfg_conditioned and cfg is None:
            raise ValueError(f"this student is CFG-conditioned ({self.config.cfg.mode}): pass cfg=(B, 2) scales")
        if not self.cfg_conditioned and cfg is not None:
            raise ValueError("this denoiser takes no cfg scales (it is not CFG-conditioned)")
        if len(motion) != self.num_layers or len(ref_k) != self.num_layers:
            raise ValueError(f"expected per-layer conditions for {self.num_layers} layers")
        ctx = FadaContext(num_frames=f, ref_k=ref_k, ref_v=ref_v, ref_mask=ref_mask, motion=motion)
        timestep_cond = None
        if cfg is not None:
            if self.config.cfg.has_layer:
                ctx.cfg_tokens = self.cfg_embedding.tokens(cfg)  # (B, N_cfg, D_cfg)
            else:
                timestep_cond = self.per_frame(self.cfg_embedding.time_condition(cfg), f).to(sample.dtype)
        x = sample.flatten(0, 1)  # (B*F, C, h, w)
        per_frame_t = timestep.dim() == 2
        if per_frame_t and tuple(timestep.shape) != (b, f):
            raise ValueError(f"a per-frame timestep must be (B, F) = ({b}, {f}), got {tuple(timestep.shape)}")
        t = timestep.reshape(b * f) if per_frame_t else self.per_frame(timestep.reshape(b), f)  # (B*F,)
        context = audio_tokens.flatten(0, 1).to(sample.dtype)  # (B*F, N_audio, D_audio)
        out = self.unet(
            x, t, encoder_hidden_states=context, timestep_cond=timestep_cond, cross_attention_kwargs={"fada": ctx}
        ).sample
        out = out.view(sample.shape)  # (B, F, C, h, w)
        if self.config.prediction == "v":
            index = timestep.float().round().long().clamp(0, self.abar.shape[0] - 1)  # (B,) or (B, F)
            out = eps_from_v(sample, out, self.abar[index])
        return out

    @staticmethod
    def per_frame(x: Tensor, num_frames: int) -> Tensor:
        return torch.repeat_interleave(x, num_frames, dim=0)
