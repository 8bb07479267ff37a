"""Embedding API for video calls: push speech as it comes, get frames paced at the model's fps, each with
the audio that plays with it (docs/calls.md).

::

    avatar = StreamingAvatar("photo.jpg")          # loads the model, finds the face, starts idling
    avatar.push_audio(pcm, 24000)                  # any rate, any block size, as fast as the TTS makes it
    avatar.end_turn()                              # the reply is complete: its tail is flushed, the stream goes on
    for frame in avatar.frames():                  # paced at 25 fps: idle when nothing is said
        send(frame.image, frame.audio, frame.pts)  # (H, W, 3) uint8, (audio_rate / fps,) float32, seconds
        for event in frame.events: ...             # speaking_started / speaking_finished / interrupted
    avatar.interrupt()                             # barge-in (any thread): queued speech is dropped
    avatar.close()

Generation runs in one worker thread per avatar; pushes and the other calls may come from any thread.
Nothing pushed is dropped unless ``max_latency`` asks for it. ``realtime=False`` is the offline mode:
frames come as fast as they are made, with no idle frames between turns, and ``end_audio()`` ends the
iteration after the last one.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fada_rt.audio_in import check_pcm
from fada_rt.backends.options import LoadOptions, follow_torch_threads
from fada_rt.emission import AvatarEvent, OutputClock, TurnEvents
from fada_rt.face import MAX_SIDE, CropMode, OutputMode, Portrait
from fada_rt.pipeline import Avatar, AvatarPipeline
from fada_rt.streaming import StreamingSession
from fada_rt.turns import Slot, SpeechQueue

DEFAULT_AUDIO_RATE = 48000  # WebRTC's rate; any whole multiple of the fps works


@dataclass(frozen=True, eq=False)
class AvatarFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB: the picture with the face pasted back, or the crop
    audio: np.ndarray  # (audio_rate / fps,) float32 mono: what plays with this frame (silence when idle)
    pts: float  # index / fps, seconds on the output clock (the audio and the video share it)
    index: int
    speaking: bool
    turn: int | None = None  # the turn a speech frame belongs to (push_audio's return value); None when idle
    events: tuple[AvatarEvent, ...] = ()
    latency: float | None = None  # speech frames: seconds from the capture of its audio to this frame's emission
    captured_at: float | None = None  # speech frames: when its audio was captured (push_audio's, on ``clock``)


def _ends_speech(frame: AvatarFrame) -> bool:
    return any(e.kind in ("speaking_finished", "interrupted") for e in frame.events)


@dataclass(frozen=True, eq=False)
class _Made:
    crop: np.ndarray  # (S, S, 3) uint8
    slot: Slot
    portrait: Portrait


class StreamingAvatar:
    def __init__(
        self,
        image: str | Path | np.ndarray | Portrait,
        options: LoadOptions | None = None,
        *,
        output: OutputMode = "full",
        crop: CropMode = "face",
        face_index: int | None = None,
        max_side: int | None = MAX_SIDE,
        audio_rate: int = DEFAULT_AUDIO_RATE,
        realtime: bool = True,
        max_latency: float | None = None,
        sampler: str = "fast",
        cfg_audio: float | None = None,
        cfg_ref: float | None = None,
        seed: int = 0,
        pipeline: AvatarPipeline | None = None,
        clock: Callable[[], float] = time.monotonic,
        **load: Any,
    ) -> None:
        """Load the model (or reuse ``pipeline``), prepare the portrait and start the worker.

        The model is ``options`` (:class:`~fada_rt.backends.LoadOptions`), or the ``LoadOptions`` of the ``load``
        keywords (``checkpoint=``, ``device=``, ``threads=``, ...), or the shipped tiny checkpoint of ``sampler``. On
        the CPU without ``threads``, torch gets :func:`~fada_rt.backends.options.default_threads` (process-wide).
        ``output``, ``crop``, ``face_index``, ``max_side``: the portrait (docs/portraits.md). ``audio_rate``: the
        rate of :attr:`AvatarFrame.audio`. ``realtime``: paced frames and idle between turns (else offline).
        ``max_latency`` (seconds, realtime only): when more speech than this waits to be made, the oldest is
        skipped unmade (a live source on a model slower than real time; None: nothing is ever dropped).
        """
        if pipeline is not None and (options is not None or load):
            raise ValueError("pass either a pipeline or the options to load one, not both")
        if options is not None and load:
            raise ValueError(f"pass either LoadOptions or their keywords ({', '.join(load)}), not both")
        if max_latency is not None and (not realtime or max_latency <= 0):
            raise ValueError("max_latency is a positive number of seconds, and only for realtime=True")
        if pipeline is None:
            options = (options if options is not None else LoadOptions(**load)).for_a_call()  # process-wide threads
            pipeline = AvatarPipeline.load(options, sampler=sampler, cfg_audio=cfg_audio, cfg_ref=cfg_ref)
        self.pipeline, self.output, self.realtime, self.max_latency = pipeline, output, realtime, max_latency
        self.clock = clock
        audio = pipeline.config.audio
        self.fps, self.audio_rate = audio.fps, audio_rate
        self._speech = SpeechQueue(model_rate=audio.sample_rate, out_rate=audio_rate, fps=audio.fps)
        self._portrait_options = {"crop": crop, "face_index": face_index, "max_side": max_side}
        self.portrait = self._load_portrait(image)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self._session = StreamingSession(pipeline, pipeline.prepare(self.portrait), generator=generator, clock=clock)
        self._lookahead = math.ceil(self._session.features.lookahead / audio.samples_per_frame)
        self._cond = threading.Condition()
        self._decided: deque[Slot] = deque()  # frames whose audio is in the session, not generated yet
        self._out: deque[_Made] = deque()  # generated, waiting to be emitted
        self._clock_out, self._turns = OutputClock(audio.fps, clock), TurnEvents(audio.fps)
        self._switch: tuple[Portrait, Avatar] | None = None
        self._epoch = self._seen_epoch = 0
        self._closed = self._ending = self._finished = False
        self._error: BaseException | None = None
        self._last_push = -math.inf
        self._chunk_seconds = pipeline.step_frames / self.fps  # compute time of the last chunk (an estimate first)
        self._recent: deque[float] = deque(maxlen=50)  # emission times, for the fps
        self._stats = {"frames": 0, "speech_frames": 0, "idle_frames": 0, "dropped_frames": 0,
                       "interrupts": 0, "turns": 0, "latency_ms_last": 0.0, "latency_ms_max": 0.0,
                       "latency_sum": 0.0, "compute_s": 0.0, "generated": 0}
        self._worker = threading.Thread(target=self._work, name="fada-avatar", daemon=True)
        self._worker.start()

    # ---- input (any thread) -------------------------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, sample_rate: int, *, captured_at: float | None = None) -> int:
        """Append speech to the current turn (opening one if needed): mono ``(n,)`` or ``(n, channels)`` with 1 to 8
        channels (any ``n``), float in [-1, 1] or int16/int32. Returns the turn's id (1, 2, ...), which its frames
        and events carry. ``captured_at``: when the block was captured, on :attr:`clock` (default: now), for the
        latency. Refused with a ValueError before anything is queued: NaN/inf samples (the message gives the
        first one's time), channels-first ``(channels, n)`` arrays (pass ``pcm.T``), other shapes and dtypes, a
        rate that is not a positive int (:func:`fada_rt.audio_in.check_pcm`)."""
        check_pcm(pcm, sample_rate=sample_rate)  # before a turn is opened for it
        with self._cond:
            self._check_open("push_audio")
            self._last_push = self.clock()
            captured = self._last_push if captured_at is None else captured_at
            turn = self._speech.push(pcm, sample_rate, now=captured)
            self._cond.notify_all()
            return turn

    def end_turn(self) -> int | None:
        """The current turn is complete: its last frames are made without waiting for more audio. The stream
        stays open (the next push starts a new turn). Returns the id of the turn ended (None: none was open)."""
        with self._cond:
            self._check_open("end_turn")
            turn = self._speech.end_turn()
            self._cond.notify_all()
            return turn

    @property
    def closed(self) -> bool:
        return self._closed

    def interrupt(self) -> None:
        """Barge-in: speech not yet played is dropped, and the next frames are idle. The frame that follows
        carries an ``interrupted`` event. It does nothing when nothing is being said or queued (a second
        interrupt), and after ``end_audio()`` it drops what was left to say."""
        with self._cond:
            if self._closed:
                raise RuntimeError("interrupt after close(): start a new StreamingAvatar")
            dropped = self._speech.clear()
            queued = [m for m in self._out if m.slot.turn is not None]
            speaking = self._turns.turn is not None or bool(queued) or bool(dropped) or any(
                s.turn is not None for s in self._decided)
            if not speaking:
                return
            turn = self._turns.turn or (queued[0].slot.turn if queued else (dropped[0] if dropped else 0))
            self._turns.interrupt(turn, self._clock_out.pts)
            self._out.clear()
            self._decided.clear()  # the worker truncates the session's audio to match (the epoch changed)
            self._epoch += 1
            self._stats["interrupts"] += 1
            self._cond.notify_all()

    def end_audio(self) -> None:
        """No more audio, ever: the last turn is flushed and the iteration ends after its last frame."""
        with self._cond:
            if not self._ending:
                self._speech.end_turn()
                self._ending = True
            self._cond.notify_all()

    def set_image(self, image: str | Path | np.ndarray | Portrait) -> Avatar:
        """Switch the portrait; it takes effect at the next chunk made."""
        portrait = self._load_portrait(image)
        avatar = self.pipeline.prepare(portrait)
        with self._cond:
            self._switch = (portrait, avatar)
        return avatar

    def close(self) -> None:
        """Stop the worker; iterators end. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout=10)

    def __enter__(self) -> StreamingAvatar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- output ------------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """frames (emitted), fps (emitted per second, recent), speech_frames, idle_frames, dropped_frames, late_frames, interrupts, turns,
        latency_ms_{last,mean,max} (speech frames: emitted - pushed), rtf (compute / video seconds),
        queued_seconds (made, not emitted), pending_seconds (pushed, not made)."""
        with self._cond:
            s = dict(self._stats, late_frames=self._clock_out.missed)
            speech = max(1, s["speech_frames"])
            s["latency_ms_mean"] = round(s.pop("latency_sum") / speech * 1000, 1)
            s["rtf"] = round(s.pop("compute_s") / max(1e-9, s.pop("generated") / self.fps), 3)
            s["queued_seconds"] = len(self._out) / self.fps
            span = self._recent[-1] - self._recent[0] if len(self._recent) > 1 else 0.0
            s["fps"] = round((len(self._recent) - 1) / span, 2) if span > 0 else 0.0
            s["pending_seconds"] = self._speech.pending_seconds()
            s["max_buffered_samples"] = self._session.features.max_buffered  # the feature stream's memory
            return s

    def buffered_seconds(self) -> float:
        """Speech pushed but not yet made into frames, in seconds (a producer may throttle on it)."""
        with self._cond:
            return self._speech.pending_seconds() + sum(s.turn is not None for s in self._decided) / self.fps

    def next_frame(self, timeout: float | None = None) -> AvatarFrame | None:
        """The next frame, at its time in realtime mode; None once the stream has ended or was closed.
        ``timeout`` (seconds): raise TimeoutError when no frame comes in time."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                if self._error is not None:
                    raise RuntimeError(f"the avatar's worker failed: {self._error}") from self._error
                if self._closed or (self._finished and not self._out):
                    return None
                now = self.clock()
                if self._out:
                    if self.realtime:
                        self._clock_out.hold(now)  # slots missed go by empty (late_frames)
                    wait = self._clock_out.due(now) - now if self.realtime else 0.0
                    if wait <= 0:
                        break
                else:
                    wait = None if deadline is None else deadline - now
                    if wait is not None and wait <= 0:
                        raise TimeoutError(f"no frame within {timeout} s")
                self._cond.wait(wait if wait is None else min(wait, 0.05))
            if self.realtime:
                self._clock_out.start()  # the first frame out starts the clock
            made = self._out.popleft()
            frame = self._emit(made)
            self._cond.notify_all()  # the worker may need to make more
        image = made.portrait.frame(made.crop, self.output)
        return AvatarFrame(image=image, audio=made.slot.audio, pts=frame[0], index=frame[1],
                           speaking=made.slot.turn is not None, turn=made.slot.turn, events=frame[2],
                           latency=frame[3], captured_at=made.slot.arrival)

    def frames(self, *, until_idle: bool = False) -> Iterator[AvatarFrame]:
        """Frames until the stream ends or is closed; ``until_idle``: also stop after the frame that carries a
        ``speaking_finished`` or ``interrupted`` event (a scripted reply: push, ``end_turn()``, iterate)."""
        while (frame := self.next_frame()) is not None:
            yield frame
            if until_idle and _ends_speech(frame):
                return

    def __iter__(self) -> Iterator[AvatarFrame]:
        return self.frames()

    async def aframes(self, *, until_idle: bool = False) -> AsyncIterator[AvatarFrame]:
        """The same frames for asyncio; the waiting happens in a worker thread, never on the event loop."""
        while (frame := await asyncio.to_thread(self.next_frame)) is not None:
            yield frame
            if until_idle and _ends_speech(frame):
                return

    def __aiter__(self) -> AsyncIterator[AvatarFrame]:
        return self.aframes()

    # ---- internals ---------------------------------------------------------------------------------------
    def _load_portrait(self, image: str | Path | np.ndarray | Portrait) -> Portrait:
        return image if isinstance(image, Portrait) else self.pipeline.portrait(image, **self._portrait_options)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"{what} after close(): start a new StreamingAvatar")
        if self._ending:
            raise RuntimeError(f"{what} after end_audio(): the stream is over; start a new StreamingAvatar")

    def _emit(self, made: _Made) -> tuple[float, int, tuple[AvatarEvent, ...], float | None]:
        """Account for one emitted frame in its slot (:mod:`fada_rt.emission`); its (pts, index, events, latency)."""
        pts, index, slot, s = self._clock_out.pts, self._clock_out.slot, made.slot, self._stats
        events = self._turns.on_frame(slot, pts)
        s["turns"] += sum(e.kind == "speaking_started" for e in events)
        latency = None
        if slot.turn is not None:
            latency = self.clock() - slot.arrival
            s["speech_frames"] += 1
            s["latency_sum"] += latency
            s["latency_ms_last"] = round(latency * 1000, 1)
            s["latency_ms_max"] = max(s["latency_ms_max"], round(latency * 1000, 1))
        else:
            s["idle_frames"] += 1
        s["frames"] += 1
        self._recent.append(self.clock())
        self._clock_out.tick()
        return pts, index, events, latency

    def _work(self) -> None:
        follow_torch_threads()  # the model's threads in this worker, not OpenMP's default
        try:
            while self._work_once():
                pass
        except BaseException as err:  # reported to the iterating thread, which raises it
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def _work_once(self) -> bool:
        f = self.pipeline.step_frames
        with self._cond:
            while True:
                if self._closed:
                    return False
                if self._seen_epoch != self._epoch:  # an interrupt: queued speech in the session goes
                    self._session.truncate()
                    self._decided.clear()
                    self._seen_epoch = self._epoch
                if self.max_latency is not None:  # speech that would play too late is skipped unmade
                    while self._speech.pending_seconds() > self.max_latency and self._speech.take() is not None:
                        self._stats["dropped_frames"] += 1
                speech = self._speech.frames_ready()
                need = f + self._lookahead - len(self._decided)
                if need <= 0 or speech >= need or self._fill_allowed():
                    break
                if self._ending and not self._speech.ended_frames() and not self._has_speech_decided():
                    self._finished = True
                    self._cond.notify_all()
                    return False
                self._cond.wait(0.05)
            if self._switch is not None:
                self.portrait, avatar = self._switch
                self._session.set_avatar(avatar)
                self._switch = None
            blocks = []
            for _ in range(max(0, need)):
                taken = self._speech.take() or self._speech.silence()
                blocks.append(taken[0])
                self._decided.append(taken[1])
            if blocks:
                self._session.push(np.concatenate(blocks))
            epoch, portrait = self._epoch, self.portrait
        start = time.perf_counter()
        chunk = self._session.step()  # the model, outside the lock: pushes and emission go on meanwhile
        spent = time.perf_counter() - start
        with self._cond:
            if chunk is None:
                raise RuntimeError("the chunk's audio was decided but the session had no chunk ready")
            self._chunk_seconds = spent
            self._stats["compute_s"] += spent
            self._stats["generated"] += len(chunk.frames)
            if epoch != self._epoch:  # interrupted while it was made: these frames are stale
                return True
            slots = [self._decided.popleft() for _ in range(len(chunk.frames))]
            made = [_Made(frame, slot, portrait) for frame, slot in zip(chunk.frames, slots)]
            if self._ending and not self._speech.ended_frames() and not self._has_speech_decided():
                while made and made[-1].slot.turn is None:  # after the last word: the stream ends here
                    made.pop()
            if any(m.slot.turn is not None for m in made):  # speech is coming: idle frames before it can go
                while self._out and self._out[-1].slot.turn is None and len(self._out) > 1:
                    self._out.pop()
                    self._stats["dropped_frames"] += 1
            self._out.extend(made)
            self._cond.notify_all()
        return True

    def _has_speech_decided(self) -> bool:
        return any(s.turn is not None for s in self._decided)

    def _fill_allowed(self) -> bool:
        """May the next chunk be completed with silence? Yes to flush an ended turn (or the end of audio),
        or in realtime mode when the frames queued will not last until another chunk is made."""
        if self._speech.ended_frames() or (self._ending and self._has_speech_decided()):
            return True
        return self.realtime and self._fill_idle()

    def _fill_idle(self) -> bool:
        """Realtime: the frames queued will not last until another chunk is made, and no speech is flowing (no
        open turn, or its audio stopped coming for a chunk's time: a live source is never cut into)."""
        if self._ending:
            return False
        low = len(self._out) / self.fps < self._chunk_seconds * 1.25 + 1.0 / self.fps
        flowing = self._speech.open_turn is not None and (
            self.clock() - self._last_push < self.pipeline.step_frames / self.fps)
        return low and not flowing
