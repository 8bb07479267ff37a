"""The embedding API: StreamingAvatar(...).push_audio(pcm, rate) with sync and async (frame, pts) iterators."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest
from conftest import make_tiny_model, randomize_zero_init

from fada_rt.api import StreamingAvatar
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.pipeline import AvatarPipeline


@pytest.fixture(scope="module")
def pipeline() -> AvatarPipeline:
    model = make_tiny_model(seed=5).make_student("layer_tokens")
    randomize_zero_init(model)
    return AvatarPipeline(TorchBackend(model))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def pcm48k_stereo_int16(seconds: float) -> np.ndarray:
    t = np.arange(round(48000 * seconds)) / 48000
    mono = 0.4 * np.sin(2 * np.pi * 180 * t) * (t % 0.25 < 0.15)
    return (np.stack([mono, mono * 0.5], axis=1) * 32767).astype(np.int16)  # (n, 2) like sounddevice


def push_in_thread(avatar: StreamingAvatar, pcm: np.ndarray, rate: int, block: int) -> threading.Thread:
    def run():
        for i in range(0, len(pcm), block):
            avatar.push_audio(pcm[i:i + block], rate)
        avatar.end_audio()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sync_iterator_yields_every_frame_on_the_audio_clock(pipeline, face):
    pcm = pcm48k_stereo_int16(1.3)
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, seed=3, realtime=False)
    thread = push_in_thread(avatar, pcm, 48000, 960)  # 20 ms blocks from another thread
    frames = list(avatar)
    thread.join()
    samples_16k = round(len(pcm) / 3)
    assert len(frames) == math.ceil(samples_16k / 640) == 33
    pts = [p for _, p in frames]
    np.testing.assert_allclose(pts, np.arange(33) / 25)
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f, _ in frames)
    stats = avatar.stats
    assert stats["frames"] == 33 and stats["dropped_frames"] == 0
    assert stats["audio_seconds"] == pytest.approx(1.3, abs=1e-3)
    assert stats["latency_floor_ms"] == pytest.approx(1000 * (8 * 640 + 2 * 640 + 120) / 16000)


def test_async_iterator_gives_the_same_frames(pipeline, face):
    pcm = pcm48k_stereo_int16(0.7)
    sync = StreamingAvatar(face, crop="centre", pipeline=pipeline, seed=4, realtime=False)
    sync.push_audio(pcm, 48000)
    sync.end_audio()
    expected = list(sync)

    async def collect():
        avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, seed=4, realtime=False)
        thread = push_in_thread(avatar, pcm, 48000, 4800)
        out = [item async for item in avatar]
        thread.join()
        return out

    got = asyncio.run(collect())
    assert len(got) == len(expected) == 18
    assert all(np.array_equal(a, b) and pa == pb for (a, pa), (b, pb) in zip(got, expected))


def test_realtime_mode_drops_backlog_instead_of_growing_latency(pipeline, face):
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=True)
    avatar.push_audio(np.zeros(6 * 8 * 640 + 2 * 640 + 120, np.float32), 16000)  # 6 chunks + look-ahead at once
    _, pts = avatar.next_frame()
    assert pts == pytest.approx(40 / 25)  # chunk 5 is the newest complete one: 0..4 are dropped
    assert avatar.stats["dropped_frames"] == 40


def test_switching_the_portrait_mid_stream(pipeline, face):
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False)
    avatar.push_audio(np.zeros(640 * 20, np.float32), 16000)
    first = [avatar.next_frame() for _ in range(8)]
    other = avatar.set_image(np.full((64, 64, 3), 200, np.uint8))
    assert np.array_equal(other.image, np.full((64, 64, 3), 200, np.uint8))
    avatar.end_audio()
    rest = list(avatar)
    assert len(first) + len(rest) == 20
    assert [p for _, p in rest] == pytest.approx(np.arange(8, 20) / 25)


def test_bad_use_gives_clear_errors(pipeline, face):
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline)
    with pytest.raises(TimeoutError, match="is audio being pushed"):
        avatar.next_frame(timeout=0.05)
    with pytest.raises(ValueError, match="samples, channels"):
        avatar.push_audio(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(ValueError, match="positive int"):
        avatar.push_audio(np.zeros(10, np.float32), 0)
    with pytest.raises(ValueError, match=r"float \(in \[-1, 1\]\), int16 or int32"):
        avatar.push_audio(np.zeros(10, np.uint8), 16000)
    avatar.push_audio(np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match="changed from 16000 to 48000"):
        avatar.push_audio(np.zeros(100, np.float32), 48000)
    avatar.end_audio()
    with pytest.raises(RuntimeError, match="after end_audio"):
        avatar.push_audio(np.zeros(100, np.float32), 16000)
    assert len(list(avatar)) == 1  # 100 samples -> one frame
    empty = StreamingAvatar(face, crop="centre", pipeline=pipeline)
    empty.end_audio()
    assert list(empty) == []
    closed = StreamingAvatar(face, crop="centre", pipeline=pipeline)
    closed.close()
    assert closed.next_frame() is None


def test_the_model_is_one_load_options_value_or_its_keywords(pipeline, face, tmp_path):
    from fada_rt.backends import LoadOptions
    from fada_rt.checkpoint import save_model

    save_model(pipeline.backend.model, tmp_path / "fast", role="student")
    by_keywords = StreamingAvatar(face, crop="centre", checkpoint=tmp_path / "fast", dtype="float32")  # README's form
    by_value = StreamingAvatar(face, LoadOptions(checkpoint=tmp_path / "fast"), crop="centre")
    for avatar in (by_keywords, by_value):
        assert avatar.pipeline.backend.role == "student" and avatar.pipeline.nfe == 6
    with pytest.raises(ValueError, match="either a pipeline or the options"):
        StreamingAvatar(face, crop="centre", pipeline=pipeline, checkpoint=tmp_path / "fast")
    with pytest.raises(ValueError, match="either LoadOptions or their keywords"):
        StreamingAvatar(face, LoadOptions(), device="cpu", crop="centre")
