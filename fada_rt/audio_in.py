"""Checks on audio where it enters: files as :func:`fada_rt.media.iter_audio` decodes them, arrays as
:func:`fada_rt.media.to_mono_float` (``StreamingAvatar.push_audio``) takes them.

* **Non-finite samples** (NaN, inf) are refused with a ValueError naming the file (or "the array") and the
  time of the first one, before the block holding it is handed on. Float PCM files (float wavs: the files
  that hold them in practice) are scanned whole first (:meth:`DecodeChecks.prescan`, a cheap read), so
  they are refused before the first block.
* **Levels beyond ±1**: decoded audio is clipped to [-1, 1] (the model's range, and what a player does); when
  a file decoded as float (a float wav, a lossy encode) goes beyond it, one warning gives the first such
  sample's time and the peak. Integer files are clipped without a word (only resampling overshoots them).
  Checks on a file are made on its mono audio at the output rate (a NaN's time is exact to the resampling
  filter's length, about a millisecond).
* **Array layout**: a 2-D array is ``(samples, channels)`` with 1 to :data:`MAX_CHANNELS` channels, whatever
  its length (a stream's last block may hold a few samples). A 2-D array with more than :data:`MAX_CHANNELS`
  columns is refused: ``(channels, samples)`` when it has at most that many rows (the message says ``pcm.T``),
  else not audio in a known layout.
* **Truncated files**: when decoding ends clearly short of the container's declared duration (under
  :data:`SHORT_FRACTION` of it and more than :data:`SHORT_SECONDS` short), or the file's last packet does not
  decode, one warning says so; the audio that decoded is used.

Warnings go to the ``fada_rt.media`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av

log = logging.getLogger("fada_rt.media")

MAX_CHANNELS = 8  # a 2-D array with more columns than this is not (samples, channels)
SHORT_FRACTION = 0.9  # decoded under this fraction of the declared duration ...
SHORT_SECONDS = 0.5  # ... and more than this many seconds short: the file is probably truncated
REPAIR_HINT = "repair or re-export the audio (e.g. as a 16-bit wav)"
_FLOAT_FORMATS = ("flt", "fltp", "dbl", "dblp")  # the decoders' float sample formats


def check_pcm(pcm: np.ndarray, *, sample_rate: int | None = None) -> np.ndarray:
    """``pcm`` as an array after the checks of the module docstring (layout, dtype, finite values)."""
    pcm = np.asarray(pcm)
    if sample_rate is not None and (not isinstance(sample_rate, int) or isinstance(sample_rate, bool)
                                    or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    if pcm.ndim not in (1, 2):
        raise ValueError(f"PCM must be (samples,) or (samples, channels), got shape {pcm.shape}")
    if pcm.ndim == 2:
        rows, cols = pcm.shape
        if cols == 0:
            raise ValueError(f"PCM (samples, channels) has no channels: got shape {pcm.shape}")
        if cols > MAX_CHANNELS and rows <= MAX_CHANNELS:
            raise ValueError(f"PCM looks like (channels, samples): got {pcm.shape}; pass (samples, channels), "
                             f"e.g. pcm.T")
        if cols > MAX_CHANNELS:
            raise ValueError(f"PCM must be (samples,) or (samples, channels) with 1 to {MAX_CHANNELS} channels, "
                             f"got shape {pcm.shape}")
    if pcm.dtype.kind == "f":
        _check_finite(pcm, sample_rate, "the array")
    elif pcm.dtype not in (np.int16, np.int32):
        raise ValueError(f"PCM must be float (in [-1, 1]), int16 or int32, got {pcm.dtype}")
    return pcm


def _check_finite(samples: np.ndarray, rate: int | None, name: str, *, offset: int = 0, index: bool = True) -> None:
    """Refuse non-finite values in (n,) or (n, channels) ``samples``; ``offset``: samples before these (for the
    time); ``index``: name the sample's index too."""
    finite = np.isfinite(samples)
    if finite.all():
        return
    first = offset + int(np.flatnonzero((~finite).any(axis=1) if finite.ndim == 2 else ~finite)[0])
    where = f"at sample {first}" if not rate else (f"at {first / rate:.3f} s (sample {first})" if index
                                                   else f"at {first / rate:.2f} s")
    raise ValueError(f"{name} has a NaN or infinite sample {where}; {REPAIR_HINT}")


def declared_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, *,
                      own: bool = False) -> float | None:
    """Seconds the container says the stream lasts (None when it does not say). ``own``: the stream's own
    duration only, or the container's when the stream is all it holds (a video may outlast its sound)."""
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and (not own or len(container.streams) == 1):
        return container.duration / av.time_base
    return None


class DecodeChecks:
    """One file's decode: :meth:`mono` gives its audio as checked mono float32 pieces at ``sample_rate``;
    :meth:`finish` at its end."""

    def __init__(self, path: str | Path, declared: float | None, *, sample_rate: int) -> None:
        self.path, self.declared, self.rate = path, declared, sample_rate
        self.samples = 0  # mono samples handed on so far, at ``sample_rate``
        self.float_source = False  # the decoder gives float samples (they can be non-finite or beyond ±1)
        self.clip_reported = False
        self.cut: str | None = None  # why the file's last packet did not decode

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    def mono(self, container: av.container.InputContainer, stream: av.audio.stream.AudioStream
             ) -> Iterator[np.ndarray]:
        """Decoded, resampled (libswresample) and down-mixed (channels averaged) pieces, each checked and clipped.

        The resampler gives packed float: PyAV 18 reads planar frames of 8 or more channels past their last
        plane (``to_ndarray`` segfaults)."""
        import av

        resampler = av.AudioResampler(format="flt", rate=self.rate)  # the layout is kept; averaged below
        for frame in self._frames(container, stream):
            for out in resampler.resample(frame):
                data, channels = out.to_ndarray().reshape(-1), out.layout.nb_channels  # packed: n * channels
                yield self._check(data.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else data)

    def prescan(self) -> None:
        """Decode the whole file once with the checks, so a NaN/inf sample anywhere is refused before anything is
        handed on (the clipping warning is not given twice)."""
        import av

        scan = DecodeChecks(self.path, None, sample_rate=self.rate)
        with av.open(str(self.path)) as container:
            for _ in scan.mono(container, container.streams.audio[0]):
                pass
        self.clip_reported = scan.clip_reported

    def _frames(self, container: av.container.InputContainer, stream: av.audio.stream.AudioStream
                ) -> Iterator[av.AudioFrame | None]:
        """Decoded frames, then None (the resampler's flush). A packet that does not decode raises
        (``av.FFmpegError``) unless it is the file's last: a cut file, which :meth:`finish` reports."""
        import av

        packets = container.demux(stream)
        packet = next(packets, None)
        while packet is not None:
            following = next(packets, None)
            try:
                decoded = packet.decode()
            except av.FFmpegError as err:
                if following is not None and following.size > 0:  # more data follows: corrupt, not cut
                    raise
                self.cut = str(err)
                break
            for frame in decoded:
                self.float_source = self.float_source or frame.format.name in _FLOAT_FORMATS
                yield frame
            packet = following
        yield None

    def _check(self, mono: np.ndarray) -> np.ndarray:
        start, self.samples = self.samples, self.samples + mono.size
        if not self.float_source:  # integer samples: finite; beyond ±1 only by resampling overshoot
            return np.clip(mono, -1.0, 1.0, out=mono)
        _check_finite(mono, self.rate, str(self.path), offset=start, index=False)
        peak = float(np.abs(mono).max(initial=0.0))
        if peak > 1.0 and not self.clip_reported:
            self.clip_reported = True
            first = start + int(np.flatnonzero(np.abs(mono) > 1.0)[0])
            log.warning("%s has samples beyond ±1 (the first at %.2f s, reaching %.2f); they are clipped to "
                        "[-1, 1] (lower the level when exporting to avoid it)", self.path, first / self.rate, peak)
        return np.clip(mono, -1.0, 1.0, out=mono)

    def finish(self) -> None:
        """Warn (once) when the file ended short of its declared duration or in a packet that does not decode."""
        decoded, declared = self.seconds, self.declared
        short = (declared is not None and decoded < SHORT_FRACTION * declared
                 and declared - decoded > SHORT_SECONDS)
        if not short and self.cut is None:
            return
        facts = []
        if short:
            facts.append(f"decoded {decoded:.2f} s of the {declared:.2f} s its container declares")
        if self.cut is not None:
            facts.append(f"its last packet does not decode ({self.cut})")
        log.warning("%s: %s: the file is probably truncated or damaged (re-export or re-download it); the %.2f s "
                    "that decoded are used", self.path, " and ".join(facts), decoded)
