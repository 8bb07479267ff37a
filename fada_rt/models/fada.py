"""FadaModel: the networks of one teacher or student, and their conditioning helpers.

``FadaModel`` holds the frozen VAE, the audio front-end, AudioProj, the ReferenceNet and the
denoising UNet. :class:`ChunkConditions` is everything one chunk is conditioned on, prepared once
per chunk (reference K/V once per avatar), and :class:`BranchedDenoiser` binds them to the
denoiser so the samplers of :mod:`fada_rt.sampling` can call it with CFG branches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fada_rt.config import ModelConfig
from fada_rt.models.audio import build_audio_frontend, window_features
from fada_rt.models.audio_proj import AudioProj
from fada_rt.models.denoiser import DenoisingUNet
from fada_rt.models.reference_net import ReferenceNet
from fada_rt.models.vae import VAE

BRANCHES = ("a", "r", "b")  # reference+audio, reference only, neither (Eq. 9)


@dataclass
class ReferenceCache:
    """Per-avatar reference keys/values, per layer ``(B, HW_l, C_l)`` (computed once)."""

    keys: list[Tensor]
    values: list[Tensor]


@dataclass
class ChunkConditions:
    """What one chunk of ``F`` frames is generated from.

    reference: per-avatar K/V; motion: per layer (B, M, HW_l, C_l); audio_tokens: (B, F, N, D).
    """

    reference: ReferenceCache
    motion: list[Tensor]
    audio_tokens: Tensor


class FadaModel(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        *,
        vae: VAE | None = None,
        reference_net: ReferenceNet | None = None,
        denoiser: DenoisingUNet | None = None,
        audio_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.vae = vae if vae is not None else VAE(config.vae)
        self.audio_encoder = audio_encoder if audio_encoder is not None else build_audio_frontend(config.audio)
        self.audio_proj = AudioProj(config.audio, config.audio_proj, config.unet.cross_attention_dim)
        self.reference_net = reference_net if reference_net is not None else ReferenceNet(config)
        self.denoiser = denoiser if denoiser is not None else DenoisingUNet(config)
        self.set_trainable()

    def set_trainable(self) -> FadaModel:
        """Trainable: ReferenceNet (but its unused tail), denoiser, AudioProj. Frozen: VAE, audio encoder."""
        self.requires_grad_(True)
        self.vae.requires_grad_(False)
        self.audio_encoder.requires_grad_(False)
        for module in self.reference_net.unused_modules():
            module.requires_grad_(False)
        return self

    @staticmethod
    def is_audio_parameter(name: str) -> bool:
        """Whether parameter ``name`` (of ``named_parameters()``) is on the audio path: AudioProj or the
        denoiser's audio cross-attention (``attn2``, with a student's CFG layer inside it)."""
        return name.startswith("audio_proj.") or (name.startswith("denoiser.") and ".attn2." in name)

    @staticmethod
    def is_cfg_parameter(name: str) -> bool:
        """Whether parameter ``name`` belongs to a student's CFG conditioning (paper §3.3): the tokens or
        MLP of ``cfg_embedding``, the CFG layers (``cfg_attn``, ``cfg_norm``) or the time-embedding
        ``cond_proj`` — the parameters :meth:`make_student` adds to the teacher's."""
        return name.startswith("denoiser.") and (".cfg_" in name or "time_embedding.cond_proj." in name)

    def set_prediction(self, prediction: str) -> FadaModel:
        """Reinterpret the denoiser's raw output ("epsilon" or "v", :class:`ModelConfig`), e.g. to
        fine-tune an epsilon teacher as a v-prediction one; the weights are kept."""
        self.config = self.config.replace(prediction=prediction)  # validates
        self.denoiser.config = self.denoiser.config.replace(prediction=prediction)
        return self

    def make_student(self, cfg_mode: str, *, seed: int | None = None) -> FadaModel:
        """A student initialised from this teacher, plus CFG conditioning (``cfg_mode``; 'none' keeps
        the teacher's shape: the balanced student). Its output equals the teacher's at init.
        ``seed``: initialise the added conditioning from it (on a forked RNG) rather than the global RNG."""
        import copy

        student = copy.deepcopy(self)
        if cfg_mode != "none":
            with torch.random.fork_rng(devices=[], enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                student.denoiser.add_cfg_conditioning(dataclasses.replace(self.config.cfg, mode=cfg_mode))
        student.config = self.config.with_cfg_mode(cfg_mode)
        return student

    # ---- conditioning, each computed at its own rate -------------------------------------------
    def audio_features(self, wave: Tensor) -> Tensor:
        """wave (B, S) 16 kHz mono -> windowed features (B, T, 2w+1, L, D)."""
        return window_features(self.audio_encoder(wave), self.config.audio.window)

    def reference(self, ref_latent: Tensor) -> ReferenceCache:
        """ref_latent (B, C, h, w) scaled latent -> per-layer K/V (once per avatar)."""
        keys, values = self.denoiser.reference_kv(self.reference_net(ref_latent))
        return ReferenceCache(keys, values)

    def motion_features(self, motion_latents: Tensor) -> list[Tensor]:
        """motion_latents (B, M, C, h, w) -> per layer (B, M, HW_l, C_l) (once per chunk)."""
        b, m = motion_latents.shape[:2]
        feats = self.reference_net(motion_latents.flatten(0, 1))  # per layer (B*M, HW, C)
        return [f.view(b, m, *f.shape[1:]) for f in feats]

    def conditions(self, ref_latent: Tensor | ReferenceCache, motion_latents: Tensor, audio_windows: Tensor,
                   ) -> ChunkConditions:
        reference = ref_latent if isinstance(ref_latent, ReferenceCache) else self.reference(ref_latent)
        return ChunkConditions(reference, self.motion_features(motion_latents), self.audio_proj(audio_windows))

    def bind(self, conditions: ChunkConditions) -> BranchedDenoiser:
        return BranchedDenoiser(self.denoiser, conditions)


class BranchedDenoiser:
    """The sampling interface (``fada_rt.sampling.Denoiser``) over a torch denoiser and one chunk's
    conditions: every requested CFG branch of every sample in ONE batched forward.

    Branch "a" uses reference and audio, "r" zeroes the audio tokens, "b" also masks the reference.
    """

    def __init__(self, denoiser: DenoisingUNet, conditions: ChunkConditions) -> None:
        self.denoiser = denoiser
        self.conditions = conditions
        self.cfg_conditioned = denoiser.cfg_conditioned

    def __call__(self, z: Tensor, timestep: Tensor, *, branches: Sequence[str], cfg: Tensor | None = None) -> Tensor:
        """z (B, F, C, h, w), timestep (B,) or per frame (B, F) -> eps (len(branches), B, F, C, h, w)."""
        unknown = [br for br in branches if br not in BRANCHES]
        if unknown or not branches:
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {tuple(branches)}")
        nb, b = len(branches), z.shape[0]
        c = self.conditions
        audio = torch.cat([c.audio_tokens if br == "a" else torch.zeros_like(c.audio_tokens) for br in branches])
        ref_mask = None
        if "b" in branches:
            ref_mask = torch.tensor([br != "b" for br in branches], device=z.device).repeat_interleave(b)

        def tile(x: Tensor) -> Tensor:
            return x.repeat((nb,) + (1,) * (x.dim() - 1))

        eps = self.denoiser(
            tile(z),
            tile(timestep.reshape(b) if timestep.numel() == b else timestep.reshape(b, z.shape[1])),
            audio,
            [tile(k) for k in c.reference.keys],
            [tile(v) for v in c.reference.values],
            [tile(m) for m in c.motion],
            ref_mask=ref_mask,
            cfg=tile(cfg) if cfg is not None else None,
        )  # (nb*B, F, C, h, w)
        return eps.view(nb, b, *z.shape[1:])
