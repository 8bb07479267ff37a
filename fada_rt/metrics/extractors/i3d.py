"""I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?") for FVD.

Inflated Inception-v1: every 2-D convolution and pooling of GoogLeNet becomes 3-D, with
TensorFlow-style "SAME" padding (asymmetric where the stride demands it; pooling pads
with -inf). Inputs: (N, 3, F, 224, 224) in [-1, 1]; FVD uses F = 16 and the 400 logits
(``feature="logits"``) averaged over the remaining time steps; ``feature="pool"`` gives
the 1024-d pooled features. Spatial and temporal extents are averaged globally before the
logits layer, which for 224x224x16 inputs equals the paper's 2x7x7 average pool.

Parameter names: ``Conv3d_1a_7x7.conv.weight``, ``...bn.*``, ``Mixed_3b.b0``, ``.b1a``,
``.b1b``, ``.b2a``, ``.b2b``, ``.b3b`` (each a Unit3D), ``logits.weight``, ``logits.bias``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fada_rt.metrics.extractors.weights import load_strict


def same_pad(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float = 0.0) -> torch.Tensor:
    """Pad (N, C, T, H, W) as TensorFlow's "SAME" does (extra padding after)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """SAME-padded Conv3d (no bias) + BatchNorm (eps 1e-3) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv3d(cin, cout, self.kernel, stride=self.stride, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(same_pad(x, self.kernel, self.stride))))


def max_pool_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    return F.max_pool3d(same_pad(x, tuple(kernel), tuple(stride), value=float("-inf")), kernel, stride)


class Mixed(nn.Module):
    """Inflated Inception module: 1x1 | 1x1->3x3x3 | 1x1->3x3x3 | 3x3x3 max-pool->1x1."""

    def __init__(self, cin: int, c0: int, c1: tuple[int, int], c2: tuple[int, int], c3: int):
        super().__init__()
        self.b0 = Unit3D(cin, c0)
        self.b1a, self.b1b = Unit3D(cin, c1[0]), Unit3D(c1[0], c1[1], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c2[0]), Unit3D(c2[0], c2[1], (3, 3, 3))
        self.b3b = Unit3D(cin, c3)
        self.out_channels = c0 + c1[1] + c2[1] + c3

    def forward(self, x):
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], 1)


class I3D(nn.Module):
    """(N, 3, F, H, W) in [-1, 1] -> (logits (N, classes), pooled (N, 1024))."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.Mixed_3b = Mixed(192, 64, (96, 128), (16, 32), 32)
        self.Mixed_3c = Mixed(256, 128, (128, 192), (32, 96), 64)
        self.Mixed_4b = Mixed(480, 192, (96, 208), (16, 48), 64)
        self.Mixed_4c = Mixed(512, 160, (112, 224), (24, 64), 64)
        self.Mixed_4d = Mixed(512, 128, (128, 256), (24, 64), 64)
        self.Mixed_4e = Mixed(512, 112, (144, 288), (32, 64), 64)
        self.Mixed_4f = Mixed(528, 256, (160, 320), (32, 128), 128)
        self.Mixed_5b = Mixed(832, 256, (160, 320), (32, 128), 128)
        self.Mixed_5c = Mixed(832, 384, (192, 384), (48, 128), 128)
        self.logits = nn.Conv3d(1024, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv3d_1a_7x7(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for block in (self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f):
            x = block(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))  # (N, 1024, F/8, H/32, W/32)
        pooled = x.mean(dim=(2, 3, 4), keepdim=True)  # (N, 1024, 1, 1, 1)
        return self.logits(pooled).flatten(1), pooled.flatten(1)


@dataclass(frozen=True)
class I3DConfig:
    input_size: int = 224
    frames_per_clip: int = 16
    feature: str = "logits"  # or "pool"
    batch: int = 4


class I3DFeatures:
    """Clip extractor for ``fvd``: uint8 (N, F, H, W, 3) -> float64 (N, 400 or 1024)."""

    name = "i3d"

    def __init__(self, net: I3D, cfg: I3DConfig = I3DConfig()):
        if cfg.feature not in ("logits", "pool"):
            raise ValueError(f"I3D feature must be 'logits' or 'pool', got {cfg.feature!r}")
        self.net, self.cfg = net.eval(), cfg
        self.frames_per_clip = cfg.frames_per_clip

    @staticmethod
    def from_file(path: str | Path, cfg: I3DConfig = I3DConfig(), num_classes: int = 400) -> I3DFeatures:
        return I3DFeatures(load_strict(I3D(num_classes), path, what="I3D"), cfg)

    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows)
        if windows.ndim != 5 or windows.shape[1] != self.frames_per_clip:
            raise ValueError(f"windows must be (N, {self.frames_per_clip}, H, W, 3), got shape {windows.shape}")
        p = next(self.net.parameters())
        out = []
        for i in range(0, len(windows), self.cfg.batch):
            w = torch.from_numpy(np.ascontiguousarray(windows[i : i + self.cfg.batch])).to(p.device).to(p.dtype)
            n, f, h, wd, _ = w.shape
            x = w.reshape(n * f, h, wd, 3).permute(0, 3, 1, 2)
            x = F.interpolate(x, size=(self.cfg.input_size,) * 2, mode="bilinear", align_corners=False) / 127.5 - 1.0
            x = x.reshape(n, f, 3, self.cfg.input_size, self.cfg.input_size).transpose(1, 2)  # (N, 3, F, S, S)
            logits, pooled = self.net(x)
            out.append((logits if self.cfg.feature == "logits" else pooled).double().cpu())
        return torch.cat(out).numpy()
