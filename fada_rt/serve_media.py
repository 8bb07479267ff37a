"""The media side of ``python -m fada_rt.serve``: one loaded model shared by every browser session, one avatar's
frames as aiortc tracks, and the :class:`Session` that feeds a browser's audio into its avatar.

:class:`SharedPipeline` is the one :class:`~fada_rt.pipeline.AvatarPipeline` all sessions use. The model is not
safe to call from two threads at once (the prepared-avatar cache is a plain dict; the CUDA-graph and TensorRT
backends replay static buffers; dlib's face detector is one shared object), and every
:class:`~fada_rt.api.StreamingAvatar` runs its own worker thread. So every call into the model (``generate``,
``prepare``, ``portrait`` and each backend method, e.g. the audio features a session computes as speech comes) takes
one re-entrant lock: chunks of different sessions are made one after another, never interleaved. Two sessions then
share the model's throughput (each gets about half of the frames per second one session gets).

:class:`AvatarOutput` pulls an avatar's frames in a thread of its own (``next_frame`` waits for each frame's time on
the wall clock) and hands them to two aiortc tracks on the event loop: :class:`AvatarVideoTrack` (RGB frames, RTP clock
90 kHz) and :class:`AvatarAudioTrack` (the frame's audio at 48 kHz, s16 with the mono sound on both channels, since
aiortc's encoder would upmix mono at -3 dB; cut into 20 ms frames, since aiortc's Opus encoder gives every packet of
one frame the same RTP timestamp). Both take their timestamps from :attr:`~fada_rt.api.AvatarFrame.pts` (video
``round(pts * 90000)``, audio ``round(pts * 48000)`` for the frame's first sample), and are sent when the frame is
due, so the browser's lip sync lines them up. A track whose sender stalls keeps its newest frames only (the oldest
are dropped and counted in ``dropped``).

:class:`Session` pushes each decoded 20 ms of the browser's audio (48 kHz stereo s16, as aiortc decodes Opus) into
the avatar as it comes, and ends when the track does or when nothing came for 10 s.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import threading
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from fada_rt.api import AvatarFrame, StreamingAvatar
from fada_rt.pipeline import AvatarPipeline

VIDEO_CLOCK = 90000  # RTP clock of video
AUDIO_RATE = 48000  # what WebRTC's Opus runs at; the avatar's audio_rate
PACKET_SAMPLES = 960  # 20 ms: one Opus packet
QUEUE_FRAMES = 8  # frames a track may hold for a slow sender before dropping the oldest
STATS_PERIOD = 1.0  # seconds between stats messages on the data channel
AUDIO_TIMEOUT = 10.0  # seconds without audio from the browser that end a session

log = logging.getLogger("fada_rt.serve")


class _Serialized:
    """A backend whose every method runs under ``lock`` (attributes pass through)."""

    def __init__(self, backend: Any, lock: threading.RLock) -> None:
        self._backend, self._lock = backend, lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        if not callable(value) or isinstance(value, type):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


class SharedPipeline(AvatarPipeline):
    """``pipeline``'s model, shared by sessions: every model call takes :attr:`lock` (see the module docstring)."""

    def __init__(self, pipeline: AvatarPipeline) -> None:  # no super().__init__: this shares the loaded one's state
        self.__dict__.update(vars(pipeline))
        self.lock = threading.RLock()
        self.backend = _Serialized(pipeline.backend, self.lock)  # type: ignore[assignment]
        self.inner = pipeline

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().generate(*args, **kwargs)

    def advance(self, *args: Any, **kwargs: Any) -> Any:  # a rolling sampler's call, as a chunk
        with self.lock:
            return super().advance(*args, **kwargs)

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().prepare(*args, **kwargs)

    def portrait(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().portrait(*args, **kwargs)


def pcm_of(frame: av.AudioFrame) -> np.ndarray:
    """A decoded aiortc audio frame as ``(samples, channels)`` int16/float, what ``push_audio`` takes."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:  # (channels, samples)
        return data.T
    return data.reshape(-1, channels)  # packed: (1, samples * channels)


def video_frame(frame: AvatarFrame) -> av.VideoFrame:
    """The avatar's RGB picture as a video frame stamped with its pts (even size: the encoders need 4:2:0)."""
    image = frame.image
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
    out.pts = round(frame.pts * VIDEO_CLOCK)
    out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    return out


class _Packetizer:
    """The frames' audio, cut into 20 ms s16 mono frames whose pts count samples from the avatar's pts."""

    def __init__(self) -> None:
        self._carry = np.zeros(0, np.float32)
        self._start = 0  # pts (samples) of the carry's first sample

    def push(self, frame: AvatarFrame) -> list[av.AudioFrame]:
        begin = round(frame.pts * AUDIO_RATE)
        if begin != self._start + self._carry.size:  # the first frame (or a gap): restart at the frame's pts
            self._carry, self._start = np.zeros(0, np.float32), begin
        self._carry = np.concatenate([self._carry, frame.audio.astype(np.float32)])
        out = []
        while self._carry.size >= PACKET_SAMPLES:
            chunk, self._carry = self._carry[:PACKET_SAMPLES], self._carry[PACKET_SAMPLES:]
            pcm = (np.clip(chunk, -1.0, 1.0) * 32767.0).round().astype(np.int16)
            stereo = np.repeat(pcm, 2)[None]  # packed L R L R: aiortc's encoder would upmix mono at -3 dB
            packet = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
            packet.sample_rate = AUDIO_RATE
            packet.pts = self._start
            packet.time_base = fractions.Fraction(1, AUDIO_RATE)
            out.append(packet)
            self._start += PACKET_SAMPLES
        return out


class _QueuedTrack(MediaStreamTrack):
    """A track fed from the event loop; ``recv`` waits for the next item and ends with the avatar."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.dropped = 0
        self.sent = 0

    def offer(self, item: Any, limit: int) -> None:
        """Queue ``item`` (None: the end); past ``limit`` queued, the oldest goes (a stalled sender)."""
        while item is not None and self.queue.qsize() >= limit:
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self.queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        self.sent += 1
        return item


class AvatarVideoTrack(_QueuedTrack):
    def __init__(self) -> None:
        super().__init__("video")


class AvatarAudioTrack(_QueuedTrack):
    def __init__(self) -> None:
        super().__init__("audio")


class AvatarOutput:
    """An avatar's frames on two tracks (see the module docstring)."""

    def __init__(self, avatar: StreamingAvatar, loop: asyncio.AbstractEventLoop) -> None:
        if avatar.audio_rate != AUDIO_RATE:
            raise ValueError(f"the avatar's audio_rate must be {AUDIO_RATE} Hz for WebRTC, got {avatar.audio_rate}")
        self.avatar, self.loop = avatar, loop
        self.video, self.audio = AvatarVideoTrack(), AvatarAudioTrack()
        self.frames = 0
        self.error: BaseException | None = None
        self.ended = asyncio.Event()  # set once the avatar's stream is over (closed, or its worker failed)
        self._packets = _Packetizer()
        self._thread = threading.Thread(target=self._pump, name="fada-serve-frames", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _pump(self) -> None:
        try:
            while (frame := self.avatar.next_frame()) is not None:
                picture, sound = video_frame(frame), self._packets.push(frame)  # converted off the event loop
                self.loop.call_soon_threadsafe(self._deliver, picture, sound)
        except RuntimeError as err:  # the avatar's worker failed: the session ends, the error is logged
            self.error = err
        finally:
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._end)

    def _deliver(self, picture: av.VideoFrame, sound: list[av.AudioFrame]) -> None:
        self.frames += 1
        self.video.offer(picture, QUEUE_FRAMES)
        for packet in sound:
            self.audio.offer(packet, QUEUE_FRAMES * 2)

    def _end(self) -> None:
        self.video.offer(None, 0)
        self.audio.offer(None, 0)
        self.ended.set()


class Session:
    """One browser's peer connection, its avatar and the avatar's output: the browser's audio goes in, the stats go
    out on the page's data channel, and what the page reports back is kept in :attr:`client`."""

    def __init__(self, number: int, pc: Any, avatar: StreamingAvatar, output: AvatarOutput, *,
                 slot: object = None) -> None:
        self.id, self.pc, self.avatar, self.output = number, pc, avatar, output
        self.slot = slot  # the server's --max-sessions place this session holds
        self.channel: Any = None
        self.client: dict[str, Any] = {}  # what the page reported (latencyMs, ...)
        self.closed = False
        self.closing: asyncio.Future[None] | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    def describe(self) -> dict[str, Any]:
        stats = self.avatar.stats
        return {"session": self.id, "state": self.pc.connectionState, "frames_sent": self.output.frames,
                "dropped": {"video": self.output.video.dropped, "audio": self.output.audio.dropped},
                "avatar": {k: stats[k] for k in ("fps", "rtf", "latency_ms_last", "latency_ms_mean",
                                                 "speech_frames", "idle_frames", "dropped_frames", "late_frames")},
                "client": self.client}

    async def receive(self, track: Any) -> str:
        """Push the browser's audio into the avatar until the track ends; the reason it ended."""
        try:
            while not self.closed:
                frame = await asyncio.wait_for(track.recv(), AUDIO_TIMEOUT)
                if not self.closed:
                    self.avatar.push_audio(pcm_of(frame), frame.sample_rate)
        except MediaStreamError:
            return "the browser's audio track ended"
        except asyncio.TimeoutError:  # a page sends silence while it is open: the tab or the network went away
            return f"no audio from the browser for {AUDIO_TIMEOUT:.0f} s"
        except (ValueError, RuntimeError) as err:  # audio push_audio cannot take, or the avatar closed meanwhile
            return f"the browser's audio could not be used: {err}"
        return "closed"

    async def report(self) -> None:
        """The avatar's stats on the data channel, once a second."""
        while not self.closed:
            await asyncio.sleep(STATS_PERIOD)
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(json.dumps(self.describe()))

    def on_message(self, message: Any) -> None:
        try:
            data = json.loads(message)
        except (TypeError, json.JSONDecodeError):
            log.warning("session %d: ignored a data-channel message that is not JSON: %.80r", self.id, message)
            return
        if isinstance(data, dict):
            self.client.update(data)
            if isinstance(data.get("latencyMs"), (int, float)):
                log.info("session %d: glass-to-glass %.0f ms (measured by the page)", self.id, data["latencyMs"])
