"""SyncNet (Chung & Zisserman 2016, "Out of time: automated lip sync in the wild").

Two streams map 0.2 s of audio and video to a shared 256-d space where in-sync pairs are
close (the real-world LSE-C / LSE-D of ``sync``):

* audio: 13 MFCCs x 20 steps (100 Hz) -> conv 3x3 64 -> conv 3x3 128 -> max-pool 3x3 /(1,2)
  -> conv 3x3 256 x3 -> max-pool 3x3 /2 -> fc6 (a 5x4 conv) 512 -> fc7 256;
* video: 5 grey mouth crops of ``video_size`` (111) stacked as channels -> conv 7x7/2 96 ->
  max-pool 3x3/2 -> conv 5x5/2 256 -> max-pool 3x3/2 -> conv 3x3 512 x3 -> max-pool 3x3/2 ->
  fc6 (a conv covering the remaining map) 4096 -> fc7 256.

Convolutions are followed by BatchNorm and ReLU. The mouth crop is the lower half of the
(face-centred) frame. Per video frame k the video window is frames k-2..k+2 and the audio
window the matching 20 MFCC steps (edges repeat the first / last frame).

Parameter names: ``audio.conv{1..5}.{conv,bn}.*``, ``audio.fc6.*``, ``audio.fc7.*``, and the
same under ``video.``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fada_rt.metrics.audio_features import mfcc_100hz
from fada_rt.metrics.extractors.weights import load_strict

WINDOW = 5  # video frames per embedding
MFCC_PER_FRAME = 4  # 100 Hz MFCC steps per 25 fps frame


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class AudioStream(nn.Module):
    """(N, 1, 13, 20) MFCC -> (N, 256)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = ConvBN(1, 64, 3, padding=1), ConvBN(64, 128, 3, padding=1)
        self.conv3, self.conv4, self.conv5 = ConvBN(128, 256, 3, padding=1), ConvBN(256, 256, 3, padding=1), ConvBN(256, 256, 3, padding=1)
        self.fc6 = ConvBN(256, 512, (5, 4))
        self.fc7 = nn.Linear(512, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv2(self.conv1(x)), 3, stride=(1, 2))  # (N, 128, 11, 9)
        x = F.max_pool2d(self.conv5(self.conv4(self.conv3(x))), 3, stride=2)  # (N, 256, 5, 4)
        return self.fc7(self.fc6(x).flatten(1))


class VideoStream(nn.Module):
    """(N, 5, S, S) grey mouth crops -> (N, 256)."""

    def __init__(self, video_size: int = 111):
        super().__init__()
        self.conv1 = ConvBN(WINDOW, 96, 7, stride=2)
        self.conv2 = ConvBN(96, 256, 5, stride=2, padding=1)
        self.conv3, self.conv4, self.conv5 = ConvBN(256, 512, 3, padding=1), ConvBN(512, 512, 3, padding=1), ConvBN(512, 512, 3, padding=1)
        side = _pool(_conv(_pool(_conv(video_size, 7, 2, 0)), 5, 2, 1))
        side = _pool(side)
        if side < 1:
            raise ValueError(f"video_size {video_size} is too small for SyncNet's video stream")
        self.fc6 = ConvBN(512, 4096, side)
        self.fc7 = nn.Linear(4096, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 3, stride=2)
        x = F.max_pool2d(self.conv2(x), 3, stride=2)
        x = F.max_pool2d(self.conv5(self.conv4(self.conv3(x))), 3, stride=2)
        return self.fc7(self.fc6(x).flatten(1))


class SyncNet(nn.Module):
    def __init__(self, video_size: int = 111):
        super().__init__()
        self.audio = AudioStream()
        self.video = VideoStream(video_size)


@dataclass(frozen=True)
class SyncNetConfig:
    video_size: int = 111
    batch: int = 64


class SyncNetEmbedder:
    """Sync embedder for ``sync.sync_score``: (frames, audio) -> (video (T, 256), audio (T, 256))."""

    name = "syncnet"

    def __init__(self, net: SyncNet, cfg: SyncNetConfig = SyncNetConfig()):
        self.net, self.cfg = net.eval(), cfg

    @staticmethod
    def from_file(path: str | Path, cfg: SyncNetConfig = SyncNetConfig()) -> SyncNetEmbedder:
        return SyncNetEmbedder(load_strict(SyncNet(cfg.video_size), path, what="SyncNet"), cfg)

    @torch.no_grad()
    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = frames.shape[0]
        s = self.cfg.video_size
        h = frames.shape[1]
        mouths = np.stack([cv2.resize(cv2.cvtColor(f[h // 2 :], cv2.COLOR_RGB2GRAY), (s, s), interpolation=cv2.INTER_AREA) for f in frames])
        idx = np.clip(np.arange(t)[:, None] + np.arange(-(WINDOW // 2), WINDOW // 2 + 1)[None], 0, t - 1)  # (T, 5)
        video = torch.from_numpy(mouths[idx].astype(np.float32) / 127.5 - 1.0)  # (T, 5, S, S)
        mfcc = mfcc_100hz(audio)  # (13, steps)
        steps = WINDOW * MFCC_PER_FRAME
        start = (np.arange(t) - WINDOW // 2) * MFCC_PER_FRAME
        cols = np.clip(start[:, None] + np.arange(steps)[None], 0, mfcc.shape[1] - 1)  # (T, 20)
        aud = torch.from_numpy(np.ascontiguousarray(mfcc[:, cols].transpose(1, 0, 2)))[:, None]  # (T, 1, 13, 20)
        p = next(self.net.parameters())
        b = self.cfg.batch
        v = torch.cat([self.net.video(video[i : i + b].to(p)) for i in range(0, t, b)])
        a = torch.cat([self.net.audio(aud[i : i + b].to(p)) for i in range(0, t, b)])
        return v.double().cpu().numpy(), a.double().cpu().numpy()


def _conv(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _pool(n: int) -> int:
    return (n - 3) // 2 + 1
