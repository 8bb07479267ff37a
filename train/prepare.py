"""Prepare real talking videos as training clips (paper §4.1 "Datasets", docs/design.md §6).

``python -m train.prepare --videos DIR --out DIR [--size 512] [--preset sd15] [--syncnet WEIGHTS]``

Per input file (anything PyAV decodes):
1. audio to 16 kHz mono; video resampled to 25 fps by timestamps (no audio track: skipped);
2. slices of ``max_seconds`` (the remainder kept if at least ``min_seconds``);
3. per slice, one face-aligned crop: the run time's detector and landmarks (:mod:`fada_rt.face`, its
   limits in docs/portraits.md) on every ``detect_every``-th frame, the largest face's eye centres
   (median over the slice) and the run time's alignment (:func:`fada_rt.face.face_transform`) with the
   model preset's framing (``ModelConfig.crop``). So a model sees at run time, where
   :func:`fada_rt.face.load_portrait` cuts the portrait with the same code and numbers, what it
   learnt on. Slices whose face is found in fewer than ``min_face_rate`` of the sampled frames are
   dropped;
4. cut the crop at ``size`` (:func:`fada_rt.face.warp_crop`) and write the clip format (H.264 mp4 +
   16 kHz PCM wav + meta.json, its transform in ``meta.extra["crop_transform"]``);
5. quality scores per clip: ``face_rate``, ``motion`` (mean absolute frame difference in the
   central face region, 0..1), ``sharpness`` (variance of the Laplacian of the grey frames at the
   output size), ``background`` (mean absolute frame difference in the outer border band, 0..1:
   camera or background motion), and with ``--syncnet`` the audio-visual ``sync_offset`` and
   ``sync_confidence``;
6. the filter presets write ``manifest_A.txt`` (strict) and ``manifest_B.txt`` (lenient; B ⊇ A).

A corrupt file, one without audio or without a detectable face is reported and skipped; the rest go
on. ``quality.jsonl`` holds every clip's scores and ``prepare_report.json`` every file's outcome.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from fada_rt.clips import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, write_clip, write_manifest
from fada_rt.config import CropConfig, get_preset
from fada_rt.face import Face, FaceDetector, face_transform, warp_crop

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 512
    min_seconds: float = 2.0
    max_seconds: float = 10.0
    crop: CropConfig = field(default_factory=CropConfig)  # the framing: the model preset's (``--preset``)
    detect_every: int = 5
    detect_width: int = 320
    min_face_rate: float = 0.6


@dataclass(frozen=True)
class FilterPreset:
    """Thresholds on the quality scores; a clip passes when every one holds (sync ones only when
    sync scores exist)."""

    name: str
    min_face_rate: float
    min_sharpness: float
    min_motion: float
    max_motion: float
    max_background: float
    max_abs_sync_offset: int
    min_sync_confidence: float

    def passes(self, q: dict[str, Any]) -> bool:
        ok = (q["face_rate"] >= self.min_face_rate and q["sharpness"] >= self.min_sharpness
              and self.min_motion <= q["motion"] <= self.max_motion and q["background"] <= self.max_background)
        if ok and q.get("sync_offset") is not None:
            ok = abs(q["sync_offset"]) <= self.max_abs_sync_offset and q["sync_confidence"] >= self.min_sync_confidence
        return ok


# Starting points for 512x512 talking-head footage; tune them on quality.jsonl of your own data.
STRICT = FilterPreset("A", min_face_rate=0.9, min_sharpness=60.0, min_motion=0.004, max_motion=0.08,
                      max_background=0.03, max_abs_sync_offset=1, min_sync_confidence=3.0)
LENIENT = FilterPreset("B", min_face_rate=0.7, min_sharpness=20.0, min_motion=0.0, max_motion=0.2,
                       max_background=0.08, max_abs_sync_offset=15, min_sync_confidence=0.0)


class SkipFile(Exception):
    """A file this tool cannot use, with the reason for the report."""


def decode_audio(path: Path) -> np.ndarray:
    """The first audio track as 16 kHz mono float32; SkipFile if there is none."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise SkipFile("no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        for frame in container.decode(audio=0):
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
        chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    if not chunks:
        raise SkipFile("the audio track holds no samples")
    return np.concatenate(chunks).astype(np.float32)


def frames_at_25fps(path: Path):
    """Yield (k, rgb uint8 (H, W, 3)) for output frame k at time k/25 s: the newest source frame at or
    before that time (frames repeat or drop as the source rate needs)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise SkipFile("no video track")
        stream = container.streams.video[0]
        k, t = 0, 0.0
        previous = None
        start = None
        for frame in container.decode(stream):
            if frame.pts is None or frame.time is None:
                continue
            start = frame.time if start is None else start
            t = frame.time - start
            while previous is not None and k / FPS < t - 1e-6:
                yield k, previous
                k += 1
            previous = frame.to_ndarray(format="rgb24")
        if previous is None:
            raise SkipFile("no decodable video frames")
        duration = float(stream.duration * stream.time_base) if stream.duration else (t + 1.0 / FPS)
        while k / FPS < duration - 1e-6:
            yield k, previous
            k += 1


def median_eyes(faces: list[Face]) -> tuple[np.ndarray, np.ndarray]:
    """The median (left, right) eye centres of one slice's detections: one steady crop per slice."""
    return (np.median(np.array([f.left_eye for f in faces]), axis=0),
            np.median(np.array([f.right_eye for f in faces]), axis=0))


def _scaled(face: Face, factor: float) -> Face:
    """A face found in a resized frame, in the original frame's pixels."""
    return Face(box=tuple(v * factor for v in face.box), score=face.score, landmarks=face.landmarks * factor)


def quality_scores(frames: np.ndarray, face_rate: float) -> dict[str, float]:
    """Scores of output frames uint8 (T, S, S, 3) — see the module docstring."""
    import cv2

    grey = frames.astype(np.float32).mean(axis=3) / 255.0  # (T, S, S)
    s = grey.shape[1]
    diff = np.abs(np.diff(grey, axis=0)) if len(grey) > 1 else np.zeros_like(grey[:1])
    c0, c1 = int(s * 0.25), int(s * 0.75)
    band = max(1, int(s * 0.08))
    border = np.concatenate([diff[:, :band].reshape(len(diff), -1), diff[:, -band:].reshape(len(diff), -1),
                             diff[:, :, :band].reshape(len(diff), -1), diff[:, :, -band:].reshape(len(diff), -1)], 1)
    lap = [cv2.Laplacian((g * 255).astype(np.uint8), cv2.CV_64F).var() for g in grey[:: max(1, len(grey) // 10)]]
    return {"face_rate": float(face_rate), "motion": float(diff[:, c0:c1, c0:c1].mean()),
            "sharpness": float(np.mean(lap)), "background": float(border.mean())}


def prepare_file(path: Path, *, out: Path, config: PrepareConfig, detect: Callable[[np.ndarray], list[Face]],
                 sync_scorer: Callable[[np.ndarray, np.ndarray], tuple[int, float]] | None = None
                 ) -> list[dict[str, Any]]:
    """All clips of one video; returns their quality rows. Raises SkipFile for unusable files."""
    import cv2

    try:
        audio = decode_audio(path)
        # pass 1: faces on every detect_every-th output frame, at a small working width
        boxes: dict[int, Face | None] = {}  # the largest face of each sampled frame, in the frame's pixels
        n_frames = 0
        for k, rgb in frames_at_25fps(path):
            n_frames = k + 1
            if k % config.detect_every == 0:
                f = min(1.0, config.detect_width / rgb.shape[1])
                small = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else rgb
                found = detect(small)
                boxes[k] = None if not found else _scaled(found[0], 1 / f)
    except av.FFmpegError as err:
        raise SkipFile(f"cannot decode: {err}") from err
    n_frames = min(n_frames, len(audio) // SAMPLES_PER_FRAME)
    per_slice, min_len = int(config.max_seconds * FPS), int(np.ceil(config.min_seconds * FPS))
    slices = [(s, min(s + per_slice, n_frames)) for s in range(0, n_frames, per_slice)]
    slices = [(s, e) for s, e in slices if e - s >= min_len]
    if not slices:
        raise SkipFile(f"shorter than {config.min_seconds} s of video with audio")
    crops: dict[int, np.ndarray] = {}  # (2, 3) frame -> crop transform per kept slice
    rates: dict[int, float] = {}
    for i, (s, e) in enumerate(slices):
        found = [b for k, b in boxes.items() if s <= k < e]
        hits = [b for b in found if b is not None]
        rates[i] = len(hits) / max(len(found), 1)
        if hits and rates[i] >= config.min_face_rate:
            crops[i] = face_transform(*median_eyes(hits), crop=config.crop, size=config.size)
    if not crops:
        raise SkipFile("no face found (fada_rt.face detector)")
    # pass 2: crop and resize the kept slices while decoding again
    buffers: dict[int, list[np.ndarray]] = {i: [] for i in crops}
    for k, rgb in frames_at_25fps(path):
        for i, (s, e) in enumerate(slices):
            if i in crops and s <= k < e:
                buffers[i].append(warp_crop(rgb, crops[i], config.size))
    rows = []
    for i, frames in buffers.items():
        s, e = slices[i]
        frames_arr = np.stack(frames[: e - s])
        clip_audio = audio[s * SAMPLES_PER_FRAME : (s + len(frames_arr)) * SAMPLES_PER_FRAME]
        clip_id = f"{path.stem}_{i:03d}"
        write_clip(dataset=out, clip_id=clip_id, frames=frames_arr, audio=clip_audio, source=str(path),
                   lossless=False, extra={"start_frame": s, "crop_transform": crops[i].round(6).tolist(),
                                          "crop": asdict(config.crop)})
        q = {"id": clip_id, "source": path.name, "seconds": len(frames_arr) / FPS,
             **quality_scores(frames_arr, rates[i]), "sync_offset": None, "sync_confidence": None}
        if sync_scorer is not None:
            q["sync_offset"], q["sync_confidence"] = sync_scorer(frames_arr, clip_audio)
        rows.append(q)
    return rows


def prepare(*, videos: str | Path, out: str | Path, config: PrepareConfig = PrepareConfig(),
            presets: tuple[FilterPreset, FilterPreset] = (STRICT, LENIENT),
            sync_scorer: Callable | None = None, detect: Callable | None = None) -> dict[str, Any]:
    """Prepare every video under ``videos`` into the dataset ``out``; returns the report."""
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise FileNotFoundError(f"no video folder at {videos}")
    files = sorted(p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{videos} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    out.mkdir(parents=True, exist_ok=True)
    detect = detect or FaceDetector()
    report: dict[str, Any] = {"processed": [], "skipped": [], "config": asdict(config),
                              "presets": [asdict(p) for p in presets]}
    rows: list[dict[str, Any]] = []
    for path in tqdm(files, desc="preparing videos", unit="file"):
        try:
            file_rows = prepare_file(path, out=out, config=config, detect=detect, sync_scorer=sync_scorer)
        except SkipFile as why:
            report["skipped"].append({"file": str(path), "reason": str(why)})
            tqdm.write(f"skipped {path.name}: {why}")
            continue
        rows.extend(file_rows)
        report["processed"].append({"file": str(path), "clips": [r["id"] for r in file_rows]})
    strict, lenient = presets
    manifest_a = [r["id"] for r in rows if strict.passes(r)]
    manifest_b = sorted(set(manifest_a) | {r["id"] for r in rows if lenient.passes(r)})
    write_manifest(out, strict.name, manifest_a)
    write_manifest(out, lenient.name, manifest_b)
    (out / "quality.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report.update(clips=len(rows), manifest_A=len(manifest_a), manifest_B=len(manifest_b))
    (out / "prepare_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def syncnet_scorer(weights: str | Path) -> Callable[[np.ndarray, np.ndarray], tuple[int, float]]:
    """(frames, audio) -> (offset, confidence) of SyncNet weights (safetensors, strict keys; the LSE-C
    filter of real data: see ``fada_rt.metrics.extractors.syncnet``)."""
    from fada_rt.metrics.extractors.syncnet import SyncNetEmbedder
    from fada_rt.metrics.sync import sync_score

    embedder = SyncNetEmbedder.from_file(weights)

    def score(frames: np.ndarray, audio: np.ndarray) -> tuple[int, float]:
        result = sync_score(*embedder.embed(frames, audio))
        return result.offset, result.confidence

    return score


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Turn a folder of talking videos into training clips and manifests.")
    p.add_argument("--videos", required=True, help="folder of input videos (searched recursively)")
    p.add_argument("--out", required=True, help="dataset folder to write (clip format)")
    p.add_argument("--size", type=int, default=PrepareConfig.size, help="output frame size in pixels (square)")
    p.add_argument("--min-seconds", type=float, default=PrepareConfig.min_seconds, help="shortest clip kept")
    p.add_argument("--max-seconds", type=float, default=PrepareConfig.max_seconds, help="longest clip")
    p.add_argument("--preset", default="sd15", help="model preset whose face framing (ModelConfig.crop) the crops "
                   "take (default: %(default)s)")
    p.add_argument("--syncnet", default=None, help="SyncNet weights (safetensors) for sync scores; optional")
    args = p.parse_args(argv)
    config = PrepareConfig(size=args.size, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                           crop=get_preset(args.preset).crop)
    sync_scorer = syncnet_scorer(args.syncnet) if args.syncnet else None
    report = prepare(videos=args.videos, out=args.out, config=config, sync_scorer=sync_scorer)
    print(f"{report['clips']} clips from {len(report['processed'])} files; {len(report['skipped'])} files skipped; "
          f"manifest A: {report['manifest_A']} clips, manifest B: {report['manifest_B']} clips")


if __name__ == "__main__":
    main()
