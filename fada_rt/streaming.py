"""Streaming: the chunk loop shared by offline and live runs (docs/design.md §4).

The audio arrives through :class:`~fada_rt.audio_stream.AudioFeatureStream` (the windowed features of whole
frames as soon as they are exact).

:class:`StreamingSession` is the chunk loop: push audio, ``step()`` generates the next chunk when
its features are ready, frame ``k`` gets pts ``k / fps`` on the audio sample clock. With
``drop_late`` (live), when a newer chunk is already complete the older one is skipped (its frames
counted as dropped) instead of letting latency grow: frames are dropped, never drifted. A rolling sampler
(``--sampler stream``, :mod:`fada_rt.sampling.rolling`) is advanced the same way, one denoiser call at a time, its
frames joining as soon as their features are ready and leaving a few calls later.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fada_rt.audio_stream import AudioFeatureStream
from fada_rt.pipeline import Avatar, AvatarPipeline, ChunkState

# ---- the chunk loop ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChunkOutput:
    frames: np.ndarray  # (n, H, W, 3) uint8
    first_frame: int  # global index of frames[0]; pts = index / fps
    dropped_before: int  # frames skipped just before this chunk (drop_late)
    fps: int
    latency: np.ndarray  # (n,) seconds from the arrival of each frame's audio centre to emission

    @property
    def pts(self) -> np.ndarray:
        return (self.first_frame + np.arange(len(self.frames))) / self.fps


@dataclass(frozen=True)
class _Launched:
    frames: Callable[[], np.ndarray]  # (n, H, W, 3) uint8 once decoded
    first: int
    dropped: int
    start: float


@dataclass
class SessionStats:
    frames: int = 0
    dropped_frames: int = 0
    chunks: int = 0
    audio_seconds: float = 0.0
    fps: float = 0.0  # generated frames per wall second (recent chunks)
    rtf: float = 0.0  # real-time factor: compute seconds per second of generated video (lower is better)
    latency_ms_last: float = 0.0
    latency_ms_mean: float = 0.0
    latency_ms_max: float = 0.0
    max_buffered_samples: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


class StreamingSession:
    """Push mono audio at the model's sample rate, pull chunks of frames with pts on the audio sample clock."""

    def __init__(self, pipeline: AvatarPipeline, avatar: Avatar, *, generator: torch.Generator,
                 drop_late: bool = False, clock: Callable[[], float] = time.monotonic,
                 lookahead: int | None = None, overlap_decode: bool = False) -> None:
        """``lookahead``: frames of audio a frame waits for after its own (None: the sampler's,
        ``SamplerSpec.lookahead``; see :class:`AudioFeatureStream`). ``overlap_decode``: when the next chunk's audio
        is there too, its steps start before this chunk's frames are decoded, the decode running beside them
        (:meth:`AvatarPipeline.launch`); a chunk sampler's throughput, for offline runs and backlogs."""
        self.pipeline = pipeline
        self.avatar = avatar
        self.generator = generator
        self.drop_late = drop_late
        self.clock = clock
        self.overlap_decode = overlap_decode
        self._pending: _Launched | None = None  # overlap_decode: a chunk made, its frames still decoding
        self._last_out = -float("inf")
        audio = pipeline.config.audio
        self.fps = audio.fps
        self.spf = audio.samples_per_frame
        self.sample_rate = audio.sample_rate
        self.features = AudioFeatureStream(pipeline.backend.audio_features, audio,
                                           lookahead=lookahead if lookahead is not None else pipeline.sampler.lookahead)
        self.state: ChunkState = pipeline.initial_state(avatar)
        self.stats = SessionStats()
        self._arrivals: deque[tuple[int, float]] = deque()  # (end sample of a pushed block, arrival time)
        self._recent: deque[tuple[float, int]] = deque(maxlen=16)  # (emit time, frames) for the fps estimate
        self._latency_sum = 0.0
        self._compute_sum = 0.0  # seconds spent making the generated chunks (features + generate)
        self._lock = threading.Lock()  # guards features, arrivals and stats

    @property
    def chunk_frames(self) -> int:
        """Frames one step waits for: a chunk, or for a rolling sampler the frames joining per call."""
        return self.pipeline.step_frames

    @property
    def done(self) -> bool:
        with self._lock:
            return self.features.done and self.state.in_flight == 0 and self._pending is None

    @property
    def latency_floor(self) -> float:
        """Seconds of audio a frame waits for before it can be generated (chunk, or one frame for a rolling sampler,
        + look-ahead)."""
        return (self.chunk_frames * self.spf + self.features.lookahead) / self.sample_rate

    def pending_seconds(self) -> float:
        """Audio pushed but not yet generated (or dropped), in seconds."""
        with self._lock:
            return (self.features.total - self.features.next_frame * self.spf) / self.sample_rate

    def stats_dict(self) -> dict[str, float | int]:
        """A consistent snapshot of the stats (thread-safe)."""
        with self._lock:
            return {**self.stats.to_dict(), "latency_floor_ms": round(self.latency_floor * 1000, 1)}

    def push(self, samples: np.ndarray, *, arrival: float | None = None) -> None:
        """Append mono samples at the model's sample rate (thread-safe: a capture thread may push while another
        steps)."""
        with self._lock:
            self.features.push(samples)
            self._arrivals.append((self.features.total, self.clock() if arrival is None else arrival))
            self.stats.audio_seconds = self.features.total / self.sample_rate
            self.stats.max_buffered_samples = self.features.max_buffered

    def finish(self) -> None:
        with self._lock:
            self.features.finish()

    def truncate(self) -> None:
        """Drop the audio pushed for frames not generated yet (see :meth:`AudioFeatureStream.truncate`) and a rolling
        sampler's frames in flight (their indices are skipped, as a chunk being made when it is truncated)."""
        with self._lock:
            self.features.truncate()
            self._prune_arrivals(self.features.total)
            if self.state.in_flight:
                self.state = dataclasses.replace(self.state, flight=None, stage=None, flight_windows=None,
                                                 next_frame=self.features.next_frame)

    def set_avatar(self, avatar: Avatar) -> None:
        """Switch portraits between chunks (call from the stepping thread); motion restarts from it. A rolling
        sampler's frames in flight finish under the new portrait."""
        self.avatar = avatar
        st = self.state
        self.state = dataclasses.replace(self.pipeline.initial_state(avatar), next_frame=st.next_frame,
                                         chunks=st.chunks, flight=st.flight, stage=st.stage,
                                         flight_windows=st.flight_windows)

    def chunk_ready(self) -> bool:
        with self._lock:
            ready = self.features.ready
            if self.pipeline.rolling:
                return ready > 0 or self.state.in_flight > 0
            return self._pending is not None or ready >= self.chunk_frames or (self.features.finished and ready > 0)

    def step(self) -> ChunkOutput | None:
        """Generate the next chunk if its audio is complete (else None); pushes are not blocked meanwhile. A rolling
        sampler calls the denoiser until frames come out (:meth:`_step_rolling`)."""
        if self.pipeline.rolling:
            return self._step_rolling()
        made = self._pending or self._launch()
        if made is None:
            return None
        self._pending = self._launch() if self.overlap_decode else None  # its steps run while `made` decodes
        return self._output(made.frames(), made.first, made.dropped, made.start)

    def _launch(self) -> _Launched | None:
        """The next chunk made, its frames decoded (in the background with ``overlap_decode``); None when its audio
        is not complete."""
        f = self.chunk_frames
        with self._lock:
            ready = self.features.ready
            if not (ready >= f or (self.features.finished and ready > 0)):
                return None
            dropped = 0
            while self.drop_late and self.features.ready >= 2 * f:  # a newer chunk is complete: skip this one
                self.features.skip(f)
                dropped += f
            first = self.features.next_frame
            n = min(f, self.features.ready)
            start = self.clock()
            windows = self.features.pop(n)  # (1, n, 2w+1, L, D)
        state = dataclasses.replace(self.state, next_frame=first)
        frames, self.state = self.pipeline.launch(self.avatar, windows, state, generator=self.generator,
                                                  background=self.overlap_decode)
        return _Launched(frames, first, dropped, start)

    def _step_rolling(self) -> ChunkOutput | None:
        """Rolling sampler: call after call, the next ready frames (up to ``step_frames``) join and every frame in
        flight takes a step, until frames come out; None when nothing is ready or in flight. Frames in flight are
        never held back for audio: with compute to spare, a frame leaves ``num_steps`` calls after its audio is
        ready. ``drop_late`` skips a backlog of two windows, only while nothing is in flight."""
        group, window = self.chunk_frames, self.chunk_frames * self.pipeline.sampler.plan.num_steps
        dropped, start = 0, None
        while True:
            with self._lock:
                ready = self.features.ready
                if ready == 0 and self.state.in_flight == 0:
                    return None
                if start is None:
                    start = self.clock()
                while self.drop_late and self.state.in_flight == 0 and self.features.ready >= 2 * window:
                    self.features.skip(window)
                    dropped += window
                if self.state.in_flight == 0:
                    self.state = dataclasses.replace(self.state, next_frame=self.features.next_frame)
                first = self.state.next_frame
                n = min(group, self.features.ready)
                windows = self.features.pop(n) if n else None  # (1, n, 2w+1, L, D)
            frames, self.state = self.pipeline.advance(self.avatar, self.state, windows, generator=self.generator)
            if len(frames):
                return self._output(frames, first, dropped, start)

    def _output(self, frames: np.ndarray, first: int, dropped: int, start: float) -> ChunkOutput:
        """The frames made since ``start``, from frame ``first`` on: their latency from the arrival of each one's
        audio centre, the stats updated."""
        now = self.clock()
        with self._lock:
            centres = (first + np.arange(len(frames))) * self.spf + self.spf // 2
            latency = np.array([now - self._arrival_of(int(c)) for c in centres])
            self._prune_arrivals(first * self.spf)
            self._update_stats(len(frames), dropped, latency, now, compute=now - max(start, self._last_out))
            self._last_out = now  # overlapped chunks: the time between outputs, counted once
        return ChunkOutput(frames=frames, first_frame=first, dropped_before=dropped, fps=self.fps, latency=latency)

    def _arrival_of(self, sample: int) -> float:
        ends = [e for e, _ in self._arrivals]
        i = bisect.bisect_right(ends, sample)
        return self._arrivals[min(i, len(self._arrivals) - 1)][1]

    def _prune_arrivals(self, before_sample: int) -> None:
        while len(self._arrivals) > 1 and self._arrivals[0][0] <= before_sample:
            self._arrivals.popleft()

    def _update_stats(self, n: int, dropped: int, latency: np.ndarray, now: float, *, compute: float) -> None:
        s = self.stats
        s.frames += n
        self._compute_sum += compute
        s.rtf = self._compute_sum / (s.frames / self.fps)
        s.dropped_frames += dropped
        s.chunks += 1
        self._latency_sum += float(latency.sum())
        s.latency_ms_last = float(latency[0]) * 1000
        s.latency_ms_mean = self._latency_sum / s.frames * 1000
        s.latency_ms_max = max(s.latency_ms_max, float(latency.max()) * 1000)
        self._recent.append((now, n))
        if len(self._recent) > 1:
            span = self._recent[-1][0] - self._recent[0][0]
            s.fps = sum(k for _, k in list(self._recent)[1:]) / span if span > 0 else 0.0
        s.max_buffered_samples = self.features.max_buffered
