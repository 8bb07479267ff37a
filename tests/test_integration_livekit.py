"""The LiveKit Agents adapter (fada_rt/integrations/livekit.py) with LiveKit's real classes: speech in as
``rtc.AudioFrame``s and ``AudioSegmentEnd``, out as ``rtc.VideoFrame`` / ``rtc.AudioFrame`` / ``AudioSegmentEnd``
the way ``AvatarRunner`` consumes them, and through a real ``rtc.AVSynchronizer`` (no LiveKit server needed).
``AvatarRunner`` itself cannot run here: it publishes its tracks on the first frame and waits for a connected
room, which needs a LiveKit server."""

from __future__ import annotations

import asyncio
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fada_rt.api import StreamingAvatar
from fada_rt.assets import EXAMPLE_AUDIO, EXAMPLE_IMAGE
from fada_rt.media import read_audio

pytest.importorskip("livekit.agents", reason="the livekit extra is not installed: pip install -e '.[livekit]'")
from livekit import api, rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from fada_rt.integrations.livekit import FadaVideoGenerator, avatar_options

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0  # seconds for one scripted exchange (never reached unless something hangs)




@pytest.fixture(scope="module")
def wide_face() -> np.ndarray:
    """The example face padded to 320x256: a picture that is not square (width and height must not swap)."""
    face = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))
    return np.pad(face, ((0, 0), (32, 32), (0, 0)), mode="edge")


def speech(seconds: float, rate: int) -> np.ndarray:
    """Real speech (flite) as int16 mono."""
    pcm = read_audio(EXAMPLE_AUDIO, sample_rate=rate)[int(0.3 * rate) : int((0.3 + seconds) * rate)]
    return np.round(pcm * 32767).astype(np.int16)


async def push(generator: FadaVideoGenerator, pcm: np.ndarray, rate: int, block_ms: int) -> None:
    """One segment as LiveKit's DataStreamAudioReceiver delivers it: frames of ``block_ms``, then its end."""
    n = rate * block_ms // 1000
    for i in range(0, pcm.size, n):
        block = pcm[i : i + n]
        await generator.push_audio(rtc.AudioFrame(block.tobytes(), rate, 1, block.size))
    await generator.push_audio(AudioSegmentEnd())


async def collect(items, *, until, limit: float = TIMEOUT) -> list:
    """Items of the generator's iterator until ``until(items so far)`` holds."""
    out: list = []

    async def run() -> None:
        async for item in items:
            out.append(item)
            if until(out):
                return

    await asyncio.wait_for(run(), limit)
    return out


def idle_after_end(n: int):
    """Until ``n`` video frames came after the first AudioSegmentEnd."""
    def until(items: list) -> bool:
        ends = [i for i, x in enumerate(items) if isinstance(x, AudioSegmentEnd)]
        return bool(ends) and sum(isinstance(x, rtc.VideoFrame) for x in items[ends[0]:]) >= n
    return until


def pcm_of(frames: list[rtc.AudioFrame]) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])


def test_a_reply_comes_back_as_livekit_frames(shipped, wide_face):
    """1 s of speech at 24 kHz in 20 ms frames: every picture an RGBA VideoFrame of the picture's size, one
    48 kHz AudioFrame of 1920 samples per speech picture, the speech's 1 s back (padded to whole frames), an
    AudioSegmentEnd after its last audio, idle pictures (without audio) after it."""
    async def run() -> tuple[list, FadaVideoGenerator]:
        generator = FadaVideoGenerator(StreamingAvatar(wide_face, pipeline=shipped, audio_rate=48000))
        stream = aiter(generator)
        await push(generator, speech(1.0, 24000), 24000, block_ms=20)
        items = await collect(stream, until=idle_after_end(10))
        await generator.aclose()
        assert await collect(stream, until=lambda _: False) == []  # closed: the iteration ends
        return items, generator

    items, generator = asyncio.run(run())
    options = generator.options
    assert (options.video_width, options.video_height, options.video_fps) == (320, 256, 25)
    assert (options.audio_sample_rate, options.audio_channels) == (48000, 1)
    video = [x for x in items if isinstance(x, rtc.VideoFrame)]
    audio = [x for x in items if isinstance(x, rtc.AudioFrame)]
    assert all((f.width, f.height, f.type) == (320, 256, rtc.VideoBufferType.RGBA) for f in video)
    assert all((f.sample_rate, f.num_channels, f.samples_per_channel) == (48000, 1, 1920) for f in audio)
    assert len(audio) == 25  # 1 s at 25 fps: the resampler's tail stays within the last frame
    kinds = ["V" if isinstance(x, rtc.VideoFrame) else "A" if isinstance(x, rtc.AudioFrame) else "E" for x in items]
    text = "".join(kinds)
    assert kinds.count("E") == 1 and "AA" not in text and text.count("VA") == 25  # each audio after its picture
    end = kinds.index("E")
    assert end > max(i for i, k in enumerate(kinds) if k == "A")  # after the last speech
    assert kinds[end + 1 :].count("V") >= 10 and "A" not in kinds[end + 1 :]  # idle goes on, silent
    returned = pcm_of(audio).astype(np.float32)
    reference = speech(1.0, 48000).astype(np.float32)
    assert returned.size - reference.size == 0  # 48000 samples: what was pushed, nothing dropped or added
    correlation = float(np.dot(returned, reference) / np.linalg.norm(returned) / np.linalg.norm(reference))
    assert correlation > 0.99  # the same speech (resampled 24 -> 48 kHz), in order
    stats = generator.avatar.stats
    assert stats["turns"] == 1 and stats["speech_frames"] == 25 and stats["dropped_frames"] == 0


def test_clear_buffer_stops_speech_at_once_and_the_next_reply_plays(shipped):
    """Barge-in 5 frames into a 2 s reply (48 kHz, 10 ms frames): AudioSegmentEnd comes next, then only idle
    pictures; the next reply plays in full, with its own end. Audio at the output rate comes back bit-exact."""
    async def run() -> tuple[list, list]:
        generator = FadaVideoGenerator(StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped, output="crop"))
        stream = aiter(generator)
        await push(generator, speech(2.0, 48000), 48000, block_ms=10)
        first = await collect(stream, until=lambda xs: sum(isinstance(x, rtc.AudioFrame) for x in xs) == 5)
        generator.clear_buffer()
        generator.clear_buffer()  # a second one: nothing left to end
        after = await collect(stream, until=lambda xs: sum(isinstance(x, rtc.VideoFrame) for x in xs) == 12)
        await push(generator, speech(0.4, 48000), 48000, block_ms=10)
        second = await collect(stream, until=idle_after_end(1))
        await generator.aclose()
        return first + after, second

    first, second = asyncio.run(run())
    spoken = [x for x in first if isinstance(x, rtc.AudioFrame)]
    assert np.array_equal(pcm_of(spoken), speech(2.0, 48000)[: 5 * 1920])
    cut = max(i for i, x in enumerate(first) if isinstance(x, rtc.AudioFrame)) + 1
    assert isinstance(first[cut], AudioSegmentEnd)  # yielded at once, before any later frame
    rest = first[cut + 1 :]
    assert all(isinstance(x, rtc.VideoFrame) for x in rest) and len(rest) == 12  # no speech after the barge-in
    assert (rest[0].width, rest[0].height) == (64, 64)  # output="crop": the model's frames
    kinds = ["E" if isinstance(x, AudioSegmentEnd) else "A" if isinstance(x, rtc.AudioFrame) else "V" for x in second]
    assert kinds.count("E") == 1 and kinds.count("A") == 10
    assert kinds.index("E") > max(i for i, k in enumerate(kinds) if k == "A")
    assert np.array_equal(pcm_of([x for x in second if isinstance(x, rtc.AudioFrame)]), speech(0.4, 48000))


def test_a_segment_whose_audio_runs_late_ends_once_after_all_of_it(shipped):
    """The agent's audio stops mid-segment long enough for idle pictures to fill the gap (the avatar says
    speaking_finished there): no AudioSegmentEnd until the segment's end came and all its audio played."""
    async def run() -> tuple[list, list]:
        generator = FadaVideoGenerator(StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped))
        stream = aiter(generator)
        pcm = speech(0.64, 48000)
        for i in range(0, 15360, 960):  # the first 0.32 s, the segment left open
            await generator.push_audio(rtc.AudioFrame(pcm[i : i + 960].tobytes(), 48000, 1, 960))

        def gap(items: list) -> bool:  # 6 silent pictures after the speech so far (its last frame waits
            audio = [i for i, x in enumerate(items) if isinstance(x, rtc.AudioFrame)]  # for the rest)
            return len(audio) >= 6 and sum(isinstance(x, rtc.VideoFrame) for x in items[audio[-1] :]) > 6

        first = await collect(stream, until=gap)
        await push(generator, pcm[15360:], 48000, block_ms=20)
        second = await collect(stream, until=idle_after_end(1))
        await generator.aclose()
        return first, second

    first, second = asyncio.run(run())
    assert not any(isinstance(x, AudioSegmentEnd) for x in first)
    audio = [x for x in first + second if isinstance(x, rtc.AudioFrame)]
    assert len(audio) == 16 and np.array_equal(pcm_of(audio), speech(0.64, 48000))
    kinds = ["E" if isinstance(x, AudioSegmentEnd) else "A" if isinstance(x, rtc.AudioFrame) else "V" for x in second]
    assert kinds.count("E") == 1 and kinds.index("E") > max(i for i, k in enumerate(kinds) if k == "A")


def test_the_frames_play_through_livekits_av_synchronizer(shipped):
    """The generator's output forwarded as AvatarRunner forwards it, into the AVSynchronizer, AudioSource and
    VideoSource it builds from AvatarOptions: every frame is accepted, the playback position it would report at
    the AudioSegmentEnd is the reply's length, and the synchronizer plays everything out."""
    async def run() -> tuple[float, int, int]:
        generator = FadaVideoGenerator(StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped))
        options = avatar_options(generator.avatar)
        audio_source = rtc.AudioSource(options.audio_sample_rate, options.audio_channels, queue_size_ms=100)
        video_source = rtc.VideoSource(options.video_width, options.video_height)
        av_sync = rtc.AVSynchronizer(audio_source=audio_source, video_source=video_source,
                                     video_fps=options.video_fps, video_queue_size_ms=100)
        position, finished, pictures, after_end = 0.0, None, 0, 0
        await push(generator, speech(0.4, 48000), 48000, block_ms=20)

        async def forward() -> None:  # AvatarRunner._forward_video, less the room
            nonlocal position, finished, pictures, after_end
            async for frame in generator:
                if isinstance(frame, AudioSegmentEnd):
                    finished, position = position, 0.0
                    continue
                await av_sync.push(frame)
                pictures += isinstance(frame, rtc.VideoFrame)
                after_end += finished is not None and isinstance(frame, rtc.VideoFrame)
                if isinstance(frame, rtc.AudioFrame):
                    position += frame.duration
                if after_end == 5:
                    return

        await asyncio.wait_for(forward(), TIMEOUT)
        await asyncio.wait_for(av_sync.wait_for_playout(), 5)
        await generator.aclose()
        await av_sync.aclose()
        await audio_source.aclose()
        await video_source.aclose()
        return finished, pictures, generator.avatar.stats["speech_frames"]

    finished, pictures, speech_frames = asyncio.run(run())
    assert finished == pytest.approx(0.4)  # 10 frames of 40 ms: the position the agent is told
    assert speech_frames == 10 and pictures >= 10 + 5


def test_bad_use_gives_clear_errors(shipped):
    async def run() -> None:
        generator = FadaVideoGenerator(StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped))
        with pytest.raises(TypeError, match=r"takes an rtc\.AudioFrame or an AudioSegmentEnd, got ndarray"):
            await generator.push_audio(speech(0.1, 48000))
        stream = aiter(generator)
        assert isinstance(await anext(stream), rtc.VideoFrame)  # idle before any speech
        with pytest.raises(RuntimeError, match="already being iterated"):
            await anext(aiter(generator))
        await generator.aclose()
        await generator.aclose()  # twice is fine
        frame = rtc.AudioFrame(speech(0.02, 48000).tobytes(), 48000, 1, 960)
        with pytest.raises(RuntimeError, match=r"push_audio after aclose\(\).*make a new one"):
            await generator.push_audio(frame)
        with pytest.raises(RuntimeError, match=r"clear_buffer after aclose\(\)"):
            generator.clear_buffer()

    asyncio.run(run())
    offline = StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped, realtime=False)
    with pytest.raises(ValueError, match=r"needs StreamingAvatar\(realtime=True\)"):
        FadaVideoGenerator(offline)
    offline.close()
    with pytest.raises(TypeError, match=r"wraps a fada_rt\.api\.StreamingAvatar, got str"):
        FadaVideoGenerator("face.png")  # type: ignore[arg-type]


def test_the_example_worker_prints_its_help_and_makes_a_token(monkeypatch):
    """examples/livekit_worker.py cannot join a room here (no LiveKit server): it imports, prints --help, and
    the token it makes from the API key and secret joins the room as an agent publishing for the agent."""
    script = ROOT / "examples" / "livekit_worker.py"
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--agent-identity" in done.stdout
    key, secret = "devkey", "a-secret-of-at-least-thirty-two-characters"
    monkeypatch.setenv("LIVEKIT_API_KEY", key)
    monkeypatch.setenv("LIVEKIT_API_SECRET", secret)
    worker = runpy.run_path(str(script))
    claims = api.TokenVerifier(key, secret).verify(worker["make_token"]("room-1", "fada-avatar", "agent-1"))
    assert (claims.identity, claims.video.room, claims.video.room_join, claims.kind) == (
        "fada-avatar", "room-1", True, "agent")
    assert claims.attributes == {"lk.publish_on_behalf": "agent-1"}
