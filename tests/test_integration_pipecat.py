"""The Pipecat adapter (fada_rt/integrations/pipecat.py) inside a real Pipecat pipeline, run by a
PipelineWorker and a WorkerRunner (Pipecat 1.14's names for PipelineTask and PipelineRunner): a source
processor plays the TTS (TTSStartedFrame, real speech in 20 ms TTSAudioRawFrames at 24 kHz, TTSStoppedFrame),
a sink processor collects what comes out of the avatar processor, directly or through Pipecat's own output
transport (BaseOutputTransport, writing into lists)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from fada_rt.api import StreamingAvatar
from fada_rt.assets import EXAMPLE_AUDIO, EXAMPLE_IMAGE
from fada_rt.integrations.pipecat import FadaAvatarProcessor
from fada_rt.media import read_audio
from fada_rt.pipeline import AvatarPipeline

TTS_RATE, OUT_RATE, FPS = 24000, 16000, 25
SPF = OUT_RATE // FPS  # output samples per avatar frame
START = 0.3  # seconds into speech.wav where the speech used starts

pytestmark = pytest.mark.slow  # real-time pipelines: seconds each




class Source(FrameProcessor):
    """Passes frames on, and plays a TTS service: an utterance as Pipecat's TTS services push it."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def say(self, pcm: np.ndarray, context_id: str) -> None:
        await self.push_frame(TTSStartedFrame(context_id=context_id))
        step = TTS_RATE // 50  # 20 ms
        for i in range(0, len(pcm), step):
            await self.push_frame(TTSAudioRawFrame(pcm[i : i + step].tobytes(), TTS_RATE, 1, context_id=context_id))
        await self.push_frame(TTSStoppedFrame(context_id=context_id))


class Sink(FrameProcessor):
    """Collects every frame that comes down, in arrival order (direct mode: no queue an interruption flushes)."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    async def wait_for(self, condition: Callable[[list[Frame]], bool], what: str, timeout: float = 30) -> None:
        """A safety net, not a timing assertion: the condition is about the frames that came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self.frames):
            if loop.time() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; got {summary(self.frames)}")
            await asyncio.sleep(0.02)


def summary(frames: list[Frame]) -> str:
    names = [type(f).__name__ for f in frames]
    return ", ".join(f"{n}×{names.count(n)}" for n in dict.fromkeys(names))


class MemoryTransport(BaseOutputTransport):
    """Pipecat's output transport (its queues, chunking, bot-speaking state and live video clock), writing
    the audio and the video it sends into lists instead of a network."""

    def __init__(self, params: TransportParams) -> None:
        super().__init__(params)
        self.audio: list[OutputAudioRawFrame] = []
        self.video: list[OutputImageRawFrame] = []

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self.audio.append(frame)
        return True

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        self.video.append(frame)
        return True


def run(processor: FadaAvatarProcessor, drive: Callable[[Source, Sink, PipelineWorker], Coroutine[Any, Any, None]],
        *, transport: MemoryTransport | None = None) -> list[Frame]:
    """Run source -> processor [-> transport] -> sink until ``drive`` has queued the EndFrame; the frames the
    sink got."""
    source, sink = Source(), Sink()
    stages = [source, processor, *([transport] if transport else []), sink]
    worker = PipelineWorker(Pipeline(stages), enable_rtvi=False, enable_turn_tracking=False, idle_timeout_secs=None)

    async def main() -> None:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)

        async def driver() -> None:
            try:
                await drive(source, sink, worker)
            except BaseException:
                await worker.cancel()
                raise

        await asyncio.wait_for(asyncio.gather(runner.run(), driver()), timeout=55)

    asyncio.run(main())
    return sink.frames


def speech(seconds: float) -> np.ndarray:
    wave = read_audio(EXAMPLE_AUDIO, sample_rate=TTS_RATE)[int(START * TTS_RATE) : int((START + seconds) * TTS_RATE)]
    return (wave * 32767).round().astype(np.int16)


def reference(samples: int) -> np.ndarray:
    """The same speech, read from the (16 kHz) file at the output rate: what the avatar's audio must be."""
    return read_audio(EXAMPLE_AUDIO, sample_rate=OUT_RATE)[int(START * OUT_RATE) :][:samples]


def correlation(out: np.ndarray, ref: np.ndarray, max_lag: int = 160) -> tuple[float, int]:
    """The best normalised correlation of ``out`` with ``ref`` over small lags, and that lag."""
    best = (-1.0, 0)
    n = min(len(out), len(ref)) - 2 * max_lag
    for lag in range(-max_lag, max_lag + 1):
        a = out[max_lag + lag : max_lag + lag + n]
        b = ref[max_lag : max_lag + n]
        best = max(best, (float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)), lag))
    return best


def avatar_frames(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if isinstance(f, (OutputImageRawFrame, OutputAudioRawFrame))]


def as_float(audio: list[OutputAudioRawFrame]) -> np.ndarray:
    return np.concatenate([np.frombuffer(a.audio, np.int16) for a in audio]).astype(np.float32) / 32768


def assert_closed(processor: FadaAvatarProcessor) -> None:
    with pytest.raises(RuntimeError, match=r"after close\(\)"):
        processor.avatar.push_audio(np.zeros(160, np.float32), OUT_RATE)


def test_speech_comes_out_as_synced_images_and_audio_then_idle(shipped: AvatarPipeline):
    """1.5 s of speech: one image and one 40 ms audio chunk per avatar frame, image then its audio; the speech
    in order (correlation with the file > 0.9 at lag ~0), as many samples as pushed (to one frame), between the
    TTSStartedFrame and the re-timed TTSStoppedFrame; idle frames (silence) before and after it; EndFrame
    lets it play out and closes the avatar."""
    processor = FadaAvatarProcessor(EXAMPLE_IMAGE, pipeline=shipped, sample_rate=OUT_RATE, max_side=128)
    assert processor.size == (128, 128) and processor.fps == FPS and processor.sample_rate == OUT_RATE
    pcm = speech(1.5)
    pushed = len(pcm) * OUT_RATE // TTS_RATE  # 24000 samples at the output rate: 37.5 frames

    def idle_after_speech(frames: list[Frame]) -> int:
        audio = [f for f in frames if isinstance(f, OutputAudioRawFrame)]
        last = max((i for i, a in enumerate(audio) if isinstance(a, TTSAudioRawFrame)), default=None)
        return 0 if last is None else len(audio) - 1 - last

    async def drive(source: Source, sink: Sink, worker: PipelineWorker) -> None:
        await sink.wait_for(lambda fs: sum(isinstance(f, OutputImageRawFrame) for f in fs) >= 5, "idle frames")
        await source.say(pcm, "reply-1")
        await sink.wait_for(lambda fs: idle_after_speech(fs) >= 15, "15 idle frames after the speech")
        await worker.queue_frame(EndFrame())

    frames = run(processor, drive)
    out = avatar_frames(frames)
    images = [f for f in out if isinstance(f, OutputImageRawFrame)]
    audio = [f for f in out if isinstance(f, OutputAudioRawFrame)]
    assert len(images) == len(audio) > 60
    assert all(isinstance(f, OutputImageRawFrame) for f in out[0::2])  # image, its audio, image, its audio, ...
    assert all(isinstance(f, OutputAudioRawFrame) for f in out[1::2])
    assert {(f.size, f.format, len(f.image)) for f in images} == {((128, 128), "RGB", 128 * 128 * 3)}
    assert {(a.sample_rate, a.num_channels, a.num_frames) for a in audio} == {(OUT_RATE, 1, SPF)}

    spoken = [i for i, a in enumerate(audio) if isinstance(a, TTSAudioRawFrame)]
    assert spoken == list(range(spoken[0], spoken[-1] + 1))  # one run of speech, no idle frame inside it
    assert len(spoken) == 38 and abs(len(spoken) * SPF - pushed) <= SPF
    assert {audio[i].context_id for i in spoken} == {"reply-1"}
    idle = [a for a in audio if not isinstance(a, TTSAudioRawFrame)]
    assert spoken[0] >= 5 and len(audio) - 1 - spoken[-1] >= 15  # idle before and after the speech
    assert not any(np.frombuffer(a.audio, np.int16).any() for a in idle)  # idle audio is silence

    said = as_float([audio[i] for i in spoken])
    corr, lag = correlation(said, reference(len(said)))
    assert corr > 0.9 and abs(lag) <= 40, (corr, lag)

    # TTSStartedFrame before the speech, TTSStoppedFrame right after its last frame, EndFrame last
    position = {id(f): i for i, f in enumerate(frames)}
    (started,) = [f for f in frames if isinstance(f, TTSStartedFrame)]
    (stopped,) = [f for f in frames if isinstance(f, TTSStoppedFrame)]
    first, last = audio[spoken[0]], audio[spoken[-1]]
    assert position[id(started)] < position[id(first)] < position[id(last)] < position[id(stopped)]
    assert position[id(stopped)] < position[id(audio[spoken[-1] + 1])]  # before the next frame's audio
    assert isinstance(frames[-1], EndFrame)
    assert_closed(processor)


def test_an_interruption_stops_the_speech_within_a_chunk(shipped: AvatarPipeline):
    """An InterruptionFrame mid-speech: at most one chunk (8 frames) of speech after it, then idle frames;
    the held TTSStoppedFrame is dropped (as the output transport drops its queued one), the interruption
    passes on, and what was said is the start of the speech, in order."""
    processor = FadaAvatarProcessor(EXAMPLE_IMAGE, pipeline=shipped, sample_rate=OUT_RATE, output="crop")
    assert processor.size == (64, 64)

    def spoken(frames: list[Frame]) -> int:
        return sum(isinstance(f, TTSAudioRawFrame) for f in frames)

    def after_interruption(frames: list[Frame]) -> list[Frame]:
        marks = [i for i, f in enumerate(frames) if isinstance(f, InterruptionFrame)]
        return frames[marks[0] + 1 :] if marks else []

    async def drive(source: Source, sink: Sink, worker: PipelineWorker) -> None:
        await sink.wait_for(lambda fs: any(isinstance(f, OutputImageRawFrame) for f in fs), "a first frame")
        await source.say(speech(2.0), "reply-1")
        await sink.wait_for(lambda fs: spoken(fs) >= 10, "10 frames of speech")
        await source.push_frame(InterruptionFrame())
        await sink.wait_for(lambda fs: sum(isinstance(f, OutputImageRawFrame) for f in after_interruption(fs)) >= 20,
                            "20 frames after the interruption")
        await worker.queue_frame(EndFrame())

    frames = run(processor, drive)
    later = after_interruption(frames)
    assert 10 <= spoken(frames) < 50  # 2 s are 50 frames: the speech was cut
    assert spoken(later) <= 8
    audio_later = [f for f in later if isinstance(f, OutputAudioRawFrame)]
    assert all(not isinstance(a, TTSAudioRawFrame) for a in audio_later[-12:])  # idle frames go on
    assert not any(isinstance(f, TTSStoppedFrame) for f in frames)
    assert {(f.size, len(f.image)) for f in frames if isinstance(f, OutputImageRawFrame)} == {((64, 64), 64 * 64 * 3)}

    said = as_float([f for f in frames if isinstance(f, TTSAudioRawFrame)])
    corr, lag = correlation(said, reference(len(said)))
    assert corr > 0.9 and abs(lag) <= 40, (corr, lag)
    assert isinstance(frames[-1], EndFrame)
    assert_closed(processor)


def test_the_output_transport_says_the_bot_speaks_while_the_avatar_does(shipped: AvatarPipeline):
    """Through Pipecat's output transport (live video at the avatar's fps and size): one
    BotStartedSpeakingFrame before the speech, one BotStoppedSpeakingFrame after its last frame (the re-timed
    TTSStoppedFrame; the idle audio does not keep the bot speaking), all the speech written, images shown."""
    processor = FadaAvatarProcessor(EXAMPLE_IMAGE, pipeline=shipped, sample_rate=OUT_RATE, output="crop")
    width, height = processor.size
    transport = MemoryTransport(TransportParams(
        audio_out_enabled=True, audio_out_sample_rate=OUT_RATE, audio_out_end_silence_secs=0,
        video_out_enabled=True, video_out_is_live=True, video_out_framerate=processor.fps,
        video_out_width=width, video_out_height=height))

    def idle_after_stop(frames: list[Frame]) -> int:
        stops = [i for i, f in enumerate(frames) if isinstance(f, BotStoppedSpeakingFrame)]
        return sum(type(f) is OutputAudioRawFrame for f in frames[stops[0]:]) if stops else 0

    async def drive(source: Source, sink: Sink, worker: PipelineWorker) -> None:
        await sink.wait_for(lambda fs: any(isinstance(f, OutputAudioRawFrame) for f in fs), "a first frame")
        await source.say(speech(1.0), "reply-1")
        await sink.wait_for(lambda fs: idle_after_stop(fs) >= 10, "the bot to stop speaking, then idle frames")
        await worker.queue_frame(EndFrame())

    frames = run(processor, drive, transport=transport)
    position = {id(f): i for i, f in enumerate(frames)}
    spoken = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
    (started,) = [f for f in frames if isinstance(f, BotStartedSpeakingFrame)]
    (stopped,) = [f for f in frames if isinstance(f, BotStoppedSpeakingFrame)]
    assert position[id(started)] < position[id(spoken[0])] and position[id(spoken[-1])] < position[id(stopped)]
    assert len(spoken) == 25  # 1 s at 25 fps, each 40 ms chunk written as it is
    written = [a for a in transport.audio if isinstance(a, TTSAudioRawFrame)]
    assert len(written) == 25 and np.array_equal(as_float(written), as_float(spoken))
    assert len(transport.video) > 25 and {(v.size, v.format) for v in transport.video} == {((64, 64), "RGB")}
    assert_closed(processor)


def test_cancel_closes_the_avatar_at_once(shipped: AvatarPipeline):
    processor = FadaAvatarProcessor(EXAMPLE_IMAGE, pipeline=shipped, sample_rate=OUT_RATE, output="crop")

    async def drive(source: Source, sink: Sink, worker: PipelineWorker) -> None:
        await sink.wait_for(lambda fs: sum(isinstance(f, OutputImageRawFrame) for f in fs) >= 3, "frames")
        await source.say(speech(1.0), "reply-1")
        await worker.cancel()

    run(processor, drive)
    assert_closed(processor)


def test_wrong_arguments_say_what_to_do(shipped: AvatarPipeline):
    with pytest.raises(ValueError, match="give the portrait to animate"):
        FadaAvatarProcessor()
    with pytest.raises(ValueError, match="pass sample_rate"):
        FadaAvatarProcessor(EXAMPLE_IMAGE, pipeline=shipped, realtime=False)
    offline = StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped, realtime=False)
    try:
        with pytest.raises(ValueError, match="realtime=True"):
            FadaAvatarProcessor(avatar=offline)
    finally:
        offline.close()
    live = StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped, audio_rate=48000)
    try:
        with pytest.raises(ValueError, match="audio_rate=16000"):
            FadaAvatarProcessor(avatar=live, sample_rate=16000)
        assert FadaAvatarProcessor(avatar=live).sample_rate == 48000
    finally:
        live.close()
