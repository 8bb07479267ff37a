"""Audio front-ends: 16 kHz mono waveform -> ``(B, T, L, D)`` features at the video frame rate.

Video frame ``k`` covers samples ``[k*spf, (k+1)*spf)`` (spf = 640 at 16 kHz / 25 fps), so a clip
of ``S`` samples has ``T = ceil(S / spf)`` frames. Both front-ends have a bounded receptive field
for the mel one and are windowed by ``±window`` frames (:func:`window_features`) before AudioProj.

* :class:`MelFrontend` — log-mel from a torch STFT, no weights. Mel frame ``j`` is centred on
  sample ``(j + 1/2) * hop``; video frame ``k`` stacks mel frames ``kL .. kL+L-1`` (L = spf/hop)
  as its "layers". Fixed log scaling (no per-utterance statistics), so features computed on a
  stream with enough left context and look-ahead equal the offline ones.
* :class:`Wav2Vec2Frontend` — transformers' ``Wav2Vec2Model``; all transformer layers
  (``hidden_states[1:]``, as Hallo does), 50 Hz resampled linearly to the frame rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fada_rt.config import AudioConfig


def num_video_frames(num_samples: int, config: AudioConfig) -> int:
    return math.ceil(num_samples / config.samples_per_frame)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """(n_mels, n_fft//2 + 1) triangular filters on the HTK mel scale, area-normalised."""
    def hz_to_mel(f: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    fb = fb * (2.0 / (upper - lower))  # equal area per filter
    return fb.float()


class MelFrontend(nn.Module):
    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        if config.kind != "mel":
            raise ValueError(f"MelFrontend needs an audio config of kind 'mel', got {config.kind!r}")
        self.config = config
        fb = mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.dim,
                            f_min=config.f_min, f_max=config.f_max)
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True), persistent=False)

    @property
    def left_pad(self) -> int:
        """Samples before sample 0 that the first mel frame reads (zeros offline)."""
        return self.config.n_fft // 2 - self.config.hop_length // 2

    def forward(self, wave: Tensor) -> Tensor:
        """wave (B, S) float in [-1, 1] -> (B, T, L, D)."""
        c = self.config
        b, s = wave.shape
        t = num_video_frames(s, c)
        n_mel_frames = t * c.num_layers
        right = (n_mel_frames - 1) * c.hop_length + c.n_fft - self.left_pad - s
        padded = F.pad(wave.float(), (self.left_pad, right))  # (B, S')
        spec = torch.stft(padded, c.n_fft, c.hop_length, window=self.window, center=False, return_complex=True)
        power = spec.real**2 + spec.imag**2  # (B, n_fft//2+1, T*L)
        mel = torch.matmul(self.filterbank, power)  # (B, D, T*L)
        logmel = (torch.log10(mel + 1e-10) + c.log_offset) / c.log_scale
        return logmel.view(b, c.dim, t, c.num_layers).permute(0, 2, 3, 1).contiguous()  # (B, T, L, D)


class Wav2Vec2Frontend(nn.Module):
    def __init__(self, config: AudioConfig, model: nn.Module | None = None) -> None:
        """``model``: a transformers ``Wav2Vec2Model`` (from a local folder); random-init base otherwise."""
        super().__init__()
        if config.kind != "wav2vec2":
            raise ValueError(f"Wav2Vec2Frontend needs an audio config of kind 'wav2vec2', got {config.kind!r}")
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        self.config = config
        if model is None:
            model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=config.dim, num_hidden_layers=config.num_layers))
        if model.config.hidden_size != config.dim or model.config.num_hidden_layers != config.num_layers:
            raise ValueError(
                f"wav2vec2 model has {model.config.num_hidden_layers} layers x {model.config.hidden_size}, "
                f"the preset expects {config.num_layers} x {config.dim}"
            )
        self.model = model

    def forward(self, wave: Tensor) -> Tensor:
        """wave (B, S) float in [-1, 1] -> (B, T, L, D)."""
        c = self.config
        t = num_video_frames(wave.shape[1], c)
        x = wave.float()
        if c.normalize_waveform:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)
        min_len = 400  # the conv stack's receptive field
        if x.shape[1] < min_len:
            x = F.pad(x, (0, min_len - x.shape[1]))
        hidden = self.model(x.to(next(self.model.parameters()).dtype), output_hidden_states=True).hidden_states
        feats = torch.stack(hidden[1:], dim=2)  # (B, T50, L, D)
        b, t50, layers, d = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(b, layers * d, t50)
        resampled = F.interpolate(flat.float(), size=t, mode="linear", align_corners=False)  # (B, L*D, T)
        return resampled.view(b, layers, d, t).permute(0, 3, 1, 2).contiguous()  # (B, T, L, D)


def build_audio_frontend(config: AudioConfig, model: nn.Module | None = None) -> nn.Module:
    if config.kind == "mel":
        if model is not None:
            raise ValueError("the mel front-end has no weights; do not pass a model")
        return MelFrontend(config)
    return Wav2Vec2Frontend(config, model)


def window_features(features: Tensor, window: int) -> Tensor:
    """(B, T, L, D) -> (B, T, 2*window+1, L, D): frames k-window..k+window, edges replicated."""
    t = features.shape[1]
    idx = torch.arange(t, device=features.device)[:, None] + torch.arange(-window, window + 1, device=features.device)
    idx = idx.clamp(0, t - 1)  # (T, W)
    return features[:, idx]
