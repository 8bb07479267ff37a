"""A fada-rt avatar as a LiveKit Agents avatar, through LiveKit's own avatar interface
(``livekit.agents.voice.avatar``; the ``livekit`` extra; docs/calls.md).

::

    avatar = StreamingAvatar("photo.jpg")                  # realtime=True (the default) is required
    generator = FadaVideoGenerator(avatar)
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=generator,
                          options=generator.options)       # avatar_options(avatar): size, 25 fps, rate, mono
    await runner.start()

:class:`FadaVideoGenerator` is a LiveKit ``VideoGenerator``: ``AvatarRunner`` feeds it the agent's speech and
forwards what it yields to the room through an ``rtc.AVSynchronizer``.

* ``push_audio(rtc.AudioFrame)``: the frame's int16 interleaved PCM goes to
  :meth:`StreamingAvatar.push_audio` at the frame's rate (any rate, any channel count; the avatar resamples
  and mixes to mono). ``push_audio(AudioSegmentEnd())`` ends the segment: :meth:`StreamingAvatar.end_turn`.
  One LiveKit segment is one of the avatar's turns.
* ``clear_buffer()``: :meth:`StreamingAvatar.interrupt`. Speech not yet played is dropped at once (the next
  frame is idle: within one frame, well inside one chunk), and an ``AudioSegmentEnd`` is yielded right away,
  before any later frame, when a segment was unfinished.
* Iteration yields, for every avatar frame, an ``rtc.VideoFrame`` (RGBA, the avatar's output size) and, for
  speech frames only, the ``rtc.AudioFrame`` that plays with it (int16 mono at ``avatar.audio_rate``,
  ``audio_rate / 25`` samples). Idle frames (between turns, the avatar keeps making them) are video only.
  After the last frame of a segment, an ``AudioSegmentEnd``.

Why idle frames carry no audio: ``AvatarRunner`` adds the duration of every ``rtc.AudioFrame`` it forwards to
the playback position it reports to the agent, and sends ``playback_started`` when a frame arrives at position
0 (after each ``AudioSegmentEnd``). Silence for idle frames would report playback that never happened and
inflate the positions the agent uses to cut its transcript at a barge-in. LiveKit's own avatar example
(audio_wave) does the same; the audio track simply gets no samples between replies. (The position includes
the zero padding of a segment's last frame: under 40 ms.)

Pacing: one clock, the avatar's. ``AvatarRunner``'s ``AVSynchronizer`` paces too: video through a 100 ms
queue emptied by an fps controller at ``video_fps``, audio through an ``rtc.AudioSource`` whose
``capture_frame`` waits while more than 100 ms is queued. Both only hold frames back that arrive faster than
real time. The realtime avatar emits one frame per 1/25 s on the wall clock (slipping its clock, never
bursting, when the model falls behind), so with ``video_fps`` equal to the avatar's fps (which
:func:`avatar_options` guarantees) the synchronizer's queues stay near empty: it forwards each frame as it
comes and adds no second schedule. The alternative, ``realtime=False`` with the synchronizer as the only
pacer, was rejected: an offline avatar makes no idle frames, so the picture would freeze between replies.
A realtime avatar is required.

Video and audio stay in sync because each speech frame's picture and its 40 ms of audio are yielded together,
from one frame of the avatar (one clock), the picture first. Between them, the AudioSource queue (under
100 ms) is the only delay, as in every LiveKit avatar.

When a segment has finished playing: the generator follows the turn ids (``push_audio``'s return value,
``AvatarFrame.turn``) and yields ``AudioSegmentEnd`` for an ended segment on the frame that carries its
``speaking_finished`` event (the frame after the turn's last, once it was ended), or, as safety nets, when
(a) a frame of a later turn comes (turns play in order), or (b) it has started and three frames in a row are
idle with nothing left to make
(:meth:`StreamingAvatar.buffered_seconds` is 0): the avatar appends newly made speech behind at most one
queued idle frame, so after that no frame of it can still come. (b) comes 80 ms after the segment's audio
ends, about what the AudioSource still has queued then: the agent hears "finished" when it is.
A segment with no audio at all ends at once.

After ``clear_buffer`` the runner itself reports the interrupted playback and ignores the ``AudioSegmentEnd``
(it is not playing any more); it is yielded at once all the same, so that it can never be taken for the end
of the agent's next segment. A frame that was already on its way out when the interrupt came is sent as a
picture only.

Call the methods from the event loop that iterates the generator (as ``AvatarRunner`` does). The generator
owns the avatar: :meth:`FadaVideoGenerator.aclose` closes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from fada_rt.api import AvatarFrame, StreamingAvatar

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator
except ImportError as err:  # the optional extra
    raise ImportError(f"fada_rt.integrations.livekit needs LiveKit Agents ({err}): "
                      f"pip install 'fada-rt[livekit]'") from err

__all__ = ["FadaVideoGenerator", "avatar_options", "output_size"]

QUIET_FRAMES = 3  # idle frames in a row, with nothing left to make, after which an ended segment is over

Item = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd


def output_size(avatar: StreamingAvatar) -> tuple[int, int]:
    """(width, height) of the avatar's frames: the picture (``output="full"``) or the model's crop."""
    if avatar.output == "full":
        return avatar.portrait.size
    height, width = avatar.portrait.crop.shape[:2]
    return width, height


def avatar_options(avatar: StreamingAvatar) -> AvatarOptions:
    """LiveKit's ``AvatarOptions`` for ``avatar``: its frame size, its fps (25), its audio rate, mono."""
    width, height = output_size(avatar)
    return AvatarOptions(video_width=width, video_height=height, video_fps=avatar.fps,
                         audio_sample_rate=avatar.audio_rate, audio_channels=1)


class FadaVideoGenerator(VideoGenerator):
    """LiveKit Agents' ``VideoGenerator`` on a realtime :class:`StreamingAvatar`; see the module docstring."""

    def __init__(self, avatar: StreamingAvatar) -> None:
        if not isinstance(avatar, StreamingAvatar):
            raise TypeError(f"FadaVideoGenerator wraps a fada_rt.api.StreamingAvatar, got {type(avatar).__name__}")
        if not avatar.realtime:
            raise ValueError("FadaVideoGenerator needs StreamingAvatar(realtime=True): LiveKit plays the frames "
                             "live, and only a realtime avatar paces them and idles between replies")
        self.avatar = avatar
        self.options = avatar_options(avatar)
        self._samples = avatar.audio_rate // avatar.fps  # per video frame
        self._closed = self._iterating = False
        self._ready: deque[AudioSegmentEnd] = deque()  # to yield before the next frame
        self._wake = asyncio.Event()
        # segments = the avatar's turns (ids 1, 2, ... from push_audio)
        self._open: int | None = None  # the turn pushes go to
        self._open_samples = 0
        self._last = 0  # the latest turn pushed to
        self._ended: list[int] = []  # turns whose AudioSegmentEnd came in and whose end was not yielded yet
        self._started: set[int] = set()  # turns that began to play and whose end was not yielded yet
        self._cut = 0  # turns up to this one were dropped by clear_buffer
        self._quiet = 0  # idle frames in a row with nothing left to make

    # ---- LiveKit's VideoGenerator ---------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Speech for the current segment (any rate, int16 interleaved), or the segment's end."""
        self._check_open("push_audio")
        if isinstance(frame, AudioSegmentEnd):
            self._end_segment()
            return
        if not isinstance(frame, rtc.AudioFrame):
            raise TypeError(f"push_audio takes an rtc.AudioFrame or an AudioSegmentEnd, got {type(frame).__name__}")
        count = frame.samples_per_channel * frame.num_channels
        pcm = np.frombuffer(frame.data, dtype=np.int16, count=count).reshape(-1, frame.num_channels)
        turn = self.avatar.push_audio(pcm, frame.sample_rate)
        if turn != self._open:  # this push opened a turn
            self._open = self._last = turn
            self._open_samples = 0
        self._open_samples += frame.samples_per_channel

    def clear_buffer(self) -> None:
        """Barge-in: speech not yet played is dropped; an ``AudioSegmentEnd`` follows at once if a segment was
        unfinished."""
        self._check_open("clear_buffer")
        self.avatar.interrupt()
        unfinished = self._open is not None or bool(self._ended)
        self._cut = self._last  # the avatar dropped every turn pushed so far
        self._open, self._ended, self._quiet = None, [], 0
        self._started.clear()
        if unfinished:
            self._ready.append(AudioSegmentEnd())
            self._wake.set()

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._stream()

    # ---- lifetime -------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the avatar; the iteration ends. Safe to call twice."""
        self._closed = True
        await asyncio.to_thread(self.avatar.close)
        self._wake.set()

    # ---- internals ------------------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"{what} after aclose(): this FadaVideoGenerator is closed; make a new one "
                               f"on a new StreamingAvatar")

    def _end_segment(self) -> None:
        turn = self.avatar.end_turn()
        if turn is None or turn != self._open:  # nothing pushed since the last end or clear (LiveKit's
            return  # receiver ends cleared segments too)
        empty = self._open_samples == 0
        self._open, self._quiet = None, 0
        if empty:  # no frame will play: the segment is over now
            self._ready.append(AudioSegmentEnd())
            self._wake.set()
        else:
            self._ended.append(turn)

    async def _stream(self) -> AsyncIterator[Item]:
        if self._iterating:
            raise RuntimeError("this FadaVideoGenerator is already being iterated: one consumer (the "
                               "AvatarRunner) reads its frames")
        self._iterating = True
        pending: asyncio.Future[AvatarFrame | None] | None = None
        try:
            while True:
                while self._ready:
                    yield self._ready.popleft()
                if pending is None:  # the wait for a paced frame happens in a thread, never on the loop
                    pending = asyncio.ensure_future(asyncio.to_thread(self.avatar.next_frame))
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait((pending, waker), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                if not pending.done():  # woken: something to yield before the frame
                    continue
                frame, pending = pending.result(), None
                if frame is None:  # the avatar was closed
                    return
                for item in self._items(frame):
                    yield item
        finally:
            self._iterating = False
            if pending is not None:
                pending.cancel()

    def _items(self, frame: AvatarFrame) -> list[Item]:
        """What one avatar frame becomes: ends of segments it shows are over, its picture, its audio."""
        playing = frame.turn
        if playing is not None and playing > self._cut:
            self._started.add(playing)
        if playing is not None or self.avatar.buffered_seconds() > 0:
            self._quiet = 0
        else:
            self._quiet += 1
        finished = {e.turn for e in frame.events if e.kind == "speaking_finished"}
        done = [turn for turn in self._ended if turn in finished or (playing is not None and playing > turn) or (
            playing is None and turn in self._started and self._quiet >= QUIET_FRAMES)]
        for turn in done:
            self._ended.remove(turn)
            self._started.discard(turn)
        items: list[Item] = [AudioSegmentEnd() for _ in done]
        items.append(self._video(frame.image))
        if playing is not None and playing > self._cut:  # else dropped speech that was already on its way out
            items.append(self._audio(frame.audio))
        return items

    def _video(self, image: np.ndarray) -> rtc.VideoFrame:
        height, width = image.shape[:2]
        rgba = np.empty((height, width, 4), np.uint8)
        rgba[..., :3] = image
        rgba[..., 3] = 255
        return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes())

    def _audio(self, audio: np.ndarray) -> rtc.AudioFrame:
        pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)  # int16 in round-trips exactly
        return rtc.AudioFrame(pcm.tobytes(), self.avatar.audio_rate, 1, self._samples)
