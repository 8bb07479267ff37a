"""Incremental audio features and the streaming chunk loop (docs/design.md §2 'streaming', §4)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, randomize_zero_init

from fada_rt.audio_stream import AudioFeatureStream, FeatureContext, streamed_windows
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.pipeline import AvatarPipeline
from fada_rt.streaming import StreamingSession

#: Streamed mel features vs the offline MelFrontend on the whole clip. Both compute every value
#: from the same samples with the same STFT frames, so they agree to float rounding (measured: 0).
FEATURE_TOLERANCE = 1e-5
SPF = 640


@pytest.fixture(scope="module")
def pipeline() -> AvatarPipeline:
    model = make_tiny_model(seed=3).make_student("layer_tokens")
    randomize_zero_init(model)  # live temporal / CFG layers, so motion frames matter
    return AvatarPipeline(TorchBackend(model), sampler="fast")


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def speechy(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts with a syllable-rate envelope (enough to make features vary)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * 16000)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / 16000)
    return (rng.standard_normal(n) * 0.2 * env).astype(np.float32)


def stream_features(stream: AudioFeatureStream, wave: np.ndarray, rng: np.random.Generator, chunk: int = 8):
    outs, pos = [], 0
    while pos < wave.size:
        n = int(rng.integers(1, 4000))
        stream.push(wave[pos:pos + n])
        pos += n
        while stream.ready >= chunk:
            outs.append(stream.pop(chunk))
    stream.finish()
    while stream.ready:
        outs.append(stream.pop(min(chunk, stream.ready)))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("num_samples", [100, 640, 6400, 12801, 48123])
def test_streamed_features_equal_offline(pipeline, num_samples):
    wave = speechy(num_samples / 16000, seed=num_samples)
    offline = pipeline.audio_windows(wave)  # (1, T, 5, L, D)
    stream = AudioFeatureStream(pipeline.backend.audio_features, pipeline.config.audio)
    streamed = stream_features(stream, wave, np.random.default_rng(num_samples))
    assert offline.shape[1] == math.ceil(num_samples / SPF)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() <= FEATURE_TOLERANCE
    assert FeatureContext.for_config(pipeline.config.audio).exact


def test_lookahead_is_two_frames_plus_the_stft_half_window(pipeline):
    stream = AudioFeatureStream(pipeline.backend.audio_features, pipeline.config.audio)
    assert stream.lookahead == 2 * SPF + 120  # 87.5 ms: w = 2 frames + (n_fft - hop) / 2
    stream.push(np.zeros(3 * SPF + 119, np.float32))
    assert stream.ready == 0  # frame 0 needs frames 1, 2 and 120 samples past frame 2
    stream.push(np.zeros(1, np.float32))
    assert stream.ready == 1
    stream.push(np.zeros(10 * SPF, np.float32))
    assert stream.ready == 11
    stream.finish()
    assert stream.ready == math.ceil((13 * SPF + 120) / SPF)  # the zero-padded tail is ready at the end


def test_feature_buffer_stays_bounded(pipeline):
    """30 s in 20 ms blocks, popped chunk by chunk: the buffer never holds more than the context
    (3 frames), one chunk, the look-ahead and one block."""
    stream = AudioFeatureStream(pipeline.backend.audio_features, pipeline.config.audio)
    wave = speechy(30.0)
    for pos in range(0, wave.size, 320):
        stream.push(wave[pos:pos + 320])
        while stream.ready >= 8:
            stream.pop(8)
    bound = 3 * SPF + 8 * SPF + stream.lookahead + 320
    assert stream.max_buffered <= bound
    assert stream.next_frame >= 740


def offline_frames(pipeline: AvatarPipeline, face: np.ndarray, wave: np.ndarray, seed: int) -> np.ndarray:
    avatar = pipeline.prepare(face)
    windows = pipeline.audio_windows(wave)
    state = pipeline.initial_state(avatar)
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for start in range(0, windows.shape[1], pipeline.chunk_frames):
        out, state = pipeline.generate(avatar, windows[:, start:start + pipeline.chunk_frames], state, generator=gen)
        frames.append(out)
    return np.concatenate(frames)


@pytest.mark.parametrize("overlap", [False, True])
def test_session_output_equals_offline_generation(pipeline, face, overlap, monkeypatch):
    """Same seed, same audio: pushing it in random pieces gives the frames of one offline pass. With overlap_decode
    too, its chunks decoded in the backend's worker thread while the next chunk's steps ran."""
    wave = speechy(2.3, seed=5)  # 58 frames: 7 chunks + a partial one of 2
    expected = offline_frames(pipeline, face, wave, seed=11)
    decoders: list[str] = []
    decode = pipeline.backend.decode
    monkeypatch.setattr(pipeline.backend, "decode", lambda z: (decoders.append(threading.current_thread().name),
                                                               decode(z))[1])
    session = StreamingSession(pipeline, pipeline.prepare(face), generator=torch.Generator().manual_seed(11),
                               overlap_decode=overlap)
    rng, pos, chunks = np.random.default_rng(2), 0, []
    while pos < wave.size:
        n = int(rng.integers(200, 5000))
        session.push(wave[pos:pos + n])
        pos += n
        while (chunk := session.step()) is not None:
            chunks.append(chunk)
    session.finish()
    while (chunk := session.step()) is not None:
        chunks.append(chunk)
    assert session.done
    frames = np.concatenate([c.frames for c in chunks])
    pts = np.concatenate([c.pts for c in chunks])
    assert len(frames) == math.ceil(wave.size / SPF) == 58
    np.testing.assert_allclose(pts, np.arange(58) / 25)
    assert [len(c.frames) for c in chunks] == [8] * 7 + [2]
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1
    assert session.stats.frames == 58 and session.stats.dropped_frames == 0
    background = [name for name in decoders if name != threading.current_thread().name]
    assert len(background) == (8 if overlap else 0), decoders


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_drop_late_skips_chunks_whose_successor_is_complete(pipeline, face):
    clock = FakeClock()
    session = StreamingSession(pipeline, pipeline.prepare(face), generator=torch.Generator().manual_seed(0),
                               drop_late=True, clock=clock)
    session.push(speechy(3 * 8 * SPF / 16000 + 0.1))  # 3 chunks + look-ahead arrive at once (t = 100)
    clock.t = 100.5
    chunk = session.step()
    assert chunk.first_frame == 16 and chunk.dropped_before == 16  # only the newest chunk is rendered
    np.testing.assert_allclose(chunk.pts, (16 + np.arange(8)) / 25)
    np.testing.assert_allclose(chunk.latency, 0.5)
    assert session.stats.dropped_frames == 16 and session.stats.frames == 8
    assert session.step() is None  # nothing else is complete


def test_rtf_is_compute_seconds_per_second_of_video(pipeline, face):
    """RTF (lower is better): the clock advances 0.16 s per reading, so each chunk of 8 frames (0.32 s of video
    at 25 fps) costs 0.16 s between its start and its end."""
    ticks = iter(np.arange(1000) * 0.16)
    session = StreamingSession(pipeline, pipeline.prepare(face), generator=torch.Generator().manual_seed(0),
                               clock=lambda: float(next(ticks)))
    session.push(speechy(2 * 8 * SPF / 16000 + 0.1))
    assert session.step() is not None and session.step() is not None
    assert session.stats.frames == 16
    assert session.stats.rtf == pytest.approx(0.16 / (8 / pipeline.config.audio.fps))
    assert session.stats_dict()["rtf"] == pytest.approx(0.5)


def test_latency_follows_the_arrival_of_each_frames_audio(pipeline, face):
    clock = FakeClock(0.0)
    session = StreamingSession(pipeline, pipeline.prepare(face), generator=torch.Generator().manual_seed(0),
                               clock=clock)
    wave = speechy(1.0)
    for i in range(0, 16000, 1600):  # 100 ms blocks arriving at their real-time instants
        clock.t = (i + 1600) / 16000
        session.push(wave[i:i + 1600])
        if i == 6400:  # 0.5 s in: frames 0..7 (audio up to 0.32 s + 87.5 ms look-ahead) are ready
            clock.t = 0.6
            chunk = session.step()
            # frame k's centre sample 640 k + 320 arrived with the block ending after it
            arrival = np.ceil(((np.arange(8) * SPF + 320) + 1) / 1600) * 0.1
            np.testing.assert_allclose(chunk.latency, 0.6 - arrival)
    assert session.stats.latency_ms_max == pytest.approx(1000 * (0.6 - 0.1))


def test_switching_avatar_restarts_motion_from_the_new_reference(pipeline, face):
    session = StreamingSession(pipeline, pipeline.prepare(face), generator=torch.Generator().manual_seed(0))
    session.push(speechy(0.5))
    session.step()
    other = pipeline.prepare(255 - face)
    session.set_avatar(other)
    m = pipeline.motion_frames
    assert torch.equal(session.state.motion_latents, other.latent[:, None].expand(-1, m, -1, -1, -1))
    assert session.state.chunks == 1


# ---- the rolling sampler (--sampler stream) --------------------------------------------------------


@pytest.fixture(scope="module")
def rolling(pipeline) -> AvatarPipeline:
    return AvatarPipeline(pipeline.backend, sampler="stream")


def _session_frames(session, wave, rng=None):
    outs, pos = [], 0
    while pos < wave.size:
        n = wave.size if rng is None else int(rng.integers(200, 3000))
        session.push(wave[pos:pos + n])
        pos += n
        while (out := session.step()) is not None:
            outs.append(out)
    session.finish()
    while (out := session.step()) is not None:
        outs.append(out)
    return outs


def test_rolling_session_emits_every_frame_once_in_order(rolling, face):
    wave = speechy(1.3, seed=4)  # 33 frames
    offline = np.concatenate(list(rolling.frames(rolling.prepare(face), rolling.audio_windows(wave),
                                                 generator=torch.Generator().manual_seed(3))))
    session = StreamingSession(rolling, rolling.prepare(face), generator=torch.Generator().manual_seed(3))
    session.push(wave)
    session.finish()  # all audio known: every call admits the next frame, the offline schedule
    outs = _session_frames(session, wave[:0])
    frames = np.concatenate([o.frames for o in outs])
    assert len(frames) == len(offline) == 33 and session.done
    np.testing.assert_allclose(np.concatenate([o.pts for o in outs]), np.arange(33) / 25)
    assert np.abs(frames.astype(int) - offline.astype(int)).max() <= 1
    # pieces of audio: frames join whenever ready, so the schedule (and pixels) differ, never the frames' order
    pieces = _session_frames(StreamingSession(rolling, rolling.prepare(face), generator=torch.Generator().manual_seed(3)),
                             wave, np.random.default_rng(1))
    np.testing.assert_allclose(np.concatenate([o.pts for o in pieces]), np.arange(33) / 25)


def test_rolling_first_frame_needs_one_frame_of_audio_and_the_lookahead(rolling, face):
    """A chunk sampler waits for a chunk; the rolling one emits frame 0 once frame 0's features are exact, after
    one call per step of its plan."""
    session = StreamingSession(rolling, rolling.prepare(face), generator=torch.Generator().manual_seed(0))
    need = SPF + session.features.lookahead
    session.push(speechy(1.0)[: need - 1])
    assert not session.chunk_ready() and session.step() is None
    session.push(np.zeros(1, np.float32))
    out = session.step()
    assert out is not None and out.first_frame == 0 and len(out.frames) == 1
    assert session.state.chunks == rolling.sampler.plan.num_steps == 4  # frame 0 went through the 4 stages alone
    assert session.latency_floor == pytest.approx(need / 16000)
    session.push(speechy(0.2, seed=1))
    out = session.step()  # frames 1.. join: one call each time, the older ones leave
    assert out.first_frame == 1 and session.state.in_flight >= 1


def test_rolling_truncate_drops_frames_in_flight_and_skips_their_indices(rolling, face):
    session = StreamingSession(rolling, rolling.prepare(face), generator=torch.Generator().manual_seed(0))
    session.push(speechy(0.6))
    session.step()
    session.step()
    assert session.state.in_flight > 0
    popped = session.features.next_frame
    session.truncate()
    assert session.state.in_flight == 0 and session.state.next_frame == popped
    session.push(speechy(0.3, seed=2))
    assert session.step().first_frame == popped


def test_rolling_and_chunk_entry_points_refuse_each_other(pipeline, rolling, face):
    avatar = pipeline.prepare(face)
    windows = pipeline.audio_windows(speechy(0.3))
    with pytest.raises(ValueError, match="advance"):
        rolling.generate(avatar, windows[:, :8], rolling.initial_state(avatar), generator=torch.Generator())
    with pytest.raises(ValueError, match="generate"):
        pipeline.advance(avatar, pipeline.initial_state(avatar), windows[:, :1], generator=torch.Generator())
    with pytest.raises(ValueError, match="no frames in flight"):
        rolling.advance(avatar, rolling.initial_state(avatar), None, generator=torch.Generator())
    with pytest.raises(ValueError, match="group"):
        AvatarPipeline(pipeline.backend, sampler="stream", group=0)


def test_rolling_reuses_the_motion_features_of_latents_it_saw(rolling, face, monkeypatch):
    """Each call shifts the motion latents by the frames that came out: the ReferenceNet runs only on the new ones,
    and the features equal a full recomputation."""
    avatar = rolling.prepare(face)
    windows = rolling.audio_windows(speechy(0.5))
    state, gen = rolling.initial_state(avatar), torch.Generator().manual_seed(0)
    seen = []
    inner = rolling.backend.motion_features
    monkeypatch.setattr(rolling.backend, "motion_features", lambda m: seen.append(m.shape[1]) or inner(m))
    for k in range(8):
        _, state = rolling.advance(avatar, state, windows[:, k : k + 1], generator=gen)
        motion, features = state.motion_cache
        for got, full in zip(features, inner(motion)):
            torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    # the first call sees the portrait twice; calls 2-4 the same latents (no frame out yet): nothing runs; then one
    # frame out per call: one new latent each
    assert seen == [2, 1, 1, 1, 1]


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_a_shorter_lookahead_is_exact_up_to_the_frames_it_waits_for(pipeline, lookahead):
    """A frame waiting for L frames of audio after its own gets the offline features in its window's slots up to
    k + L (the rest are computed from the audio there was); L = w is the offline feature exactly."""
    wave = speechy(1.2, seed=3)
    offline = pipeline.audio_windows(wave)  # (1, T, 2w+1, L, D)
    audio = pipeline.config.audio
    streamed = streamed_windows(pipeline.backend.audio_features, wave, audio, lookahead=lookahead)
    assert streamed.shape == offline.shape
    w = audio.window
    exact = slice(0, w + lookahead + 1)
    torch.testing.assert_close(streamed[:, :, exact], offline[:, :, exact], atol=FEATURE_TOLERANCE, rtol=0)
    if lookahead < w:
        assert (streamed[:, 5:-5, w + lookahead + 1 :] - offline[:, 5:-5, w + lookahead + 1 :]).abs().max() > 1e-2
    stream = AudioFeatureStream(pipeline.backend.audio_features, audio, lookahead=lookahead)
    stream.push(wave[: SPF + lookahead * SPF + stream.context.right])
    assert stream.ready == 1 and stream.lookahead == lookahead * SPF + 120
    with pytest.raises(ValueError, match="lookahead"):
        AudioFeatureStream(pipeline.backend.audio_features, audio, lookahead=w + 1)
