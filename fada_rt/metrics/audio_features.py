"""Frame-synchronous audio features for the metrics (log-mel; MFCC for SyncNet).

Frame k of a clip covers samples [640 k, 640 (k+1)) (project convention); its log-mel
vector comes from a 1024-sample Hann window centred on that span (zero-padded at the ends),
so feature k and video frame k describe the same instant.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 640
N_FFT = 1024


def mel_filterbank(*, n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, fmin: float = 60.0, fmax: float = 7600.0) -> np.ndarray:
    """Triangular filters on the HTK mel scale, float32 (n_mels, n_fft // 2 + 1)."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins[None] - lower) / (centre - lower)
    fall = (upper - bins[None]) / (upper - centre)
    return np.clip(np.minimum(rise, fall), 0.0, None).astype(np.float32)


def frame_log_mel(audio: np.ndarray, *, num_frames: int, n_mels: int = 40) -> np.ndarray:
    """Log-mel energies per video frame: float32 (T, n_mels) for float audio (S,)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (S,), got shape {audio.shape}")
    pad = (N_FFT - SAMPLES_PER_FRAME) // 2
    need = num_frames * SAMPLES_PER_FRAME + 2 * pad
    x = np.zeros(need, np.float32)
    n = min(audio.shape[0], num_frames * SAMPLES_PER_FRAME)
    x[pad : pad + n] = audio[:n]
    idx = np.arange(num_frames)[:, None] * SAMPLES_PER_FRAME + np.arange(N_FFT)[None]  # (T, N_FFT)
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT).astype(np.float32), axis=1)) ** 2
    mel = spec @ mel_filterbank(n_mels=n_mels).T
    return np.log(mel + 1e-6).astype(np.float32)


def mfcc_100hz(audio: np.ndarray, *, n_mfcc: int = 13, n_mels: int = 40) -> np.ndarray:
    """MFCCs at 100 Hz (25 ms windows, 10 ms hop), float32 (n_mfcc, S // 160): SyncNet's input."""
    audio = np.asarray(audio, np.float32)
    win, hop = 400, 160
    n = audio.shape[0] // hop
    x = np.concatenate([np.zeros(win // 2, np.float32), audio, np.zeros(win, np.float32)])
    idx = np.arange(n)[:, None] * hop + np.arange(win)[None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hamming(win).astype(np.float32), n=512, axis=1)) ** 2
    mel = np.log(spec @ mel_filterbank(n_mels=n_mels, n_fft=512).T + 1e-6)
    return dct(mel, type=2, axis=1, norm="ortho")[:, :n_mfcc].T.astype(np.float32)
