"""train.prepare on small mp4s written here: clips, manifests, and bad files reported per file."""

from __future__ import annotations

import json
from pathlib import Path

import av
import matplotlib
import numpy as np
import pytest
from PIL import Image

from fada_rt.clips import list_clips, read_clip, read_manifest
from fada_rt.config import CropConfig
from fada_rt.face import FaceDetector
from train.prepare import LENIENT, STRICT, PrepareConfig, prepare

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # a real portrait photo


def _write_video(path: Path, frames: np.ndarray, *, fps: int = 30, audio: np.ndarray | None = None,
                 rate: int = 44100) -> None:
    """H.264 video (+ stereo AAC at ``rate``) with PyAV."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.pix_fmt = "yuv420p"
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        a_stream = None
        if audio is not None:
            a_stream = c.add_stream("aac", rate=rate)
            a_stream.layout = "stereo"
        for f in frames:
            c.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(vs.encode())
        if a_stream is not None:
            stereo = np.stack([audio, audio * 0.5]).astype(np.float32)
            for i in range(0, stereo.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, i : i + 1024]), format="fltp",
                                                   layout="stereo")
                frame.sample_rate = rate
                c.mux(a_stream.encode(frame))
            c.mux(a_stream.encode())


def _talking_frames(seconds: float, fps: int = 30) -> np.ndarray:
    """The portrait drifting a few pixels inside a 240x320 frame (a stand-in for a talking head)."""
    face = np.array(Image.open(GRACE_HOPPER).convert("RGB").resize((128, 150)))
    frames = []
    for i in range(int(seconds * fps)):
        canvas = np.full((240, 320, 3), 60, np.uint8)
        dx, dy = int(6 * np.sin(i / 7)), int(3 * np.cos(i / 5))
        canvas[40 + dy : 190 + dy, 96 + dx : 224 + dx] = face
        frames.append(canvas)
    return np.stack(frames)


def _speech(seconds: float, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prepare")
    videos = root / "videos"
    videos.mkdir()
    _write_video(videos / "talk.mp4", _talking_frames(5.0), audio=_speech(5.0))
    _write_video(videos / "mute.mp4", _talking_frames(3.0))  # no audio track
    _write_video(videos / "empty_room.mp4", np.full((75, 120, 160, 3), 90, np.uint8), audio=_speech(3.0))
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    config = PrepareConfig(size=64, min_seconds=1.0, max_seconds=2.0, detect_every=3)
    report = prepare(videos=videos, out=root / "data", config=config, detect=FaceDetector(rotations=(0.0,)))
    return root, report


def test_clips_from_the_good_video(prepared) -> None:
    root, report = prepared
    data = root / "data"
    assert report["clips"] == 3  # 5 s in 2 s slices: 2 + 2 + 1 (>= min 1 s)
    clips = [read_clip(p) for p in list_clips(data)]
    assert [c.id for c in clips] == ["talk_000", "talk_001", "talk_002"]
    assert [c.num_frames for c in clips] == [50, 50, 25]
    for c in clips:
        assert c.frames.shape[1:] == (64, 64, 3) and c.fps == 25
        assert c.audio.shape == (c.num_frames * 640,)
        assert 0.05 < np.abs(c.audio).max() < 0.5  # the tone survived (stereo mixed down, resampled)
    quality = [json.loads(line) for line in (data / "quality.jsonl").read_text().splitlines()]
    assert all(q["face_rate"] == 1.0 and q["motion"] > 0 and q["sharpness"] > 0 for q in quality)


def test_bad_files_are_reported_and_skipped(prepared) -> None:
    root, report = prepared
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"mute.mp4", "empty_room.mp4", "broken.mp4"}
    assert reasons["mute.mp4"] == "no audio track"
    assert "no face" in reasons["empty_room.mp4"]
    assert "cannot decode" in reasons["broken.mp4"] or "invalid" in reasons["broken.mp4"].lower()
    assert json.loads((root / "data" / "prepare_report.json").read_text())["skipped"] == report["skipped"]


def test_manifests_nest(prepared) -> None:
    root, _ = prepared
    a, b = set(read_manifest(root / "data", "A")), set(read_manifest(root / "data", "B"))
    assert a <= b and b <= {"talk_000", "talk_001", "talk_002"} and b


def test_filter_presets() -> None:
    good = {"face_rate": 1.0, "sharpness": 200.0, "motion": 0.02, "background": 0.005,
            "sync_offset": 0, "sync_confidence": 6.0}
    assert STRICT.passes(good) and LENIENT.passes(good)
    desynced = {**good, "sync_offset": 9}
    assert not STRICT.passes(desynced) and LENIENT.passes(desynced)
    blurry = {**good, "sharpness": 5.0}
    assert not STRICT.passes(blurry) and not LENIENT.passes(blurry)


def test_training_crops_have_the_run_time_framing(prepared) -> None:
    """The clips are cut with the run time's alignment: found again in a clip (mean over its frames: the face
    drifts +-2.4 px in the crop), the eyes sit where the model's CropConfig puts them, within 12 % of the eye
    distance + 1 px (a 64 px clip through H.264)."""
    root, _ = prepared
    crop, size = CropConfig(), 64
    detector = FaceDetector(rotations=(0.0,))
    for clip in (read_clip(p) for p in list_clips(root / "data")):
        assert clip.meta["extra"]["crop"] == {"eye_distance": crop.eye_distance, "eye_y": crop.eye_y}
        found = [detector(np.ascontiguousarray(f)) for f in clip.frames[::3]]
        assert all(found), clip.id
        eyes = np.mean([np.stack([f[0].left_eye, f[0].right_eye]) for f in found], axis=0)
        expected = np.array([[(size - 1) / 2 - crop.eye_distance * size / 2, crop.eye_y * size],
                             [(size - 1) / 2 + crop.eye_distance * size / 2, crop.eye_y * size]])
        assert np.abs(eyes - expected).max() < 0.12 * crop.eye_distance * size + 1.0, (clip.id, eyes, expected)


def test_syncnet_flag_scores_every_clip(tmp_path: Path) -> None:
    """``--syncnet W`` (random SyncNet weights here) fills sync_offset/sync_confidence in quality.jsonl."""
    import torch
    from safetensors.torch import save_file

    from fada_rt.metrics.extractors.syncnet import SyncNet, SyncNetConfig
    from train.prepare import main

    torch.manual_seed(0)
    weights = tmp_path / "syncnet.safetensors"
    save_file({k: v.contiguous() for k, v in SyncNet(SyncNetConfig().video_size).state_dict().items()}, str(weights))
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_video(videos / "talk.mp4", _talking_frames(2.5), audio=_speech(2.5))
    main(["--videos", str(videos), "--out", str(tmp_path / "data"), "--size", "64", "--min-seconds", "1",
          "--max-seconds", "2", "--syncnet", str(weights)])
    rows = [json.loads(line) for line in (tmp_path / "data" / "quality.jsonl").read_text().splitlines()]
    assert rows and all(isinstance(r["sync_offset"], int) and abs(r["sync_offset"]) <= 15 for r in rows)
    assert all(np.isfinite(r["sync_confidence"]) and r["sync_confidence"] >= 0 for r in rows)
