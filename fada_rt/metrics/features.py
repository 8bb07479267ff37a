"""The fixed feature space of the FID / FVD analogues (synthetic world, docs/design.md §6).

Nothing here is trained: the space is hand-made plus seeded random weights (numpy PCG64
from ``FEATURE_SEED``, the same on every machine). Frames are first area-resized to 64x64.

Frame features (``FixedFrameFeatures``, 118 numbers):

* texture (54): for 3 scales (64, 32, 16 px) and each RGB channel, the log of 6 quantiles
  (25, 50, 75, 90, 97, 99.5 %) of the absolute band-pass response |x - binomial3x3(x)| in
  8-bit levels. The world is made of smooth shapes, so clean frames have tiny band-pass
  values almost everywhere: pixel noise and compression raise the low quantiles, blur
  lowers the high ones — whatever the identity.
* content (64): a three-layer conv net with seeded random zero-mean filters, its ReLU
  responses average-pooled to 4x4 / 4x4 / 2x2 grids, plus the 4x4 mean colour, mapped by a
  fixed random projection and scaled by 0.5. It sees layout, colour and shapes.

Clip features (``FixedClipFeatures``, 78 numbers per 16-frame window): window means of the
texture quantiles averaged over colour channels (18) and of the first 16 content numbers
(16); the mean absolute frame-to-frame change of those 16 content numbers (16); the log of
6 quantiles of the per-pixel absolute temporal difference at 64 and 32 px (12); and the log
mean absolute temporal difference on a 4x4 grid (16). Appearance and how it moves, so
frame-shuffled clips (same frames, wrong order) stand out while their FID does not move.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fada_rt.metrics.mouth import frames_to_input

FEATURE_SEED = 20240611
CLIP_FRAMES = 16
QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.97, 0.995)
LEVELS = 3
TEXTURE_DIM = LEVELS * 3 * len(QUANTILES)  # 54
CONTENT_DIM = 64
CONTENT_WEIGHT = 0.5
_EPS_LEVELS = 0.25  # floor (8-bit levels) inside the logs


class FixedFrameFeatures:
    """uint8 frames (N, H, W, 3) -> float64 features (N, 118); see the module doc."""

    name = "fixed-texture-content"
    dim = TEXTURE_DIM + CONTENT_DIM

    def __init__(self, seed: int = FEATURE_SEED):
        rng = np.random.default_rng(seed)
        self.w1 = _filters(rng, 32, 3, 5)
        self.w2 = _filters(rng, 64, 32, 3)
        self.w3 = _filters(rng, 64, 64, 3)
        raw = 32 * 16 + 64 * 16 + 64 * 4 + 3 * 16
        self.proj = torch.from_numpy(rng.standard_normal((raw, CONTENT_DIM)) / np.sqrt(raw)).float()

    @torch.no_grad()
    def __call__(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        x = frames_to_input(frames, 64)  # (N, 3, 64, 64) in [-1, 1]
        return torch.cat([self.features(x[i : i + batch]) for i in range(0, x.shape[0], batch)]).double().numpy()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.texture(x), self.content(x)], 1)  # (N, 118)

    def texture(self, x: torch.Tensor) -> torch.Tensor:
        out, level = [], x * 127.5
        for _ in range(LEVELS):
            smooth = _binomial(level)
            band = (level - smooth).abs().flatten(2)  # (N, 3, HW)
            q = _quantiles(band)  # (N, 3, Q)
            out.append(torch.log(q + _EPS_LEVELS).flatten(1))
            level = F.avg_pool2d(smooth, 2)
        return torch.cat(out, 1)  # (N, 54)

    def content(self, x: torch.Tensor) -> torch.Tensor:
        h1 = F.relu(F.conv2d(x, self.w1, stride=2, padding=2))  # (N, 32, 32, 32)
        h2 = F.relu(F.conv2d(h1, self.w2, stride=2, padding=1))  # (N, 64, 16, 16)
        h3 = F.relu(F.conv2d(h2, self.w3, stride=2, padding=1))  # (N, 64, 8, 8)
        pooled = [F.adaptive_avg_pool2d(h, s).flatten(1) for h, s in ((h1, 4), (h2, 4), (h3, 2), (x, 4))]
        return torch.cat(pooled, 1) @ self.proj * CONTENT_WEIGHT  # (N, 64)


class FixedClipFeatures:
    """uint8 windows (N, 16, H, W, 3) -> float64 features (N, 78); see the module doc."""

    name = "fixed-texture-content-temporal"
    frames_per_clip = CLIP_FRAMES

    def __init__(self, frame_features: FixedFrameFeatures | None = None):
        self.frame_features = frame_features or FixedFrameFeatures()

    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows)
        if windows.ndim != 5 or windows.shape[1] < 2:
            raise ValueError(f"windows must be uint8 (N, F>=2, H, W, 3), got shape {windows.shape}")
        n, f = windows.shape[:2]
        x = frames_to_input(windows.reshape(n * f, *windows.shape[2:]), 64)  # (N F, 3, 64, 64)
        ff = self.frame_features
        texture = ff.texture(x).reshape(n, f, LEVELS, 3, len(QUANTILES)).mean(3).flatten(2)  # (N, F, 18)
        content = ff.content(x)[:, :16].reshape(n, f, 16)
        luma = (x.mean(1) * 127.5).reshape(n, f, 64, 64)
        step = (luma[:, 1:] - luma[:, :-1]).abs()  # (N, F-1, 64, 64)
        step_half = F.avg_pool2d(luma, 2)
        step_half = (step_half[:, 1:] - step_half[:, :-1]).abs()
        temporal = [torch.log(_quantiles(s.flatten(1)) + _EPS_LEVELS) for s in (step, step_half)]  # (N, 6) x2
        grid = torch.log(F.adaptive_avg_pool2d(step.mean(1, keepdim=True), 4).flatten(1) + _EPS_LEVELS)  # (N, 16)
        parts = [texture.mean(1), content.mean(1), (content[:, 1:] - content[:, :-1]).abs().mean(1), *temporal, grid]
        return torch.cat(parts, 1).double().numpy()  # (N, 78)


def clip_windows(frames: np.ndarray, *, length: int = CLIP_FRAMES, stride: int = CLIP_FRAMES // 2) -> np.ndarray:
    """All windows of ``length`` frames, ``stride`` apart: (N, length, H, W, 3); N may be 0."""
    t = frames.shape[0]
    if t < length:
        return np.zeros((0, length, *frames.shape[1:]), frames.dtype)
    return np.stack([frames[s : s + length] for s in range(0, t - length + 1, stride)])


def _quantiles(x: torch.Tensor) -> torch.Tensor:
    """``QUANTILES`` of the last axis with linear interpolation (as torch.quantile), (..., n) -> (..., Q).

    np.partition finds only the needed order statistics: about twice as fast as sorting.
    """
    a = x.detach().cpu().numpy()
    pos = np.asarray(QUANTILES) * (a.shape[-1] - 1)
    lo, hi = np.floor(pos).astype(int), np.ceil(pos).astype(int)
    part = np.partition(a, sorted(set(lo) | set(hi)), axis=-1)
    frac = (pos - lo).astype(a.dtype)
    return torch.from_numpy(part[..., lo] * (1 - frac) + part[..., hi] * frac).to(x.dtype)


def _binomial(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur per channel with edge replication, (N, C, H, W) -> same."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    k = (k[:, None] * k[None]) / 16.0
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3).contiguous(), groups=c)


def _filters(rng: np.random.Generator, cout: int, cin: int, k: int) -> torch.Tensor:
    """Zero-mean random filters (respond to structure, not flat colour), He-scaled."""
    w = rng.standard_normal((cout, cin, k, k))
    w -= w.mean(axis=(1, 2, 3), keepdims=True)
    w *= np.sqrt(2.0 / (cin * k * k)) / (w.std(axis=(1, 2, 3), keepdims=True) + 1e-12)
    return torch.from_numpy(w).float()
