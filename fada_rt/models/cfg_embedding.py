"""How a CFG-distilled student receives the guidance scales (paper §3.3, docs/design.md §3.6).

* ``layer_tokens`` — learnable tokens gamma_b, gamma_r, gamma_a, each ``(N_cfg, D)``, combined as
  Eq. 10: ``Emb_cfg = cfg_a (gamma_a - gamma_r) + cfg_r (gamma_r - gamma_b) + gamma_b``. This mirrors
  Eq. 9's combination of the three branches' predictions.
* ``layer_mlp`` — the CFG layer without tokens: ``Emb_cfg`` from an MLP of the sinusoidal embedding
  of the two scales (Table 4, "CFG layer w/o tokens").
* ``time_embed`` — the w-condition of Meng et al.: the sinusoidal embedding of the scales goes
  through a zero-initialised projection into the UNet's timestep embedding (diffusers'
  ``TimestepEmbedding.cond_proj``), no CFG layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fada_rt.config import CFGConfig

#: std of the learnable tokens' initialisation
TOKEN_INIT_STD = 1.0


def scale_embedding(cfg: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of guidance scales: cfg (B, 2) -> (B, 2 * dim).

    Scales are embedded as ``1000 * (w - 1) / 10`` in the timestep-like frequency ladder, so the
    useful range ~[1, 10] spans the embedding like timesteps 0..1000 do.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=cfg.device, dtype=torch.float32) / half)
    w = (cfg.float() - 1.0) * 100.0  # (B, 2)
    angles = w[..., None] * freqs  # (B, 2, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, 2, dim)
    return emb.flatten(1)


class CFGEmbedding(nn.Module):
    """Maps per-sample scales ``cfg = [cfg_a, cfg_r]`` (B, 2) to the student's CFG conditioning."""

    def __init__(self, config: CFGConfig) -> None:
        super().__init__()
        self.mode = config.mode
        self.num_tokens = config.num_tokens
        self.dim = config.embed_dim
        if self.mode == "layer_tokens":
            # unit scale, like the audio tokens beside them: with the CFG layer's zero output projection,
            # tokens near zero would leave both factors of its output near zero (a saddle it is slow to leave)
            init = torch.randn(3, config.num_tokens, config.embed_dim) * TOKEN_INIT_STD
            self.gamma = nn.Parameter(init)  # rows: gamma_b, gamma_r, gamma_a
        elif self.mode == "layer_mlp":
            self.mlp = nn.Sequential(
                nn.Linear(2 * config.embed_dim, config.embed_dim),
                nn.SiLU(),
                nn.Linear(config.embed_dim, config.num_tokens * config.embed_dim),
            )
        elif self.mode != "time_embed":
            raise ValueError(f"CFGEmbedding is for CFG-conditioned students, got mode {self.mode!r}")

    @property
    def time_cond_dim(self) -> int:
        return 2 * self.dim

    def tokens(self, cfg: Tensor) -> Tensor:
        """cfg (B, 2) -> Emb_cfg (B, N_cfg, D) for the CFG layers."""
        if self.mode == "layer_tokens":
            gamma_b, gamma_r, gamma_a = self.gamma.unbind(0)  # (N_cfg, D) each
            cfg_a = cfg[:, 0, None, None].to(self.gamma.dtype)
            cfg_r = cfg[:, 1, None, None].to(self.gamma.dtype)
            return cfg_a * (gamma_a - gamma_r) + cfg_r * (gamma_r - gamma_b) + gamma_b  # Eq. 10
        if self.mode == "layer_mlp":
            emb = scale_embedding(cfg, self.dim).to(self.mlp[0].weight.dtype)
            return self.mlp(emb).view(cfg.shape[0], self.num_tokens, self.dim)
        raise RuntimeError(f"mode {self.mode!r} has no CFG tokens")

    def time_condition(self, cfg: Tensor) -> Tensor:
        """cfg (B, 2) -> (B, 2*D), the ``timestep_cond`` fed to the UNet's time embedding."""
        return scale_embedding(cfg, self.dim)
