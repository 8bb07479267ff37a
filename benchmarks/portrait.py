"""Portraits on the CPU: which face detector, and what the full-picture output costs per frame next to the model.

``python -m benchmarks.portrait [--out benchmarks/results/portrait] [--repeats 3] [--threads 2]``
(run it with ``OMP_NUM_THREADS`` equal to ``--threads`` on an otherwise idle machine) writes
``portrait.md`` and ``portrait.json`` (every raw number) under ``--out`` and prints the tables.

**1. Detector choice** (docs/portraits.md: chosen by accuracy on real photos and speed on the CPU). Every
candidate runs on every scene of :mod:`benchmarks.portrait_scenes` (real photos with hand-marked pupils,
composites of them with known true eyes, and three pictures without a face):

* ``dlib HOG ±25°``: :class:`fada_rt.face.FaceDetector` as shipped (dlib's HOG detector + the 5-point
  landmarks, the picture also searched turned by ±25°); ``dlib HOG 0°``: the same, upright only;
* ``OpenCV Haar``: ``haarcascade_frontalface_default.xml`` (scaleFactor 1.1, minNeighbors 5) on the grey
  picture, eyes from ``haarcascade_eye.xml`` (OpenCV's defaults: scaleFactor 1.1, minNeighbors 3) in the
  upper half of each face box, the centres of the two largest (fewer than two: a landmark failure);
* ``dlib CNN``: ``cnn_face_detection_model_v1`` on ``mmod_human_face_detector.dat`` (beside the landmark model
  of ``face_recognition_models``), upsampled like the HOG detector, + the same 5-point landmarks; seconds
  per picture on a CPU, so it runs once per scene and not at all on scenes over 2 Mpx (``cnn_max_mpx``).

Found faces are matched to true faces greedily by nearest eye midpoint (the box centre when the eyes are
missing; farther than 1.5 true eye distances: no match). Eye error: max over the two eyes of |found - true| /
true eye distance. A scene is correct when the count is right (no face at all in the no-face scenes) and every
eye error is under 0.10. Time: wall time of one call on the full picture, the median of ``--repeats``.

**Roll sweep**: the astronaut turned from -50° to +50° in 5° steps, found (eye error < 0.10) or not, by the
shipped detector and the upright-only one: what the turned searches buy.

**2. Per-frame cost of the full picture** on three scene sizes: detection (once per portrait, the shipped
detector), cutting the crop (``warp_crop``, once), building the compositor (once) and pasting one generated crop
into the picture (``Portrait.frame(crop, "full")``: colour match, warp, blend and the copy of the full picture;
median over ``--frames``, 50), at the tiny model's resolution (64 px, its framing) and at 512 px (sd15's); H.264
encoding of pasted full frames (:class:`fada_rt.video_out.VideoWriter`, libx264 veryfast crf 18, video only, into a
temporary file; ms per frame of the writer's calls over 25 frames pasted one at a time, closing included);
beside them the model's own time per frame: the shipped tiny fast student through ``StreamingAvatar(image,
realtime=False, crop="face", output="crop")`` over ``--audio-seconds`` of ``fada_rt/examples/speech.wav`` (wall
time from the first push to the last frame / frames; loading and preparing the avatar not counted). Ratios
against the model only for the 64 px rows: the 512 px model (sd15) does not run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.portrait_detectors import CANDIDATES, EYE_TOLERANCE, make_detector, score
from benchmarks.portrait_scenes import NO_FACE, SCENES, Scene, scene

RESULTS = Path(__file__).resolve().parent / "results" / "portrait"
FRAME_SCENES = ("astronaut", "off_centre_1600x900", "small_in_4k")
SMALL_SIDE = 640  # "512-px class": scenes whose long side is at most this


def _ms(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall time of ``repeats`` calls in ms, every time, and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), times, out


def detector_rows(*, scenes: Sequence[str], candidates: Sequence[str], repeats: int, cnn_max_pixels: float,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One row per (scene, candidate): :func:`score` + the detection time."""
    rows = []
    detectors = {c: make_detector(c) for c in candidates}
    for detect in detectors.values():  # warm-up: first calls pay for lazy set-up
        detect(np.full((32, 32, 3), 128, np.uint8))
    for name in scenes:
        s = scene(name)
        h, w = s.image.shape[:2]
        for c in candidates:
            row: dict[str, Any] = {"scene": name, "size": [w, h], "candidate": c}
            if c == "cnn" and w * h > cnn_max_pixels:
                rows.append({**row, "skipped": "too slow", "correct": None})
                log(f"{name} ({w}x{h}) / {CANDIDATES[c]}: skipped (too slow)")
                continue
            ms, times, found = _ms(lambda d=detectors[c], i=s.image: d(i), 1 if c == "cnn" else repeats)
            row.update(score(s, found), ms=ms, times_ms=times, skipped=None)
            errors = ", ".join("-" if e is None else f"{e:.3f}" for e in row["eye_errors"]) or "-"
            log(f"{name} ({w}x{h}) / {CANDIDATES[c]}: {row['found']} found of {row['expected']}, eye error "
                f"{errors}, {ms:.0f} ms")
            rows.append(row)
    return rows


def roll_sweep(*, candidates: Sequence[str], angles: Sequence[float] = tuple(range(-50, 51, 5))
               ) -> list[dict[str, Any]]:
    """The astronaut turned by each angle (its own roll is +4°): per candidate, found with eye error < tolerance."""
    import cv2

    from benchmarks.portrait_scenes import EYES, photo

    image, rows = photo("astronaut"), []
    detectors = {c: make_detector(c) for c in candidates}
    for angle in angles:
        m = cv2.getRotationMatrix2D((255.5, 255.5), float(angle), 1.0)
        turned = cv2.warpAffine(image, m, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        true = np.array(EYES["astronaut"]) @ m[:, :2].T + m[:, 2]
        roll = float(np.degrees(np.arctan2(true[1, 1] - true[0, 1], true[1, 0] - true[0, 0])))
        row: dict[str, Any] = {"angle": angle, "roll": round(roll, 1)}
        for c, detect in detectors.items():
            r = score(Scene(f"turned {angle}", turned, (true,)), detect(turned))
            row[c] = {"found": r["eye_errors"][0] is not None and r["eye_errors"][0] < EYE_TOLERANCE,
                      "extra": r["extra"]}
        rows.append(row)
    return rows


def summarise(rows: Sequence[dict[str, Any]], candidates: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for c in candidates:
        run = [r for r in rows if r["candidate"] == c and not r["skipped"]]
        errors = [e for r in run for e in r["eye_errors"] if e is not None]
        small = [r["ms"] for r in run if max(r["size"]) <= SMALL_SIDE]
        big = [r["ms"] for r in run if r["scene"] == "small_in_4k"]
        out.append({"candidate": c, "label": CANDIDATES[c], "scenes": len(run),
                    "skipped": sum(1 for r in rows if r["candidate"] == c and r["skipped"]),
                    "correct": sum(bool(r["correct"]) for r in run),
                    "missed": sum(r["missed"] for r in run), "extra": sum(r["extra"] for r in run),
                    "landmark_failures": sum(r["landmark_failures"] for r in run),
                    "mean_eye_error": float(np.mean(errors)) if errors else None,
                    "ms_small": float(np.median(small)) if small else None, "ms_4k": big[0] if big else None})
    return out


def model_cost(image: np.ndarray, *, audio_seconds: float) -> dict[str, Any]:
    """The shipped tiny fast student's wall time per frame over ``audio_seconds`` of the example speech."""
    from fada_rt.api import StreamingAvatar
    from fada_rt.assets import EXAMPLE_AUDIO
    from fada_rt.clips import SAMPLE_RATE
    from fada_rt.media import read_audio

    audio = read_audio(EXAMPLE_AUDIO, sample_rate=SAMPLE_RATE)[: round(audio_seconds * SAMPLE_RATE)]
    t = time.perf_counter()
    avatar = StreamingAvatar(image, realtime=False, crop="face", output="crop")
    setup = time.perf_counter() - t
    t = time.perf_counter()
    avatar.push_audio(audio, SAMPLE_RATE)
    avatar.end_audio()
    frames = sum(1 for _ in avatar.frames())
    wall = time.perf_counter() - t
    avatar.close()
    return {"audio_seconds": audio.size / SAMPLE_RATE, "frames": frames, "wall_s": wall, "load_prepare_s": setup,
            "ms_per_frame": wall / max(frames, 1) * 1e3, "resolution": avatar.pipeline.resolution}


def encode_cost(make_frame: Callable[[int], np.ndarray], count: int) -> float:
    """H.264 ms per frame of ``count`` frames ``make_frame(i)`` at their own size: the writer's calls from opening
    to closing the file, not ``make_frame`` (frames are made one at a time: holding many full frames would time
    the allocation of fresh memory, ~150 ms per 4K frame here)."""
    from fada_rt.video_out import VideoWriter

    h, w = make_frame(0).shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        spent, t = 0.0, time.perf_counter()
        writer = VideoWriter(Path(tmp) / "encode.mp4", size=(w, h), audio=False)
        for i in range(count):
            spent += time.perf_counter() - t
            frame = make_frame(i)[None]
            t = time.perf_counter()
            writer.write_frames(frame)
        writer.close()
        return (spent + time.perf_counter() - t) / count * 1e3


class _Known:
    """A stand-in detector that answers the faces already found (one detection per picture, not per resolution)."""

    def __init__(self, faces: list[Any]) -> None:
        self.faces = faces

    def __call__(self, image: np.ndarray) -> list[Any]:
        return self.faces


def frame_rows(*, scenes: Sequence[str], frames: int, encode_frames: int, repeats: int,
               detect_ms: dict[str, float] | None = None, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per scene and crop resolution: detection, crop, compositor and paste times; H.264 per scene.
    ``detect_ms``: the shipped detector's times per scene already measured (the others are measured here)."""
    from fada_rt.config import CropConfig, get_preset
    from fada_rt.face import FaceDetector, FaceError, load_portrait, warp_crop

    detector = FaceDetector()
    detector(np.full((64, 64, 3), 128, np.uint8))
    tiny = get_preset("tiny")
    rows = []
    for name in scenes:
        s = scene(name)
        h, w = s.image.shape[:2]
        timed = (detect_ms or {}).get(name)
        faces = detector(s.image)
        if timed is None:
            timed = _ms(lambda i=s.image: detector(i), repeats)[0]
        encoded = None
        for label, resolution, crop in (("tiny", tiny.resolution, tiny.crop), ("sd15", 512, CropConfig())):
            row: dict[str, Any] = {"scene": name, "size": [w, h], "crop": label, "resolution": resolution,
                                   "detect_ms": timed}
            try:  # the faces found above (an odd side is padded at its end: same coordinates)
                portrait = load_portrait(s.image, resolution=resolution, crop=crop, detector=_Known(faces))
            except FaceError as err:
                rows.append({**row, "error": str(err)})
                log(f"{name} ({w}x{h}) / {resolution} px: {err}")
                continue
            row["crop_ms"] = _ms(lambda p=portrait, r=resolution: warp_crop(p.image, p.transform, r), repeats)[0]
            row["compositor_ms"] = _ms(lambda p=portrait: p.compositor, 1)[0]
            rng = np.random.default_rng(0)
            crops = [np.clip(portrait.crop.astype(np.int16) + rng.integers(-8, 9, 3), 0, 255).astype(np.uint8)
                     for _ in range(4)]  # stand-ins for generated crops: the cost does not depend on the pixels
            times = []
            for i in range(frames):
                t = time.perf_counter()
                portrait.frame(crops[i % len(crops)], "full")
                times.append((time.perf_counter() - t) * 1e3)
            row.update(paste_ms=float(np.median(times)), paste_p90_ms=float(np.percentile(times, 90)), paste_times_ms=times,
                       error=None)
            if encoded is None:
                encoded = encode_cost(lambda i, p=portrait, c=crops: p.frame(c[i % len(c)], "full"), encode_frames)
            row["encode_ms"] = encoded
            log(f"{name} ({w}x{h}) / {resolution} px: detect {timed:.0f} ms, crop {row['crop_ms']:.2f} ms, paste "
                f"{row['paste_ms']:.2f} ms/frame, H.264 {encoded:.1f} ms/frame")
            rows.append(row)
    return rows


def run_benchmark(*, scenes: Sequence[str] = SCENES, candidates: Sequence[str] = tuple(CANDIDATES),
                  frame_scenes: Sequence[str] = FRAME_SCENES, repeats: int = 3, frames: int = 50,
                  encode_frames: int = 25, audio_seconds: float = 4.0, threads: int = 2, cnn_max_mpx: float = 2.0,
                  roll: bool = True, log: Callable[[str], None] = lambda s: print(s, flush=True)) -> dict[str, Any]:
    """Both tables' numbers (see the module docstring), JSON-ready."""
    import cv2
    import torch

    if repeats < 1 or frames < 1 or encode_frames < 1 or audio_seconds <= 0 or threads < 1:
        raise ValueError("repeats, frames, encode_frames and threads must be >= 1 and audio_seconds > 0")
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    rows = detector_rows(scenes=scenes, candidates=candidates, repeats=repeats, cnn_max_pixels=cnn_max_mpx * 1e6,
                         log=log)
    sweep = roll_sweep(candidates=[c for c in candidates if c in ("hog", "hog-upright")]) if roll else []
    shipped = {r["scene"]: r["ms"] for r in rows if r["candidate"] == "hog" and not r["skipped"]}
    per_frame = frame_rows(scenes=frame_scenes, frames=frames, encode_frames=encode_frames, repeats=repeats,
                           detect_ms=shipped, log=log)
    model = None
    if frame_scenes:
        log(f"model: shipped tiny fast student over {audio_seconds:g} s of speech")
        model = model_cost(scene(frame_scenes[0]).image, audio_seconds=audio_seconds)
        log(f"model: {model['frames']} frames in {model['wall_s']:.2f} s = {model['ms_per_frame']:.1f} ms/frame")
        for r in per_frame:
            mine = not r["error"] and r["resolution"] == model["resolution"]
            r["paste_vs_model"] = r["paste_ms"] / model["ms_per_frame"] if mine else None
            r["paste_encode_vs_model"] = (r["paste_ms"] + r["encode_ms"]) / model["ms_per_frame"] if mine else None
    from benchmarks.machine import cpu_model

    settings = {"scenes": list(scenes), "candidates": list(candidates), "frame_scenes": list(frame_scenes),
                "repeats": repeats, "frames": frames, "encode_frames": encode_frames, "audio_seconds": audio_seconds,
                "threads": threads, "cnn_max_mpx": cnn_max_mpx, "cpu": cpu_model(),
                "eye_tolerance": EYE_TOLERANCE, "no_face_scenes": [n for n in scenes if n in NO_FACE]}
    return {"settings": settings, "detectors": rows, "summary": summarise(rows, candidates), "frames": per_frame,
            "model": model, "roll_sweep": sweep}


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _cell(r: dict[str, Any]) -> str:
    if r["skipped"]:
        return f"skipped ({r['skipped']})"
    errors = " / ".join("—" if e is None else f"{e:.3f}" for e in r["eye_errors"])
    mark = "✓" if r["correct"] else "✗"
    return f"{mark} {r['found']}/{r['expected']}{', err ' + errors if errors else ''}, {r['ms']:.0f} ms"


def to_markdown(result: dict[str, Any]) -> str:
    s, cands = result["settings"], result["settings"]["candidates"]
    lines = [f"## Face detectors on the portrait scenes ({s['cpu']}, {s['threads']} threads, median of "
             f"{s['repeats']}; the CNN once)", "",
             f"Cell: ✓ correct / ✗ not, faces found / expected, eye error per true face (max over the two eyes of "
             f"the distance to the true pupil, in true eye distances; —: face not found or its eyes not found), detection time. "
             f"Correct: the right count and every eye error < {s['eye_tolerance']}. No-face scenes: "
             f"{', '.join(s['no_face_scenes']) or 'none'}.", "",
             "| Scene | Size | " + " | ".join(CANDIDATES[c] for c in cands) + " |", "|---|---|" + "---|" * len(cands)]
    for name in s["scenes"]:
        cells = {r["candidate"]: r for r in result["detectors"] if r["scene"] == name}
        size = "x".join(map(str, cells[cands[0]]["size"])) if cands else ""
        lines.append(f"| {name} | {size} | " + " | ".join(_cell(cells[c]) for c in cands) + " |")
    lines += ["", "| Detector | Scenes correct | Missed | False positives | Eyes not found | Mean eye error | "
              f"Median ms, scenes ≤ {SMALL_SIDE} px | ms, 4K scene |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in result["summary"]:
        skipped = f" ({m['skipped']} skipped)" if m["skipped"] else ""
        lines.append(f"| {m['label']} | {m['correct']}/{m['scenes']}{skipped} | {m['missed']} | {m['extra']} | "
                     f"{m['landmark_failures']} | {_num(m['mean_eye_error'], '{:.3f}')} | "
                     f"{_num(m['ms_small'], '{:.0f}')} | {_num(m['ms_4k'], '{:.0f}')} |")
    sweep = result.get("roll_sweep") or []
    if sweep:
        names = [c for c in sweep[0] if c not in ("angle", "roll")]
        lines += ["", "## Roll sweep: the astronaut turned in 5° steps (✓: the face found, eye error < "
                  f"{s['eye_tolerance']}; +n: n other detections, false positives)", "",
                  "| Roll (°) | " + " | ".join(CANDIDATES[c] for c in names) + " |", "|---:|" + "---|" * len(names)]
        lines += [f"| {r['roll']:+.1f} | " + " | ".join(("✓" if r[c]["found"] else "✗") + (
            f" +{r[c]['extra']}" if r[c]["extra"] else "") for c in names) + " |" for r in sweep]
    model = result["model"]
    if result["frames"]:
        lines += ["", "## Per-frame cost of the full-picture output vs the model (CPU)", ""]
        if model:
            lines.append(f"Model: the shipped tiny fast student ({model['resolution']} px), "
                         f"`StreamingAvatar(realtime=False, output=\"crop\")`, {model['frames']} frames of "
                         f"{model['audio_seconds']:g} s of speech in {model['wall_s']:.2f} s: "
                         f"**{model['ms_per_frame']:.1f} ms per frame** (loading + preparing the avatar, "
                         f"{model['load_prepare_s']:.2f} s, not counted). Paste: median over {s['frames']} frames; "
                         f"H.264: libx264 veryfast over {s['encode_frames']} full frames. Ratios only against the "
                         f"model of the same resolution.")
        lines += ["", "| Scene | Size | Crop | Detect once (ms) | Crop once (ms) | Compositor once (ms) | "
                  "Paste / frame (ms) | p90 | H.264 / frame (ms) | Paste / model | (Paste + H.264) / model |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["frames"]:
            head = f"| {r['scene']} | {r['size'][0]}x{r['size'][1]} | {r['crop']} ({r['resolution']} px) | "
            if r["error"]:
                lines.append(head + f"{r['detect_ms']:.0f} | FaceError: {r['error']} |" + " — |" * 6)
                continue
            lines.append(head + f"{r['detect_ms']:.0f} | {r['crop_ms']:.2f} | {r['compositor_ms']:.1f} | "
                         f"{r['paste_ms']:.2f} | {r['paste_p90_ms']:.2f} | {r['encode_ms']:.1f} | "
                         f"{_num(r.get('paste_vs_model'), '{:.2f}')} | {_num(r.get('paste_encode_vs_model'), '{:.2f}')} |")
    return "\n".join(lines)


def write_results(result: dict[str, Any], out: str | Path) -> Path:
    """``portrait.json`` and ``portrait.md`` under ``out``; returns the markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "portrait.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "portrait.md").write_text(to_markdown(result) + "\n")
    return out / "portrait.md"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Face detectors on the portrait scenes, and the per-frame cost of pasting "
                                            "into the full picture next to the model's (CPU).")
    p.add_argument("--out", default=str(RESULTS), help="output folder (default: benchmarks/results/portrait)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per detection, median (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads (default: %(default)s)")
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES, help="detector scenes (default: all)")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=tuple(CANDIDATES),
                   help="detectors (default: all)")
    p.add_argument("--frame-scenes", nargs="*", default=list(FRAME_SCENES), choices=SCENES,
                   help="scenes of the per-frame table (default: %(default)s)")
    p.add_argument("--frames", type=int, default=50, help="pasted frames per row, median (default: %(default)s)")
    p.add_argument("--audio-seconds", type=float, default=4.0, help="speech for the model (default: %(default)s)")
    args = p.parse_args(argv)
    result = run_benchmark(scenes=args.scenes, candidates=args.candidates, frame_scenes=args.frame_scenes,
                           repeats=args.repeats, frames=args.frames, audio_seconds=args.audio_seconds, threads=args.threads)
    path = write_results(result, args.out)
    print(to_markdown(result))
    print(f"written: {path} and {path.with_suffix('.json')}")
    return result


if __name__ == "__main__":
    main()
