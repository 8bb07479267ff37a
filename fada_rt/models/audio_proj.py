"""AudioProj: windowed audio features -> per-frame audio tokens (docs/design.md §2, after Hallo)."""

from __future__ import annotations

from torch import Tensor, nn

from fada_rt.config import AudioConfig, AudioProjConfig


class AudioProj(nn.Module):
    """MLP from the ``(2w+1, L, D)`` window of a frame to ``N_audio`` tokens of ``D_audio``."""

    def __init__(self, audio: AudioConfig, proj: AudioProjConfig, token_dim: int) -> None:
        super().__init__()
        self.num_tokens = proj.num_tokens
        self.token_dim = token_dim
        in_dim = audio.window_frames * audio.num_layers * audio.dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, proj.hidden_dim),
            nn.SiLU(),
            nn.Linear(proj.hidden_dim, proj.hidden_dim),
            nn.SiLU(),
            nn.Linear(proj.hidden_dim, proj.num_tokens * token_dim),
        )
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, windows: Tensor) -> Tensor:
        """windows (B, T, 2w+1, L, D) -> tokens (B, T, N_audio, D_audio)."""
        b, t = windows.shape[:2]
        x = self.mlp(windows.flatten(2).to(self.mlp[0].weight.dtype))  # (B, T, N*D_audio)
        return self.norm(x.view(b, t, self.num_tokens, self.token_dim))
