"""Video out: H.264 + AAC mp4 writing and probing (PyAV), on the model's clock (docs/design.md §4).

:class:`VideoWriter` stamps video frame ``k`` at ``k / fps`` and interleaves the audio that plays with it; the
file is written beside its target and renamed onto it when finalised (:mod:`fada_rt.outputs`), so an
interrupted run leaves a playable file and never a half-written one. :func:`probe_video` counts what a file
holds. PyAV is imported by the functions that use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from fada_rt.media import FPS, SAMPLE_RATE
from fada_rt.outputs import VIDEO_SUFFIXES, finish_output, partial_path


class VideoWriter:
    """H.264 (yuv420p) + AAC mp4 with ``faststart``; frames and audio appended in order.

    Video frame ``k`` gets pts ``k / fps``; audio is written up to the end of the last video frame as
    frames arrive (so the file interleaves) and trimmed to the video length at :meth:`close`.
    Always close it (it is a context manager): closing flushes the encoders and writes the index, so
    an interrupted run still leaves a playable file. The file is written to ``.NAME.partial.SUFFIX`` beside
    ``path`` and renamed onto ``path`` by :meth:`close`; without frames it is removed instead
    (:mod:`fada_rt.outputs`), so ``path`` is never a half-written file.
    """

    def __init__(self, path: str | Path, *, size: int | tuple[int, int], fps: int = FPS,
                 sample_rate: int = SAMPLE_RATE, crf: int = 18, audio: bool = True) -> None:
        """``size``: the side of square frames, or (width, height)."""
        import av


        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.written = False  # True once close() renamed a finalised file with frames onto path
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"output {self.path} must end in one of {VIDEO_SUFFIXES} (H.264 + AAC)")
        width, height = (size, size) if isinstance(size, int) else size
        if min(width, height) < 16 or width % 2 or height % 2:
            raise ValueError(f"video sides must be even numbers of pixels >= 16 (yuv420p), got {width}x{height}")
        self.width, self.height = width, height
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps, self.sample_rate = fps, sample_rate
        self.samples_per_frame = sample_rate // fps
        self.frames_written = 0
        self.audio_written = 0
        self._audio: list[np.ndarray] = []
        self._audio_buffered = 0
        self._closed = False
        self.container = av.open(str(self.partial), "w", options={"movflags": "+faststart"})
        try:
            self.video = self.container.add_stream("libx264", rate=fps)
            self.video.width, self.video.height = width, height
            self.video.pix_fmt = "yuv420p"
            self.video.time_base = Fraction(1, fps)
            self.video.options = {"crf": str(crf), "preset": "veryfast"}
            self.audio = None
            if audio:
                self.audio = self.container.add_stream("aac", rate=sample_rate)
                self.audio.layout = "mono"
                self.audio.time_base = Fraction(1, sample_rate)
            self.container.start_encoding()  # opens the file now: a place it cannot be written fails here
        except Exception as err:
            self.container.close()
            self.partial.unlink(missing_ok=True)
            if isinstance(err, (OSError, av.FFmpegError)):
                raise ValueError(f"cannot write {self.path} ({err}); choose a writable place") from err
            raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def duration(self) -> float:
        return self.frames_written / self.fps

    def write_frames(self, frames: np.ndarray) -> None:
        """frames (n, H, W, 3) uint8 RGB, resized to the output size when needed."""
        import av

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
        for image in frames:
            if image.shape[:2] != (self.height, self.width):
                image = np.asarray(Image.fromarray(image).resize((self.width, self.height), Image.Resampling.BICUBIC))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = Fraction(1, self.fps)
            self.container.mux(self.video.encode(frame))
            self.frames_written += 1
        self._drain_audio(self.frames_written * self.samples_per_frame)

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float32 samples at ``sample_rate`` (written once video frames cover them)."""
        if self.audio is None or samples.size == 0:
            return
        self._audio.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        self._audio_buffered += samples.size
        self._drain_audio(self.frames_written * self.samples_per_frame)

    def _drain_audio(self, until: int) -> None:
        import av

        n = min(until - self.audio_written, self._audio_buffered)
        if self.audio is None or n <= 0:
            return
        data = np.concatenate(self._audio)
        chunk, rest = data[:n], data[n:]
        self._audio, self._audio_buffered = ([rest] if rest.size else []), rest.size
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk[None]), format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self.audio_written
        frame.time_base = Fraction(1, self.sample_rate)
        self.container.mux(self.audio.encode(frame))
        self.audio_written += n

    def close(self) -> None:
        """Flush audio up to the video length (the rest is trimmed) and the encoders, then rename the file onto
        ``path`` (or remove it when it has no frames); idempotent."""

        if self._closed:
            return
        self._closed = True
        try:
            self._drain_audio(self.frames_written * self.samples_per_frame)
            self.container.mux(self.video.encode(None))
            if self.audio is not None:
                self.container.mux(self.audio.encode(None))
        finally:
            self.container.close()
        self.written = finish_output(self.partial, self.path, keep=self.frames_written > 0)


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float
    video_duration: float
    audio_duration: float | None
    audio_sample_rate: int | None
    video_codec: str
    audio_codec: str | None


def probe_video(path: str | Path) -> VideoInfo:
    """Decode every video frame of ``path`` (counting them) and read its audio stream's duration."""
    import av

    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        audio_duration = None
        if astream is not None and astream.duration is not None:
            audio_duration = float(astream.duration * astream.time_base)
        info = dict(width=vstream.codec_context.width, height=vstream.codec_context.height,
                    fps=float(vstream.average_rate or 0), video_codec=vstream.codec_context.name,
                    audio_codec=astream.codec_context.name if astream is not None else None,
                    audio_sample_rate=astream.codec_context.sample_rate if astream is not None else None)
        frames = sum(1 for _ in container.decode(vstream))
    return VideoInfo(frames=frames, video_duration=frames / info["fps"] if info["fps"] else math.nan,
                     audio_duration=audio_duration, **info)
