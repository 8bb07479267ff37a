"""The embedding API as a call uses it: speech pushed at any rate and pace, turns, barge-in, idle, paced frames
with their audio and events (fada_rt/api.py, docs/calls.md)."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, randomize_zero_init

from fada_rt.api import StreamingAvatar
from fada_rt.assets import EXAMPLE_AUDIO, EXAMPLE_IMAGE
from fada_rt.backends.options import default_threads
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.media import read_audio
from fada_rt.pipeline import AvatarPipeline

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def pipeline() -> AvatarPipeline:
    model = make_tiny_model(seed=5).make_student("layer_tokens")
    randomize_zero_init(model)
    return AvatarPipeline(TorchBackend(model))



@pytest.fixture(scope="module", params=["fast", "stream"])
def either(request, pipeline) -> AvatarPipeline:
    """The chunk sampler's pipeline, and the rolling sampler's on the same model."""
    return pipeline if request.param == "fast" else AvatarPipeline(pipeline.backend, sampler="stream")


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def speech(seconds: float, rate: int) -> np.ndarray:
    return read_audio(EXAMPLE_AUDIO, sample_rate=rate)[int(0.3 * rate) : int((0.3 + seconds) * rate)]


def test_the_readme_snippet_runs_to_completion():
    """README's embedding example, run as written: a 7 s TTS reply pushed at once gives all 175 frames."""
    text = (ROOT / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(from fada_rt.api import StreamingAvatar\n.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    stats = scope["avatar"].stats
    assert stats["speech_frames"] == 175 and stats["turns"] == 1 and stats["dropped_frames"] == 0
    assert scope["events"] == ["speaking_started", "speaking_finished"]


def test_every_pushed_sample_comes_back_with_its_frames(either, face):
    """Offline: a 1.5 s reply at 22.05 kHz, pushed at once in odd blocks, comes back as whole frames whose audio
    is the reply resampled to the output rate (nothing dropped, in order) and pts on one clock."""
    rate, out_rate = 22050, 24000
    pcm = speech(1.5, rate)
    avatar = StreamingAvatar(face, crop="centre", pipeline=either, realtime=False, audio_rate=out_rate)
    for i in range(0, pcm.size, 777):
        avatar.push_audio(pcm[i : i + 777], rate)
    avatar.end_audio()
    frames = list(avatar.frames())
    talk = [f for f in frames if f.speaking]
    assert len(talk) == -(-pcm.size * 25 // rate) == 38  # ceil(1.5 s x 25)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.pts for f in frames] == pytest.approx(np.arange(len(frames)) / 25)
    assert all(f.audio.shape == (out_rate // 25,) and f.image.shape == (64, 64, 3) for f in frames)
    heard = np.concatenate([f.audio for f in talk])
    expected = read_audio(EXAMPLE_AUDIO, sample_rate=out_rate)[int(0.3 * out_rate) : int(1.8 * out_rate)]
    n = min(heard.size, expected.size)
    lag = int(np.argmax(np.correlate(heard[: n // 2], expected[: n // 2 - 64], mode="valid")))
    assert lag < 64  # the resampler's delay, a few ms at most
    assert np.corrcoef(heard[lag : lag + n - 64], expected[: n - 64])[0, 1] > 0.99


def test_turns_keep_the_stream_open_and_carry_events(either, face):
    """Two replies with end_turn between: started/finished per turn, idle frames between them, one continuous
    output clock, and the stream goes on afterwards."""
    avatar = StreamingAvatar(face, crop="centre", pipeline=either, audio_rate=16000)
    avatar.push_audio(speech(0.6, 16000), 16000)
    avatar.end_turn()
    events, kinds, indices, second = [], [], [], False
    for frame in avatar.frames():
        events += [(e.kind, e.turn, round(e.played, 2)) for e in frame.events]
        kinds.append(frame.speaking)
        indices.append(frame.index)  # slots of the output clock: a slow machine's missed slots are skipped
        if len(events) == 2 and frame.index > 40 and not second:
            avatar.push_audio(speech(0.4, 16000), 16000)
            avatar.end_turn()
            second = True
        if len(events) >= 4 or frame.index > 200:
            break
    avatar.close()
    assert events == [("speaking_started", 1, 0.0), ("speaking_finished", 1, 0.6),
                      ("speaking_started", 2, 0.0), ("speaking_finished", 2, 0.4)]
    assert sum(kinds) == 15 + 10
    first_idle_after = kinds.index(False, kinds.index(True))
    second_pushed = next(i for i, index in enumerate(indices) if index > 40)
    assert not any(kinds[first_idle_after : second_pushed + 1])  # idle between the turns
    assert avatar.stats["turns"] == 2
    assert avatar.stats["idle_frames"] + avatar.stats["late_frames"] > 20  # idle slots, shown or skipped


def test_interrupt_drops_queued_speech_within_one_chunk(either, face):
    avatar = StreamingAvatar(face, crop="centre", pipeline=either, audio_rate=16000)
    avatar.push_audio(speech(4.0, 16000), 16000)
    avatar.end_turn()
    after, seen = [], 0
    for frame in avatar.frames():
        seen += frame.speaking
        if seen == 10 and not after:
            avatar.interrupt()
            avatar.interrupt()  # a second one: nothing more to drop, no second event
            after.append(frame)
            continue
        if after:
            after.append(frame)
            if len(after) > 30:
                break
        if frame.index > 300:
            break
    avatar.close()
    first = after[1]
    assert [e.kind for e in first.events] == ["interrupted"] and first.events[0].played == pytest.approx(0.4)
    assert not any(f.speaking for f in after[1:])  # not one more frame of the dropped speech
    assert sum(len(f.events) for f in after[1:]) == 1
    assert avatar.stats["interrupts"] == 1 and avatar.stats["speech_frames"] == 10


def test_a_new_turn_after_an_interrupt_speaks(pipeline, face):
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, audio_rate=16000)
    avatar.push_audio(speech(2.0, 16000), 16000)
    frames = []
    for frame in avatar.frames():
        frames.append(frame)
        if sum(f.speaking for f in frames) == 5 and avatar.stats["interrupts"] == 0:
            avatar.interrupt()
            avatar.push_audio(speech(0.4, 16000), 48000 // 3)  # a new turn may change the rate
            avatar.end_turn()
        if any(e.kind == "speaking_finished" for e in frame.events) or len(frames) > 200:
            break
    avatar.close()
    kinds = [(e.kind, e.turn) for f in frames for e in f.events]
    assert kinds == [("speaking_started", 1), ("interrupted", 1), ("speaking_started", 2), ("speaking_finished", 2)]
    assert sum(f.speaking for f in frames) == 5 + 10


def test_idle_is_a_calm_closed_face(shipped):
    """No speech for 4 s: the shipped student keeps the portrait with the mouth closed and still; speech moves the
    mouth far more (the measures can fail: measured idle 1.2 / 10.4, speech 9.5 / 35)."""
    avatar = StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped, output="crop")
    idle = [f.image.astype(np.float32) for _, f in zip(range(100), avatar.frames())]
    avatar.push_audio(speech(3.0, 16000), 16000)
    avatar.end_turn()
    talk = [f.image.astype(np.float32) for f in avatar.frames(until_idle=True) if f.speaking]
    avatar.close()
    portrait = avatar.portrait.crop.astype(np.float32)
    mouth = np.s_[40:56, 20:44]  # the tiny framing: the mouth's box in the 64 px crop
    def motion(frames):  # the mouth's mean temporal standard deviation
        return float(np.stack(frames)[:, mouth[0], mouth[1]].std(axis=0).mean())

    def opening(frames):  # the largest mean difference of the mouth from the portrait's (closed) mouth
        return max(float(np.abs(f[mouth] - portrait[mouth]).mean()) for f in frames)

    assert motion(idle) < 0.3 * motion(talk) and opening(idle) < 0.5 * opening(talk)
    assert max(np.abs(f - portrait).mean() for f in idle) < 12  # no drift away from the portrait


def test_latency_counts_from_the_capture_time(pipeline, face):
    """A known delay: audio captured 0.5 s before it is pushed shows in every speech frame's latency (emitted -
    captured) and in the stats, so a source that stamps its capture time gets the true figure."""
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False)
    start = avatar.clock()
    avatar.push_audio(speech(0.5, 16000), 16000, captured_at=start - 0.5)
    avatar.end_audio()
    frames = [f for f in avatar.frames() if f.speaking]
    wall = avatar.clock() - start
    assert all(f.captured_at == start - 0.5 and 0.5 <= f.latency <= 0.5 + wall for f in frames)
    assert 500 <= avatar.stats["latency_ms_mean"] <= 1000 * (0.5 + wall)


def test_max_latency_skips_speech_that_would_play_too_late(pipeline, face):
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, audio_rate=16000, max_latency=1.0)
    avatar.push_audio(speech(5.0, 16000), 16000)  # 5 s at once: 4 s over the bound
    avatar.end_turn()
    frames = list(avatar.frames(until_idle=True))
    avatar.close()
    spoken = sum(f.speaking for f in frames)
    assert 20 <= spoken <= 30 and avatar.stats["dropped_frames"] >= 95


def test_async_iteration_gives_the_same_frames(pipeline, face):
    def run_sync():
        a = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False, seed=4)
        a.push_audio(speech(0.5, 16000), 16000)
        a.end_audio()
        return [f.image for f in a.frames() if f.speaking]

    async def run_async():
        a = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False, seed=4)
        threading.Thread(target=lambda: (a.push_audio(speech(0.5, 16000), 16000), a.end_audio())).start()
        return [f.image async for f in a if f.speaking]

    sync, asynchronous = run_sync(), asyncio.run(run_async())
    assert len(sync) == len(asynchronous) == 13  # ceil(0.5 s x 25); the chunk's last 3 frames are idle
    assert all(np.array_equal(a, b) for a, b in zip(sync, asynchronous))


def test_bad_use_gives_clear_errors(pipeline, face):
    with pytest.raises(ValueError, match="whole multiples of 25 fps"):
        StreamingAvatar(face, crop="centre", pipeline=pipeline, audio_rate=44110)
    with pytest.raises(ValueError, match="only for realtime=True"):
        StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False, max_latency=1.0)
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False)
    with pytest.raises(TimeoutError, match=r"no frame within 0\.05 s"):
        avatar.next_frame(timeout=0.05)  # offline: no idle frames while nothing is pushed
    with pytest.raises(ValueError, match="samples, channels"):
        avatar.push_audio(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(ValueError, match="positive int"):
        avatar.push_audio(np.zeros(10, np.float32), 0)
    with pytest.raises(ValueError, match=r"float \(in \[-1, 1\]\), int16 or int32"):
        avatar.push_audio(np.zeros(10, np.uint8), 16000)
    with pytest.raises(ValueError, match="NaN or infinite"):
        avatar.push_audio(np.full(10, np.nan, np.float32), 16000)
    avatar.push_audio(np.zeros(0, np.float32), 16000)  # an empty block is nothing
    avatar.push_audio(np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match="changed from 16000 to 48000"):
        avatar.push_audio(np.zeros(100, np.float32), 48000)  # within one turn
    avatar.interrupt()
    avatar.interrupt()  # nothing left to drop: no error
    avatar.end_audio()
    with pytest.raises(RuntimeError, match="after end_audio"):
        avatar.push_audio(np.zeros(100, np.float32), 16000)
    assert list(avatar.frames()) == []  # the interrupted 100 samples were dropped
    closed = StreamingAvatar(face, crop="centre", pipeline=pipeline)
    closed.close()
    closed.close()
    assert closed.next_frame() is None
    with pytest.raises(RuntimeError, match="after close"):
        closed.push_audio(np.zeros(10, np.float32), 16000)


def test_the_model_is_one_load_options_value_or_its_keywords(pipeline, face, tmp_path):
    from fada_rt.backends import LoadOptions
    from fada_rt.checkpoint import save_model

    save_model(pipeline.backend.model, tmp_path / "fast", role="student")
    by_keywords = StreamingAvatar(face, crop="centre", checkpoint=tmp_path / "fast", dtype="float32")
    assert torch.get_num_threads() == default_threads()  # the call's default (docs/calls.md)
    by_value = StreamingAvatar(face, LoadOptions(checkpoint=tmp_path / "fast", threads=2), crop="centre")
    assert torch.get_num_threads() == 2
    for avatar in (by_keywords, by_value):
        assert avatar.pipeline.backend.role == "student" and avatar.pipeline.nfe == 6
        avatar.close()
    with pytest.raises(ValueError, match="either a pipeline or the options"):
        StreamingAvatar(face, crop="centre", pipeline=pipeline, checkpoint=tmp_path / "fast")
    with pytest.raises(ValueError, match="either LoadOptions or their keywords"):
        StreamingAvatar(face, LoadOptions(), device="cpu", crop="centre")


def test_push_audio_refuses_bad_arrays_before_opening_a_turn(pipeline, face):
    """Channels-first and non-finite PCM are refused with what to do, and no turn is opened for them."""
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, realtime=False)
    with pytest.raises(ValueError, match=r"got \(2, 48000\); pass \(samples, channels\), e\.g\. pcm\.T"):
        avatar.push_audio(np.zeros((2, 48000), np.float32), 48000)
    pcm = np.zeros((24000, 2), np.float32)
    pcm[6000, 0] = np.nan
    with pytest.raises(ValueError, match=r"the array has a NaN or infinite sample at 0\.250 s \(sample 6000\)"):
        avatar.push_audio(pcm, 24000)
    with pytest.raises(ValueError, match="positive int"):
        avatar.push_audio(np.zeros(10, np.float32), 0)
    assert avatar.push_audio(np.zeros((3, 2), np.int16), 24000) == 1  # a short (samples, channels) block is fine
    assert avatar.push_audio(np.zeros((4797, 2), np.int16), 24000) == 1
    avatar.end_audio()
    assert [f.turn for f in avatar.frames()] == [1] * 5  # 0.2 s: the refused pushes opened no turn
    avatar.close()


def test_the_output_clock_holds_and_skips_the_slots_the_model_missed(pipeline, face):
    """Realtime on a clock the test moves: a frame asked for 1.5 slots after its time takes slot 2 (pts 0.08, half a
    slot late), the missed slot stays empty and counts in late_frames; the next frame is on time; one asked for
    0.75 slot late waits for the following slot (emitted when the clock reaches it). A slipping clock (the old
    behaviour) would give indices 1, 2, 3 and let the pictures trail by 60 ms for good."""
    now = [100.0]
    avatar = StreamingAvatar(face, crop="centre", pipeline=pipeline, audio_rate=16000, clock=lambda: now[0])
    try:
        first = avatar.next_frame()  # idle frames: the first one starts the clock at 100.0
        now[0] = 100.1  # slot 1 was due at 100.04: 1.5 slots late
        late = avatar.next_frame()
        now[0] = 100.12  # slot 3 is due now
        on_time = avatar.next_frame()
        now[0] = 100.19  # slot 4 was due at 100.16: 0.75 slot late, so it waits for slot 5 (100.2)
        threading.Timer(0.3, lambda: now.__setitem__(0, 100.2)).start()
        waited = avatar.next_frame(timeout=5.0)
    finally:
        avatar.close()
    assert [f.index for f in (first, late, on_time, waited)] == [0, 2, 3, 5]
    assert [f.pts for f in (first, late, on_time, waited)] == pytest.approx([0.0, 0.08, 0.12, 0.2])
    assert avatar.stats["late_frames"] == 2 and avatar.stats["frames"] == 4


def test_the_live_recording_holds_the_picture_in_silence_for_skipped_slots(tmp_path):
    from fada_rt.api import AvatarFrame
    from fada_rt.live import LiveRecorder
    from fada_rt.video_out import probe_video

    recorder = LiveRecorder(tmp_path / "live.mp4", size=64, fps=25, sample_rate=16000)
    for index in (0, 1, 4):  # slots 2 and 3 went by with no frame ready
        recorder.write(AvatarFrame(image=np.full((64, 64, 3), 60 * index, np.uint8),
                                   audio=np.full(640, 0.25, np.float32), pts=index / 25, index=index, speaking=True))
    recorder.close()
    info = probe_video(tmp_path / "live.mp4")
    assert (info.frames, recorder.held) == (5, 2)
    assert info.audio_duration == pytest.approx(0.2, abs=0.03)
    heard = read_audio(tmp_path / "live.mp4", sample_rate=16000)
    middle = heard[2 * 640 + 200 : 4 * 640 - 200]  # the held slots: silence (AAC's edges aside)
    assert np.abs(middle).max() < 0.02 and np.abs(heard[200:1000]).mean() > 0.2
