"""Frame and audio degradations of tier B's "degraded" clips (docs/design.md §6).

Noise, blur and compression are the usual faults of crawled talking-head video. Strengths
are given in resolution-independent units (blur sigma as a fraction of the frame size) so
a 64x64 and a 512x512 clip look equally degraded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class Degradation:
    noise_sigma: float  # Gaussian pixel noise, in [0, 255] units (0 = none)
    blur_sigma: float  # Gaussian blur, as a fraction of the frame size (0 = none)
    jpeg_quality: int  # JPEG quality of every frame (100 = none)
    audio_snr_db: float  # white noise added to the audio (inf = none)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_degradation(rng: np.random.Generator) -> Degradation:
    """One to three faults, each drawn at a visible strength."""
    faults = rng.permutation(3)[: int(rng.integers(1, 4))]
    return Degradation(
        noise_sigma=float(rng.uniform(5, 15)) if 0 in faults else 0.0,
        blur_sigma=float(rng.uniform(0.01, 0.025)) if 1 in faults else 0.0,
        jpeg_quality=int(rng.integers(8, 30)) if 2 in faults else 100,
        audio_snr_db=float(rng.uniform(10, 25)) if rng.random() < 0.5 else float("inf"),
    )


def degrade_frames(frames: np.ndarray, d: Degradation, *, rng: np.random.Generator) -> np.ndarray:
    """Apply blur, then noise, then JPEG to uint8 frames (T, H, W, 3)."""
    x = frames.astype(np.float32)
    if d.blur_sigma > 0:
        x = blur(x, sigma=d.blur_sigma * frames.shape[1])
    if d.noise_sigma > 0:
        x = x + rng.normal(0.0, d.noise_sigma, x.shape).astype(np.float32)
    out = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if d.jpeg_quality < 100:
        out = jpeg(out, quality=d.jpeg_quality)
    return out


def degrade_audio(audio: np.ndarray, d: Degradation, *, rng: np.random.Generator) -> np.ndarray:
    if not np.isfinite(d.audio_snr_db):
        return audio
    power = float(np.mean(audio.astype(np.float64) ** 2)) + 1e-12
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (d.audio_snr_db / 10)), audio.shape)
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def blur(frames: np.ndarray, *, sigma: float) -> np.ndarray:
    """Spatial Gaussian blur (sigma in pixels) of float or uint8 frames (T, H, W, 3)."""
    out = gaussian_filter(frames.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="nearest")
    return out if frames.dtype != np.uint8 else np.clip(np.round(out), 0, 255).astype(np.uint8)


def jpeg(frames: np.ndarray, *, quality: int) -> np.ndarray:
    """Round-trip every uint8 RGB frame through JPEG at ``quality`` (1..100)."""
    out = np.empty_like(frames)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
    for i, frame in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", frame[..., ::-1], params)
        if not ok:
            raise RuntimeError("OpenCV failed to JPEG-encode a frame")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out
