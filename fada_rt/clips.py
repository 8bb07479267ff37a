"""The on-disk clip format shared by synthetic data, prepared real data and the benchmarks.

One folder per dataset::

    DATASET/
      clips/<clip_id>/video.mkv     frames (synthetic: FFV1, lossless) or video.mp4 (real: H.264)
      clips/<clip_id>/audio.wav     16 kHz mono PCM16
      clips/<clip_id>/meta.json     id, fps, num_frames, width, height, sample_rate, num_samples,
                                    source, format_version (+ free-form "extra")
      manifest_A.txt, manifest_B.txt   clip ids of the training sets, one per line (B ⊇ A)
      labels/<clip_id>.json         analysis labels (tier, kind, offset, ground-truth states);
                                    training code never reads them

Conventions (docs/design.md §6): :data:`FPS` video, :data:`SAMPLE_RATE` mono audio (``AudioConfig``'s
defaults: 25 fps, 16 kHz), frame k covers samples [spf k, spf (k + 1)) with ``spf = SAMPLES_PER_FRAME``
(640), so a clip of S samples has T = ceil(S / spf) frames. Beyond fada_rt.media's rates only numpy, av,
json and the standard library are used here; av only by the functions that read or write video (the in-memory synthetic cache of :mod:`train.cache` runs without PyAV).
"""

from __future__ import annotations

import json
import math
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# the clip format's rates are the runtime's: AudioConfig's defaults, as fada_rt.media reads them
from fada_rt.media import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

FORMAT_VERSION = 1
VIDEO_NAMES = ("video.mkv", "video.mp4")
META_KEYS = (
    "id",
    "fps",
    "num_frames",
    "width",
    "height",
    "sample_rate",
    "num_samples",
    "source",
    "format_version",
)


class ClipError(ValueError):
    """A clip folder or file is missing parts, is corrupt, or breaks the format's rules."""


@dataclass(frozen=True)
class Clip:
    """One decoded clip: frames uint8 (T, H, W, 3), audio float32 (S,) in [-1, 1] at 16 kHz."""

    id: str
    frames: np.ndarray
    audio: np.ndarray
    fps: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def frame_range(self, start: int, stop: int) -> Clip:
        """Frames ``[start, stop)`` with their audio samples ``[640 start, 640 stop)`` (same id and meta)."""
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"clip {self.id}: frame range [{start}, {stop}) is outside its {self.num_frames} frames")
        return Clip(id=self.id, frames=self.frames[start:stop],
                    audio=self.audio[start * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME], fps=self.fps, meta=self.meta)


def num_frames_for(num_samples: int) -> int:
    """T = ceil(S / 640): the number of video frames that cover S audio samples."""
    return math.ceil(num_samples / SAMPLES_PER_FRAME)


def write_clip(
    *,
    dataset: str | Path,
    clip_id: str,
    frames: np.ndarray,
    audio: np.ndarray,
    fps: int = FPS,
    source: str = "synthetic",
    lossless: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one clip to ``dataset/clips/<clip_id>/`` and return that folder.

    ``lossless=True`` stores FFV1 in Matroska (decoded frames are bit-exact and the files
    are byte-identical for identical inputs); ``lossless=False`` stores H.264 yuv420p mp4
    (the format ``train.prepare`` uses for real video; needs even width and height).
    """
    frames = np.asarray(frames)
    audio = np.asarray(audio)
    _check_clip_id(clip_id)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ClipError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise ClipError(f"audio must be float mono (S,), got {audio.dtype} {audio.shape}")
    if fps != FPS:
        raise ClipError(f"fps must be {FPS} (project convention), got {fps}")
    t, h, w, _ = frames.shape
    if t != num_frames_for(audio.shape[0]):
        raise ClipError(
            f"clip {clip_id!r}: {t} frames do not match {audio.shape[0]} audio samples "
            f"(expected ceil(S/{SAMPLES_PER_FRAME}) = {num_frames_for(audio.shape[0])} frames)"
        )
    if h % 2 or w % 2:
        raise ClipError(f"frame size must be even, got {w}x{h}")
    folder = Path(dataset) / "clips" / clip_id
    folder.mkdir(parents=True, exist_ok=True)
    for name in VIDEO_NAMES:  # a rewrite must not leave a stale video of the other kind
        (folder / name).unlink(missing_ok=True)
    video_name = "video.mkv" if lossless else "video.mp4"
    _write_video(folder / video_name, frames, fps=fps, lossless=lossless)
    write_wav(folder / "audio.wav", audio)
    meta = {
        "id": clip_id,
        "fps": fps,
        "num_frames": t,
        "width": w,
        "height": h,
        "sample_rate": SAMPLE_RATE,
        "num_samples": int(audio.shape[0]),
        "source": source,
        "format_version": FORMAT_VERSION,
        "video": video_name,
        "extra": dict(extra or {}),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return folder


def read_clip(path: str | Path) -> Clip:
    """Read a clip folder (``.../clips/<id>``) or a plain video file (mp4/mkv with an audio track).

    Plain files: the audio track is resampled to 16 kHz mono; the frame rate must be 25 fps.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no clip at {path} (expected a clip folder or an .mp4/.mkv file)")
    if path.is_file():
        return _read_media_file(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise ClipError(f"{path} is not a clip folder: meta.json is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ClipError(f"{meta_path} is not valid JSON: {err}") from err
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ClipError(f"{meta_path} lacks keys {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ClipError(f"{meta_path}: format_version {meta['format_version']} != {FORMAT_VERSION}")
    videos = [path / n for n in VIDEO_NAMES if (path / n).is_file()]
    if len(videos) != 1:
        raise ClipError(f"{path} must hold exactly one of {VIDEO_NAMES}, found {[v.name for v in videos]}")
    frames = _read_video(videos[0])
    audio = read_wav(path / "audio.wav")
    if frames.shape[0] != meta["num_frames"] or audio.shape[0] != meta["num_samples"]:
        raise ClipError(
            f"{path}: decoded {frames.shape[0]} frames / {audio.shape[0]} samples but meta.json says "
            f"{meta['num_frames']} / {meta['num_samples']} (the clip is truncated or corrupt)"
        )
    if frames.shape[1:3] != (meta["height"], meta["width"]):
        raise ClipError(f"{path}: frames are {frames.shape[1:3]}, meta.json says {meta['height']}x{meta['width']}")
    return Clip(id=str(meta["id"]), frames=frames, audio=audio, fps=int(meta["fps"]), meta=meta)


def list_clips(dataset: str | Path, *, manifest: str | None = None) -> list[Path]:
    """Clip paths of a dataset, sorted by id.

    ``manifest=None`` lists every folder under ``clips/``; ``manifest="A"`` (or a file name
    such as ``"manifest_A.txt"``) lists the ids in that manifest. A folder holding no
    ``clips/`` but video files (mp4/mkv) lists those files instead (for evaluation).
    """
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise FileNotFoundError(f"no dataset folder at {dataset}")
    clips_dir = dataset / "clips"
    if manifest is not None:
        ids = read_manifest(dataset, manifest)
        paths = [clips_dir / i for i in ids]
        absent = [p.name for p in paths if not p.is_dir()]
        if absent:
            raise ClipError(f"manifest {manifest!r} of {dataset} names missing clips: {absent[:5]}")
        return paths
    if clips_dir.is_dir():
        return sorted(p for p in clips_dir.iterdir() if p.is_dir())
    files = sorted(p for p in dataset.iterdir() if p.suffix.lower() in (".mp4", ".mkv"))
    if not files:
        raise ClipError(f"{dataset} holds neither a clips/ folder nor .mp4/.mkv files")
    return files


def clip_id_of(path: str | Path) -> str:
    """The id a path stands for: the folder name of a clip folder, the stem of a file."""
    path = Path(path)
    return path.stem if path.is_file() else path.name


def manifest_path(dataset: str | Path, manifest: str) -> Path:
    name = manifest if manifest.endswith(".txt") else f"manifest_{manifest}.txt"
    return Path(dataset) / name


def write_manifest(dataset: str | Path, manifest: str, clip_ids: list[str]) -> Path:
    """Write ``manifest_<name>.txt`` (one clip id per line, sorted)."""
    for clip_id in clip_ids:
        _check_clip_id(clip_id)
    path = manifest_path(dataset, manifest)
    path.write_text("".join(f"{i}\n" for i in sorted(clip_ids)))
    return path


def read_manifest(dataset: str | Path, manifest: str) -> list[str]:
    path = manifest_path(dataset, manifest)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path.name} in {dataset}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_labels(dataset: str | Path, clip_id: str, labels: dict[str, Any]) -> Path:
    """Write analysis labels to ``labels/<clip_id>.json`` (never read by training)."""
    _check_clip_id(clip_id)
    folder = Path(dataset) / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{clip_id}.json"
    path.write_text(json.dumps(labels, sort_keys=True, separators=(",", ":")) + "\n")
    return path


def read_labels(dataset: str | Path, clip_id: str) -> dict[str, Any]:
    path = Path(dataset) / "labels" / f"{clip_id}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no labels for clip {clip_id!r} at {path}")
    return json.loads(path.read_text())


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM (values outside are clipped)."""
    pcm = _to_pcm16(audio)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> np.ndarray:
    """Read a 16 kHz mono PCM16 wav as float32 (S,) in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} is missing")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            data = f.readframes(n)
    except (wave.Error, EOFError) as err:
        raise ClipError(f"{path} is not a readable PCM wav: {err}") from err
    if (channels, width, rate) != (1, 2, SAMPLE_RATE):
        raise ClipError(f"{path}: need 16 kHz mono PCM16, got {rate} Hz, {channels} ch, {8 * width}-bit")
    if len(data) != 2 * n:
        raise ClipError(f"{path} is truncated: header says {n} samples, found {len(data) // 2}")
    return _from_pcm16(np.frombuffer(data, dtype="<i2"))


def pcm16_round_trip(audio: np.ndarray) -> np.ndarray:
    """What :func:`read_wav` returns for ``audio`` written by :func:`write_wav` (bit-exact), without files."""
    return _from_pcm16(_to_pcm16(audio))


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).astype("<i2")


def _from_pcm16(pcm: np.ndarray) -> np.ndarray:
    return (pcm.astype(np.float32) / 32767.0).astype(np.float32)


def _check_clip_id(clip_id: str) -> None:
    if not clip_id or "/" in clip_id or "\\" in clip_id or clip_id.startswith(".") or clip_id.strip() != clip_id:
        raise ClipError(f"bad clip id {clip_id!r}: use a plain name without slashes or surrounding spaces")


def _write_video(path: Path, frames: np.ndarray, *, fps: int, lossless: bool) -> None:
    import av

    _, h, w, _ = frames.shape
    container = av.open(str(path), "w", options={"fflags": "+bitexact"})
    try:
        if lossless:
            stream = container.add_stream("ffv1", rate=fps)
            stream.pix_fmt = "bgr0"
        else:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "18"})
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = w, h
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    finally:
        container.close()


def _read_video(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path} has no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.FFmpegError as err:
        raise ClipError(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise ClipError(f"{path} holds no decodable frames")
    return np.stack(frames)


def _read_media_file(path: Path) -> Clip:
    """A plain mp4/mkv with one video and one audio track (e.g. a generated result)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video or not container.streams.audio:
                raise ClipError(f"{path} needs both a video and an audio track")
            rate = container.streams.video[0].average_rate
            if rate is None or abs(float(rate) - FPS) > 0.01:
                raise ClipError(f"{path}: video runs at {rate} fps, expected {FPS} (re-encode at 25 fps)")
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
            container.seek(0)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks = []
            for frame in container.decode(audio=0):
                chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    except av.FFmpegError as err:
        raise ClipError(f"cannot decode {path}: {err}") from err
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    h, w = frames.shape[1:3]
    meta = {
        "id": path.stem,
        "fps": FPS,
        "num_frames": int(frames.shape[0]),
        "width": int(w),
        "height": int(h),
        "sample_rate": SAMPLE_RATE,
        "num_samples": int(audio.shape[0]),
        "source": str(path),
        "format_version": FORMAT_VERSION,
    }
    return Clip(id=path.stem, frames=frames, audio=audio, fps=FPS, meta=meta)
