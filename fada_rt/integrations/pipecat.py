"""Pipecat adapter: a frame processor that turns the TTS's speech into a talking avatar's video and audio.

Put it between the TTS and the output transport (docs/calls.md)::

    from fada_rt.integrations.pipecat import FadaAvatarProcessor

    avatar = FadaAvatarProcessor("photo.jpg", sample_rate=24000)   # loads the model, finds the face
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, avatar, transport.output(),
                         assistant_aggregator])
    # the transport: video_out_enabled=True, video_out_is_live=True, video_out_framerate=avatar.fps,
    # video_out_width, video_out_height = avatar.size

What it does with the frames that come down the pipeline:

- ``TTSAudioRawFrame``: consumed. Its PCM (int16, any rate, any channels) goes to
  :meth:`StreamingAvatar.push_audio <fada_rt.api.StreamingAvatar.push_audio>`; the avatar's frames carry it.
- ``TTSStoppedFrame`` (the end of an utterance): ``end_turn()``, so its tail is made without waiting for
  more audio. The frame itself is held back and passed on after the utterance's last avatar frame, so the
  output transport's bot-speaking state (``BotStartedSpeakingFrame`` / ``BotStoppedSpeakingFrame``)
  follows what the avatar says, not what the TTS made. A ``TTSStartedFrame`` or an empty utterance's
  ``TTSStoppedFrame`` that comes while stops are held waits behind them, to keep their order.
- ``InterruptionFrame`` (either direction): ``interrupt()`` (speech not yet played is dropped; the next
  frames are idle), held frames are dropped (as the transport drops its queued ones), and the
  interruption is passed on.
- ``StartFrame`` starts the output task. ``EndFrame``: ``end_audio()``, the speech already pushed plays
  out, the avatar is closed, then the ``EndFrame`` is passed on. ``CancelFrame``: the avatar is closed at
  once. Every other frame passes unchanged (and at once: text frames run ahead of the avatar's audio by its
  latency, as with Pipecat's hosted avatar services).

What it emits, from the output task, for every avatar frame (``fps`` a second, paced on the wall clock):
an ``OutputImageRawFrame`` (RGB bytes, ``size`` = (width, height)) and then the audio that plays with
it, ``sample_rate / fps`` samples of int16 mono: a ``TTSAudioRawFrame`` (with the utterance's
``context_id``) while the avatar speaks, a plain ``OutputAudioRawFrame`` of silence when it is idle.

Idle frames are emitted too, all the time nobody speaks: the avatar runs ``realtime=True`` and keeps
making frames (mouth closed, silence), so the video never freezes, a live video track keeps its 25 fps and
the audio track its clock. Their audio is a plain ``OutputAudioRawFrame``, so the transport does not take
the silence for the bot speaking; the ``TTSAudioRawFrame`` speech frames are what start its bot-speaking
state, and the re-timed ``TTSStoppedFrame`` what ends it.

``sync_with_audio=True`` marks the images so that a transport with ``video_out_is_live=False`` shows each
one when the audio before it has been sent. Leave it False with ``video_out_is_live=True``: Pipecat 1.14
routes synced images past its live video queue, and they would never be shown.

The processor owns its avatar: it is the only one to push audio to it, and it closes it at the end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from fada_rt.api import AvatarFrame, StreamingAvatar

try:
    from pipecat.frames.frames import (
        CancelFrame,
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
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ModuleNotFoundError as err:  # the extra is not installed
    raise ImportError(
        f"fada_rt.integrations.pipecat needs Pipecat ({err.name} is missing): pip install 'fada-rt[pipecat]'"
    ) from err

DEFAULT_SAMPLE_RATE = 24000  # Pipecat's default output rate (PipelineParams.audio_out_sample_rate)


class FadaAvatarProcessor(FrameProcessor):
    """A Pipecat processor that animates a portrait with the TTS's speech; see the module docstring."""

    def __init__(
        self,
        image: str | Path | np.ndarray | None = None,
        *,
        avatar: StreamingAvatar | None = None,
        sample_rate: int | None = None,
        sync_with_audio: bool = False,
        name: str | None = None,
        **avatar_options: Any,
    ) -> None:
        """Load the avatar of ``image`` (``avatar_options`` go to :class:`~fada_rt.api.StreamingAvatar`:
        ``output``, ``crop``, ``threads``, ``pipeline``, ``max_latency``, ...), or take a ready ``avatar``
        (made with ``realtime=True``, nothing pushed to it yet: the processor numbers its turns as it does).
        ``sample_rate``: the rate of the emitted audio (default 24000, or the avatar's ``audio_rate``); a whole
        multiple of the fps (16000, 24000, 48000, ...)."""
        if avatar is None:
            if image is None:
                raise ValueError("give the portrait to animate (image=...) or a ready StreamingAvatar (avatar=...)")
            if "realtime" in avatar_options or "audio_rate" in avatar_options:
                raise ValueError("the processor runs the avatar with realtime=True and audio_rate=sample_rate; "
                                 "pass sample_rate=... and leave realtime and audio_rate out")
            sample_rate = DEFAULT_SAMPLE_RATE if sample_rate is None else sample_rate
            avatar = StreamingAvatar(image, audio_rate=sample_rate, realtime=True, **avatar_options)
        else:
            if image is not None or avatar_options:
                raise ValueError("pass either a ready avatar or the image and options to make one, not both")
            if not avatar.realtime:
                raise ValueError("the avatar must be made with realtime=True (paced frames, idle between turns)")
            if sample_rate is not None and sample_rate != avatar.audio_rate:
                raise ValueError(f"sample_rate={sample_rate} but the avatar makes {avatar.audio_rate} Hz audio: "
                                 f"leave sample_rate out or make the avatar with audio_rate={sample_rate}")
        super().__init__(name=name)
        self._avatar = avatar
        self._sync = sync_with_audio
        self._output_task: asyncio.Task | None = None
        self._next_turn = 1  # the avatar numbers turns 1, 2, ... in push order, as this counter does
        self._open_turn: int | None = None  # the turn the TTS audio goes to
        self._playing: int | None = None  # the turn the avatar's frames are speaking
        self._contexts: dict[int, str | None] = {}  # turn -> the TTS context_id
        self._held: deque[tuple[int, Frame]] = deque()  # (turn, frame): passed on once the turn has played
        self._ending = False

    # ---- properties ------------------------------------------------------------------------------------
    @property
    def avatar(self) -> StreamingAvatar:
        """The avatar (its ``stats`` and ``set_image()`` are for the caller; pushing is the processor's)."""
        return self._avatar

    @property
    def sample_rate(self) -> int:
        """The rate of the emitted audio, in Hz."""
        return self._avatar.audio_rate

    @property
    def fps(self) -> int:
        """Frames a second (the transport's ``video_out_framerate``)."""
        return self._avatar.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the emitted images (the transport's ``video_out_width`` / ``_height``)."""
        if self._avatar.output == "full":
            return self._avatar.portrait.size
        side = self._avatar.portrait.crop.shape[0]
        return side, side

    # ---- frames in -------------------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        downstream = direction == FrameDirection.DOWNSTREAM
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)  # the processors after this one start first
            if self._output_task is None:
                self._output_task = self.create_task(self._emit_frames(), f"{self}::avatar-frames")
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._shut_down()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._end()
            await self.push_frame(frame, direction)
        elif downstream and isinstance(frame, TTSAudioRawFrame):
            self._push_speech(frame)
        elif downstream and isinstance(frame, TTSStoppedFrame):
            if self._open_turn is not None:
                self._avatar.end_turn()
                self._held.append((self._open_turn, frame))
                self._open_turn = None
            else:
                await self._pass_in_order(frame)
        elif downstream and isinstance(frame, TTSStartedFrame):
            await self._pass_in_order(frame)
        else:
            await self.push_frame(frame, direction)

    def _push_speech(self, frame: TTSAudioRawFrame) -> None:
        if frame.num_channels < 1 or len(frame.audio) % (2 * frame.num_channels):
            raise ValueError(f"{frame} is not whole int16 samples of {frame.num_channels} channel(s): "
                             "TTS audio frames carry 16-bit PCM")
        if not frame.audio:
            return
        if self._open_turn is None:
            self._open_turn, self._next_turn = self._next_turn, self._next_turn + 1
            self._contexts[self._open_turn] = frame.context_id
        pcm = np.frombuffer(frame.audio, dtype=np.int16).reshape(-1, frame.num_channels)
        self._avatar.push_audio(pcm, frame.sample_rate)

    async def _pass_in_order(self, frame: Frame) -> None:
        """Pass a TTS control frame on now, or behind the stops held back, in order."""
        if self._held:
            self._held.append((self._held[-1][0], frame))
        else:
            await self.push_frame(frame)

    def _interrupt(self) -> None:
        if self._ending:  # the stream is over (EndFrame): what was said plays out
            return
        self._avatar.interrupt()
        self._open_turn = None
        self._held.clear()

    # ---- frames out ------------------------------------------------------------------------------------
    async def _emit_frames(self) -> None:
        """The output task: every avatar frame as an image and its audio, until the avatar ends or closes."""
        while True:
            try:
                frame = await asyncio.to_thread(self._avatar.next_frame)
            except RuntimeError as err:  # the avatar's worker failed: report it, the processor is done
                await self.push_error(f"the avatar stopped making frames: {err}", exception=err,
                                      force_treat_as_permanent=True)
                return
            if frame is None:
                return
            await self._push_avatar_frame(frame)

    async def _push_avatar_frame(self, frame: AvatarFrame) -> None:
        for event in frame.events:
            if event.kind == "speaking_finished":
                await self._release(event.turn)
                self._contexts.pop(event.turn, None)
                self._playing = None
            elif event.kind == "interrupted":
                self._contexts.pop(event.turn, None)
                self._playing = None
            elif event.kind == "speaking_started":
                await self._release(event.turn - 1)
                self._playing = event.turn
        height, width = frame.image.shape[:2]
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(width, height), format="RGB")
        image.sync_with_audio = self._sync
        pcm = (np.clip(frame.audio, -1.0, 1.0) * 32767.0).round().astype(np.int16).tobytes()
        if frame.speaking:
            context = self._contexts.get(self._playing) if self._playing is not None else None
            audio: OutputAudioRawFrame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context)
        else:
            audio = OutputAudioRawFrame(pcm, self.sample_rate, 1)
        await self.push_frame(image)
        await self.push_frame(audio)

    async def _release(self, turn: int) -> None:
        """Pass on the frames held until ``turn`` (and those before it) had played."""
        while self._held and self._held[0][0] <= turn:
            await self.push_frame(self._held.popleft()[1])

    # ---- the end ---------------------------------------------------------------------------------------
    async def _end(self) -> None:
        """EndFrame: no more audio; the speech pushed plays out, the held frames follow, the avatar closes."""
        if not self._ending:
            self._ending = True
            self._avatar.end_audio()
        if self._output_task is not None:
            await self._output_task  # ends after the avatar's last frame
            self._output_task = None
        while self._held:
            await self.push_frame(self._held.popleft()[1])
        await asyncio.to_thread(self._avatar.close)

    async def _shut_down(self) -> None:
        """Close the avatar (its pending next_frame returns None) and stop the output task."""
        self._ending = True
        await asyncio.to_thread(self._avatar.close)
        if self._output_task is not None:
            await self.cancel_task(self._output_task)
            self._output_task = None
        self._held.clear()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._shut_down()
