"""Mouth-state estimator of the synthetic world's metrics (docs/design.md §6).

Two small networks trained on ground-truth frames and audio of the world by
``python -m train.mouth_estimator``:

* ``FaceStateNet``: a frame (resized to 64x64) -> mouth openness, mouth width, eye closure,
  head dx, dy, roll, brow raise (the generator's per-frame labels, normalised).
* ``AudioMouthNet``: log-mel of frames k-2..k+2 -> mouth openness and width at frame k,
  i.e. what the mouth *should* do for this audio (the audio stream of the sync metric).

Weights live in ``fada_rt/metrics/weights/`` as ``mouth.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fada_rt.metrics.audio_features import frame_log_mel

WEIGHTS_DIR = Path(__file__).parent / "weights"
STATE_NAMES = ("open", "width", "blink", "dx", "dy", "roll", "brow")
# Division that brings each label to roughly unit range for training.
STATE_SCALE = (1.0, 1.0, 1.0, 0.05, 0.03, 0.1, 1.0)


@dataclass(frozen=True)
class MouthConfig:
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 96)
    hidden: int = 128
    n_mels: int = 40
    context: int = 2  # audio frames on each side
    audio_hidden: int = 128

    @staticmethod
    def from_dict(d: dict) -> MouthConfig:
        known = {f.name for f in fields(MouthConfig)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown mouth-estimator config keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return MouthConfig(**d)


class FaceStateNet(nn.Module):
    """(N, 3, 64, 64) in [-1, 1] -> (N, 7) normalised face states."""

    def __init__(self, cfg: MouthConfig):
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = []
        for cin, cout in zip((3, *c[:-1]), c):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(c)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c[-1] * side * side, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, len(STATE_NAMES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class AudioMouthNet(nn.Module):
    """(N, 2 context + 1, n_mels) log-mel windows -> (N, 2) mouth openness and width."""

    def __init__(self, cfg: MouthConfig):
        super().__init__()
        n_in = (2 * cfg.context + 1) * cfg.n_mels
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, cfg.audio_hidden), nn.ReLU(), nn.Linear(cfg.audio_hidden, cfg.audio_hidden), nn.ReLU(), nn.Linear(cfg.audio_hidden, 2))
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net((mel - self.mel_mean) / self.mel_std)


def frames_to_input(frames: np.ndarray, size: int = 64) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, size, size) in [-1, 1], area-resized."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] != (size, size):
        import cv2  # the [metrics] extra; imported on use so that --help needs no extras

        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0  # (T, 3, size, size)


def audio_windows(audio: np.ndarray, *, num_frames: int, cfg: MouthConfig) -> torch.Tensor:
    """Log-mel context windows per frame: (T, 2 context + 1, n_mels), edges repeated."""
    mel = frame_log_mel(audio, num_frames=num_frames, n_mels=cfg.n_mels)  # (T, n_mels)
    idx = np.clip(np.arange(num_frames)[:, None] + np.arange(-cfg.context, cfg.context + 1)[None], 0, num_frames - 1)
    return torch.from_numpy(mel[idx])


class MouthEstimator:
    """The trained pair, with numpy in and out."""

    def __init__(self, cfg: MouthConfig, face: FaceStateNet, audio: AudioMouthNet):
        self.cfg, self.face, self.audio = cfg, face.eval(), audio.eval()

    @staticmethod
    def load(folder: str | Path = WEIGHTS_DIR) -> MouthEstimator:
        folder = Path(folder)
        cfg_path, weights_path = folder / "config.json", folder / "mouth.safetensors"
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing; train it with `python -m train.mouth_estimator --out {folder}`")
        cfg = MouthConfig.from_dict(json.loads(cfg_path.read_text()))
        face, audio = FaceStateNet(cfg), AudioMouthNet(cfg)
        state = load_file(str(weights_path))
        face.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("face.")}, strict=True)
        audio.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("audio.")}, strict=True)
        extra = [k for k in state if not k.startswith(("face.", "audio."))]
        if extra:
            raise ValueError(f"{weights_path} holds unexpected tensors {extra[:5]}")
        return MouthEstimator(cfg, face, audio)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {f"face.{k}": v.contiguous() for k, v in self.face.state_dict().items()}
        state |= {f"audio.{k}": v.contiguous() for k, v in self.audio.state_dict().items()}
        save_file(state, str(folder / "mouth.safetensors"))
        (folder / "config.json").write_text(json.dumps(asdict(self.cfg), indent=1) + "\n")

    @torch.no_grad()
    def face_states(self, frames: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Per-frame states (T,) each, in the generator's units (see ``STATE_NAMES``)."""
        x = frames_to_input(frames, self.cfg.image_size)
        out = torch.cat([self.face(x[i : i + batch]) for i in range(0, x.shape[0], batch)]).numpy()
        return {n: out[:, j] * STATE_SCALE[j] for j, n in enumerate(STATE_NAMES)}

    name = "mouth-state"

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sync embeddings (``sync.sync_score``): seen vs. called-for (openness, width), (T, 2) each."""
        seen = self.face_states(frames)
        heard = self.audio_mouth(audio, frames.shape[0])
        return np.stack([seen["open"], seen["width"]], 1), np.stack([heard["open"], heard["width"]], 1)

    @torch.no_grad()
    def audio_mouth(self, audio: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
        """Mouth openness and width (T,) that the audio calls for, frame by frame."""
        out = self.audio(audio_windows(audio, num_frames=num_frames, cfg=self.cfg)).numpy()
        return {"open": out[:, 0], "width": out[:, 1]}
