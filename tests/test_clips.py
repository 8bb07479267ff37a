"""The clip format (fada_rt/clips.py): round trips, determinism, plain media files, errors."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from fada_rt.clips import (
    Clip,
    ClipError,
    clip_id_of,
    list_clips,
    num_frames_for,
    read_clip,
    read_labels,
    read_manifest,
    write_clip,
    write_labels,
    write_manifest,
)


def _data(t=10, size=32, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
    audio = (0.5 * np.sin(np.arange(t * 640) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    return frames, audio


def test_num_frames_convention():
    assert num_frames_for(640) == 1
    assert num_frames_for(641) == 2
    assert num_frames_for(16000) == 25


def test_lossless_round_trip_is_exact_and_files_are_byte_identical(tmp_path):
    frames, audio = _data()
    a = write_clip(dataset=tmp_path / "a", clip_id="c1", frames=frames, audio=audio, extra={"note": 1})
    b = write_clip(dataset=tmp_path / "b", clip_id="c1", frames=frames, audio=audio, extra={"note": 1})
    clip = read_clip(a)
    assert clip.id == "c1" and clip.fps == 25
    np.testing.assert_array_equal(clip.frames, frames)  # FFV1 is lossless
    np.testing.assert_allclose(clip.audio, audio, atol=1.0 / 32767 + 1e-7)  # PCM16 quantisation only
    assert clip.meta["num_frames"] == 10 and clip.meta["num_samples"] == 6400 and clip.meta["extra"] == {"note": 1}
    for name in ("video.mkv", "audio.wav", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_lossy_mp4_round_trip_is_close(tmp_path):
    t, size = 12, 48
    y, x = np.mgrid[:size, :size]
    frames = np.stack([np.stack([(x * 5 + k) % 256, (y * 5) % 256, np.full_like(x, 128)], -1) for k in range(t)]).astype(np.uint8)
    _, audio = _data(t=t)
    folder = write_clip(dataset=tmp_path, clip_id="lossy", frames=frames, audio=audio, lossless=False)
    assert (folder / "video.mp4").is_file() and not (folder / "video.mkv").exists()
    clip = read_clip(folder)
    assert clip.frames.shape == frames.shape
    mse = np.mean((clip.frames.astype(float) - frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # PSNR of H.264 at crf 18 on a smooth pattern


def test_write_rejects_bad_input(tmp_path):
    frames, audio = _data(t=10)
    with pytest.raises(ClipError, match="do not match"):
        write_clip(dataset=tmp_path, clip_id="x", frames=frames[:9], audio=audio)
    with pytest.raises(ClipError, match="even"):
        write_clip(dataset=tmp_path, clip_id="x", frames=np.zeros((10, 31, 32, 3), np.uint8), audio=audio)
    with pytest.raises(ClipError, match="bad clip id"):
        write_clip(dataset=tmp_path, clip_id="a/b", frames=frames, audio=audio)
    with pytest.raises(ClipError, match="uint8"):
        write_clip(dataset=tmp_path, clip_id="x", frames=frames.astype(np.float32), audio=audio)
    with pytest.raises(ClipError, match="fps"):
        write_clip(dataset=tmp_path, clip_id="x", frames=frames, audio=audio, fps=30)


def test_read_reports_missing_and_corrupt_clips(tmp_path):
    frames, audio = _data()
    with pytest.raises(FileNotFoundError, match="no clip"):
        read_clip(tmp_path / "nope")
    folder = write_clip(dataset=tmp_path, clip_id="c", frames=frames, audio=audio)
    wav = (folder / "audio.wav").read_bytes()
    (folder / "audio.wav").write_bytes(wav[: len(wav) // 2])
    with pytest.raises(ClipError, match="truncated"):
        read_clip(folder)
    (folder / "audio.wav").write_bytes(wav)
    (folder / "video.mkv").write_bytes(b"not a video at all" * 10)
    with pytest.raises(ClipError):
        read_clip(folder)
    (folder / "meta.json").unlink()
    with pytest.raises(ClipError, match=r"meta\.json is missing"):
        read_clip(folder)


def test_meta_mismatch_is_an_error(tmp_path):
    frames, audio = _data()
    folder = write_clip(dataset=tmp_path, clip_id="c", frames=frames, audio=audio)
    meta = json.loads((folder / "meta.json").read_text())
    meta["num_frames"] = 11
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ClipError, match="truncated or corrupt"):
        read_clip(folder)


def test_manifests_labels_and_listing(tmp_path):
    frames, audio = _data(t=3)
    for cid in ("b", "a", "c"):
        write_clip(dataset=tmp_path, clip_id=cid, frames=frames, audio=audio[: 3 * 640])
    write_manifest(tmp_path, "A", ["c", "a"])
    assert read_manifest(tmp_path, "A") == ["a", "c"]
    assert [p.name for p in list_clips(tmp_path)] == ["a", "b", "c"]
    assert [p.name for p in list_clips(tmp_path, manifest="A")] == ["a", "c"]
    with pytest.raises(FileNotFoundError, match="manifest_B"):
        list_clips(tmp_path, manifest="B")
    write_manifest(tmp_path, "C", ["zzz"])
    with pytest.raises(ClipError, match="missing clips"):
        list_clips(tmp_path, manifest="C")
    write_labels(tmp_path, "a", {"kind": "clean", "offset_frames": 0})
    assert read_labels(tmp_path, "a") == {"kind": "clean", "offset_frames": 0}
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path, "b")


def test_reads_plain_mp4_with_audio_track(tmp_path):
    t, size = 25, 32
    frames, _ = _data(t=t, size=size)
    path = tmp_path / "gen_0001.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        as_ = c.add_stream("aac", rate=16000)
        as_.layout = "mono"
        for f in frames:
            c.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(vs.encode())
        tone = (0.3 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
        for i in range(0, 16000, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, i : i + 1024], format="flt", layout="mono")
            af.sample_rate = 16000
            af.pts = i
            c.mux(as_.encode(af))
        c.mux(as_.encode())
    clip = read_clip(path)
    assert clip.id == "gen_0001" == clip_id_of(path)
    assert clip.frames.shape == (t, size, size, 3)
    assert abs(clip.audio.shape[0] - 16000) <= 2048  # AAC priming/padding
    assert 0.15 < np.abs(clip.audio).max() < 0.45
    assert [p.name for p in list_clips(tmp_path)] == ["gen_0001.mp4"]


def test_frame_range_keeps_frames_and_audio_aligned() -> None:
    frames = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    audio = np.arange(5 * 640, dtype=np.float32)
    clip = Clip(id="c", frames=frames, audio=audio, fps=25, meta={"k": 1})
    part = clip.frame_range(1, 3)
    assert np.array_equal(part.frames, frames[1:3]) and part.meta == {"k": 1} and part.id == "c"
    assert part.audio[0] == 640 and part.audio[-1] == 3 * 640 - 1 and len(part.audio) == 2 * 640
    with pytest.raises(ValueError, match=r"frame range \[3, 9\) is outside its 5 frames"):
        clip.frame_range(3, 9)
