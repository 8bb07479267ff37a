"""InceptionV3 (Szegedy et al. 2016, "Rethinking the Inception Architecture") for FID.

Features are the 2048-d global average pool after the last Inception block ("pool3" of the
FID reference graph). As in that graph, pooling branches average without counting the
padding, and the last block's pooling branch takes the maximum. Input frames are resized
(bilinear) to ``input_size`` (299 for FID; any size >= 75 works) and scaled to [-1, 1].

Parameter names (for converting a checkpoint): ``Conv2d_1a_3x3.conv.weight``,
``Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var,num_batches_tracked}``,
``Mixed_5b.b1x1...``, ``Mixed_5b.b5x5_1...`` etc., as built below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fada_rt.metrics.extractors.weights import load_strict


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block: 1x1, 1x1->5x5, 1x1->3x3->3x3, pool->1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.b1x1 = BasicConv(cin, 64, 1)
        self.b5x5_1, self.b5x5_2 = BasicConv(cin, 48, 1), BasicConv(48, 64, 5, padding=2)
        self.b3x3_1, self.b3x3_2, self.b3x3_3 = BasicConv(cin, 64, 1), BasicConv(64, 96, 3, padding=1), BasicConv(96, 96, 3, padding=1)
        self.bpool = BasicConv(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.b1x1(x), self.b5x5_2(self.b5x5_1(x)), self.b3x3_3(self.b3x3_2(self.b3x3_1(x))), self.bpool(_avg3(x))], 1)


class BlockB(nn.Module):
    """35 -> 17 reduction: 3x3/2, 1x1->3x3->3x3/2, max-pool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.b3x3 = BasicConv(cin, 384, 3, stride=2)
        self.bd_1, self.bd_2, self.bd_3 = BasicConv(cin, 64, 1), BasicConv(64, 96, 3, padding=1), BasicConv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.b3x3(x), self.bd_3(self.bd_2(self.bd_1(x))), F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block with 7x7 convolutions factorised into 1x7 and 7x1."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.b1x1 = BasicConv(cin, 192, 1)
        self.b7_1, self.b7_2, self.b7_3 = BasicConv(cin, c7, 1), BasicConv(c7, c7, (1, 7), padding=(0, 3)), BasicConv(c7, 192, (7, 1), padding=(3, 0))
        self.bd_1 = BasicConv(cin, c7, 1)
        self.bd_2 = BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.bd_3 = BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.bd_4 = BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.bd_5 = BasicConv(c7, 192, (1, 7), padding=(0, 3))
        self.bpool = BasicConv(cin, 192, 1)

    def forward(self, x):
        b7 = self.b7_3(self.b7_2(self.b7_1(x)))
        bd = self.bd_5(self.bd_4(self.bd_3(self.bd_2(self.bd_1(x)))))
        return torch.cat([self.b1x1(x), b7, bd, self.bpool(_avg3(x))], 1)


class BlockD(nn.Module):
    """17 -> 8 reduction: 1x1->3x3/2, 1x1->1x7->7x1->3x3/2, max-pool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.b3_1, self.b3_2 = BasicConv(cin, 192, 1), BasicConv(192, 320, 3, stride=2)
        self.b7_1 = BasicConv(cin, 192, 1)
        self.b7_2 = BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.b7_3 = BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.b7_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.b3_2(self.b3_1(x)), self.b7_4(self.b7_3(self.b7_2(self.b7_1(x)))), F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with expanded filter banks (1x3 and 3x1 side by side)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.b1x1 = BasicConv(cin, 320, 1)
        self.b3_1 = BasicConv(cin, 384, 1)
        self.b3_2a, self.b3_2b = BasicConv(384, 384, (1, 3), padding=(0, 1)), BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.bd_1, self.bd_2 = BasicConv(cin, 448, 1), BasicConv(448, 384, 3, padding=1)
        self.bd_3a, self.bd_3b = BasicConv(384, 384, (1, 3), padding=(0, 1)), BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.bpool = BasicConv(cin, 192, 1)

    def forward(self, x):
        b3 = self.b3_1(x)
        bd = self.bd_2(self.bd_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.b1x1(x), self.b3_2a(b3), self.b3_2b(b3), self.bd_3a(bd), self.bd_3b(bd), self.bpool(pooled)], 1)


class InceptionV3(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (N, 2048) pooled features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = BlockC(768, 128), BlockC(768, 160), BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))  # (N, 2048)


@dataclass(frozen=True)
class InceptionConfig:
    input_size: int = 299
    batch: int = 32


class InceptionFeatures:
    """Frame extractor for ``fid``: uint8 (N, H, W, 3) -> float64 (N, 2048)."""

    name = "inception-v3-pool3"
    dim = 2048

    def __init__(self, net: InceptionV3, cfg: InceptionConfig = InceptionConfig()):
        if cfg.input_size < 75:
            raise ValueError(f"InceptionV3 needs inputs of at least 75x75, got {cfg.input_size}")
        self.net, self.cfg = net.eval(), cfg

    @staticmethod
    def from_file(path: str | Path, cfg: InceptionConfig = InceptionConfig()) -> InceptionFeatures:
        return InceptionFeatures(load_strict(InceptionV3(), path, what="InceptionV3"), cfg)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        p = next(self.net.parameters())
        out = []
        for i in range(0, len(frames), self.cfg.batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.cfg.batch])).to(p.device).permute(0, 3, 1, 2).to(p.dtype)
            x = F.interpolate(x, size=(self.cfg.input_size,) * 2, mode="bilinear", align_corners=False) / 127.5 - 1.0
            out.append(self.net(x).double().cpu())
        return torch.cat(out).numpy()
