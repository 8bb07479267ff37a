"""Embedding API for video-call apps: push PCM in, iterate ``(frame, pts)`` out (docs/design.md §4).

::

    avatar = StreamingAvatar("photo.jpg", checkpoint="student/")     # prepare once (or LoadOptions(...))
    # audio thread (any rate, mono or (n, channels), float or int16):
    avatar.push_audio(pcm, 48000)
    # video thread:
    for frame, pts in avatar:          # frame (H, W, 3) uint8, pts seconds on the audio clock
        send(frame, pts)               # the whole picture, the face pasted back (output="crop": the crop)
    # or, in asyncio: async for frame, pts in avatar: ...
    avatar.end_audio()                 # flush: the iteration ends after the last frame

Frames are generated in the thread that iterates (a pull model: no hidden worker threads); pushes may
come from any thread. ``pts`` follow the audio sample clock: frame ``k`` is at ``k / fps`` s of the
pushed audio (``fps``: the model's ``AudioConfig.fps``), so playing the audio delayed by the reported
latency keeps lips in sync.
With ``realtime=True`` (the default: pushes arrive at the pace of a live source) a chunk whose
successor is already complete is skipped and counted in ``stats["dropped_frames"]``, keeping
latency bounded; ``realtime=False`` renders every frame (offline use).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fada_rt.backends.options import LoadOptions
from fada_rt.face import MAX_SIDE, CropMode, OutputMode, Portrait
from fada_rt.media import PcmConverter
from fada_rt.pipeline import Avatar, AvatarPipeline
from fada_rt.streaming import StreamingSession

Frame = tuple[np.ndarray, float]


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
        sampler: str = "fast",
        cfg_audio: float | None = None,
        cfg_ref: float | None = None,
        seed: int = 0,
        realtime: bool = True,
        pipeline: AvatarPipeline | None = None,
        **load: Any,
    ) -> None:
        """Load the model (or reuse ``pipeline``) and prepare the portrait ``image`` once.

        The model is ``options`` (:class:`~fada_rt.backends.LoadOptions`), or the ``LoadOptions`` of the
        ``load`` keywords (``checkpoint=``, ``device=``, ``dtype=``, ...), or the default (the shipped tiny
        checkpoint of ``sampler`` on the CPU). ``output``, ``crop``, ``face_index``, ``max_side``: the portrait
        (:func:`fada_rt.generate.generate_video`, docs/portraits.md).
        """
        if pipeline is not None and (options is not None or load):
            raise ValueError("pass either a pipeline or the options to load one, not both")
        if options is not None and load:
            raise ValueError(f"pass either LoadOptions or their keywords ({', '.join(load)}), not both")
        if pipeline is None:
            options = options if options is not None else LoadOptions(**load)
            pipeline = AvatarPipeline.load(options, sampler=sampler, cfg_audio=cfg_audio, cfg_ref=cfg_ref)
        self.pipeline = pipeline
        self.output = output
        self._portrait_options = {"crop": crop, "face_index": face_index, "max_side": max_side}
        self.portrait = self._load_portrait(image)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.session = StreamingSession(pipeline, pipeline.prepare(self.portrait), generator=generator,
                                        drop_late=realtime)
        self._converter = PcmConverter(rate=pipeline.config.audio.sample_rate)
        self._cond = threading.Condition()
        self._pending: deque[Frame] = deque()
        self._ended = False
        self._closed = False
        self._generating = threading.Lock()  # one generating thread at a time

    # ---- input -------------------------------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Append PCM: ``(n,)`` or ``(n, channels)``, float in [-1, 1] or int16/int32, any rate."""
        with self._cond:
            if self._ended:
                raise RuntimeError("push_audio after end_audio(): start a new StreamingAvatar for a new stream")
            samples = self._converter.convert(pcm, sample_rate)
            self.session.push(samples)
            self._cond.notify_all()

    def end_audio(self) -> None:
        """No more audio: the remaining frames (a partial last chunk included) are generated."""
        with self._cond:
            if not self._ended:
                self.session.push(self._converter.flush())
                self.session.finish()
                self._ended = True
            self._cond.notify_all()

    def set_image(self, image: str | Path | np.ndarray | Portrait) -> Avatar:
        """Switch the portrait (one ``prepare``; cached portraits are free); takes effect next chunk."""
        portrait = self._load_portrait(image)
        avatar = self.pipeline.prepare(portrait)
        with self._generating:
            self.session.set_avatar(avatar)
            self.portrait = portrait
        return avatar

    def _load_portrait(self, image: str | Path | np.ndarray | Portrait) -> Portrait:
        return image if isinstance(image, Portrait) else self.pipeline.portrait(image, **self._portrait_options)

    def close(self) -> None:
        """Stop: iterators end (frames not yet generated are not produced)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ---- output ------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """frames, dropped_frames, fps, latency_ms_{last,mean,max}, audio_seconds, ..."""
        return self.session.stats_dict()

    def buffered_seconds(self) -> float:
        """Seconds of pushed audio not yet turned into frames (a producer can throttle on it)."""
        return self.session.pending_seconds()

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """Block until the next frame (generating it if its audio is there); None at the end of the stream.

        ``timeout`` (seconds): raise TimeoutError if no frame can be made in time.
        """
        with self._generating:  # pushes are never blocked by generation, only by this short wait
            if self._closed:
                return None
            if self._pending:
                return self._pending.popleft()
            with self._cond:
                if not self._cond.wait_for(self._can_progress, timeout=timeout):
                    raise TimeoutError(f"no frame within {timeout} s: is audio being pushed?")
                if self._closed:
                    return None
            chunk = self.session.step()  # generation happens here, in the caller's thread
            if chunk is None:  # the stream is done
                return None
            self._pending.extend((self.portrait.frame(frame, self.output), float(pts))
                                 for frame, pts in zip(chunk.frames, chunk.pts))
            return self._pending.popleft()

    def _can_progress(self) -> bool:
        return self._closed or self.session.done or self.session.chunk_ready()

    def frames(self) -> Iterator[Frame]:
        """Synchronous iterator of ``(frame (H, W, 3) uint8, pts seconds)`` until the stream ends."""
        while (item := self.next_frame()) is not None:
            yield item

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    async def aframes(self) -> AsyncIterator[Frame]:
        """Asynchronous iterator; generation runs in a worker thread, never on the event loop."""
        while (item := await asyncio.to_thread(self.next_frame)) is not None:
            yield item

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self.aframes()
