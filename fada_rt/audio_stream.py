"""Incremental audio features: the windowed features of whole frames as soon as they are exact (docs/design.md §4).

:class:`AudioFeatureStream` turns pushed mono blocks (at the model's ``AudioConfig.sample_rate``) into the
windowed features of whole frames as soon as they are exact. Frame ``k`` covers samples ``[spf k, spf (k+1))``
(``spf = samples_per_frame``, 640 at 16 kHz and 25 fps); its window reads frames ``k-w .. k+w`` (w = 2) and
each of those reads ``left`` samples before and ``right`` samples after its span (mel: the STFT half window
minus half a hop, 120 samples each side at 16 kHz). So frame ``k`` is ready once samples up to
``spf (k + w + 1) + right`` have arrived: the look-ahead is ``w`` frames plus ``right`` samples (87.5 ms at
25 fps). Features are computed by the backend on a segment that starts ``w + ceil(left / spf)`` frames before
the chunk, so every value used is computed from the same samples as offline: for the ``mel`` front-end the
streamed features equal :meth:`AvatarPipeline.audio_windows` on the whole clip (``tests/test_streaming.py`` states the
tolerance). wav2vec2 has a global receptive field: with its bounded context (2 s left, 0.2 s
right) the streamed features approximate the offline ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fada_rt.config import AudioConfig


@dataclass(frozen=True)
class FeatureContext:
    """Samples outside a frame's own span that its (unwindowed) features read."""

    left: int
    right: int
    exact: bool  # streamed features equal the offline ones (bounded receptive field)

    @classmethod
    def for_config(cls, audio: AudioConfig) -> FeatureContext:
        if audio.kind == "mel":
            left = audio.n_fft // 2 - audio.hop_length // 2  # MelFrontend.left_pad
            return cls(left=left, right=audio.n_fft - audio.hop_length - left, exact=True)
        return cls(left=2 * audio.sample_rate, right=audio.sample_rate // 5, exact=False)


class AudioFeatureStream:
    """Windowed features ``(1, n, 2w+1, L, D)`` of consecutive frames from pushed audio blocks.

    ``extract`` is the backend's offline feature function ``(1, S) -> (1, T, 2w+1, L, D)``.
    Memory is bounded: samples older than the context of the next frame are dropped.
    """

    def __init__(self, extract: Callable[[Tensor], Tensor], audio: AudioConfig,
                 context: FeatureContext | None = None, *, lookahead: int | None = None) -> None:
        """``lookahead``: frames of audio after a frame that must have arrived before it is ready, 0..w (None: w,
        every feature exact). With fewer, the window's later frames are computed from the audio there is, as if
        the clip ended there (offline, :func:`streamed_windows`), trading their accuracy for latency."""
        self.extract = extract
        self.spf = audio.samples_per_frame
        self.window = audio.window
        self.lookahead_frames = audio.window if lookahead is None else lookahead
        if not (isinstance(self.lookahead_frames, int) and 0 <= self.lookahead_frames <= audio.window):
            raise ValueError(f"lookahead must be 0..{audio.window} frames (the audio window's half width), "
                             f"got {lookahead!r}")
        self.context = context if context is not None else FeatureContext.for_config(audio)
        self.left_frames = math.ceil(self.context.left / self.spf)
        self.total = 0  # samples pushed
        self.finished = False
        self.next_frame = 0
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # global index of _buf[0]
        self.max_buffered = 0

    @property
    def buffered(self) -> int:
        return self._buf.shape[0]

    @property
    def total_frames(self) -> int | None:
        """ceil(S / samples_per_frame) once the stream is finished; None before."""
        return math.ceil(self.total / self.spf) if self.finished else None

    @property
    def lookahead(self) -> int:
        """Samples needed after a frame's end before it is ready (exact features: ``w`` frames + the STFT's right
        context)."""
        return self.lookahead_frames * self.spf + self.context.right

    @property
    def ready(self) -> int:
        """Frames whose features can be popped now."""
        if self.finished:
            return self.total_frames - self.next_frame
        exact_end = (self.total - self.context.right) // self.spf - self.lookahead_frames  # frames k < exact_end
        return max(0, exact_end - self.next_frame)

    @property
    def done(self) -> bool:
        return self.finished and self.next_frame >= self.total_frames

    def push(self, samples: np.ndarray) -> None:
        """Append mono float32 samples at the model's sample rate."""
        if self.finished:
            raise RuntimeError("audio pushed after the stream was finished")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._buf = np.concatenate([self._buf, samples])
            self.total += samples.size
            self.max_buffered = max(self.max_buffered, self.buffered)

    def finish(self) -> None:
        """No more audio: the remaining frames (zero-padded at the end, as offline) become ready."""
        self.finished = True

    def pop(self, n: int) -> Tensor:
        """Features of the next ``n`` frames, ``(1, n, 2w+1, L, D)``."""
        if not 1 <= n <= self.ready:
            raise ValueError(f"asked for {n} frames, {self.ready} are ready")
        k0, k1 = self.next_frame, self.next_frame + n
        first = max(0, k0 - self.window - self.left_frames)  # segment start frame
        end = min(self.total, (k1 + self.window) * self.spf + self.context.right)
        segment = self._buf[first * self.spf - self._buf_start:end - self._buf_start]
        feats = self.extract(torch.from_numpy(segment.copy())[None])  # (1, T_seg, 2w+1, L, D)
        out = feats[:, k0 - first:k1 - first].float()
        self._advance(k1)
        return out

    def truncate(self) -> None:
        """Forget the audio pushed for frames not yet popped (an interrupt): the next push continues at
        ``next_frame``. The context before it stays, so the next frames' features see what came before."""
        end = self.next_frame * self.spf
        self._buf = self._buf[: max(0, end - self._buf_start)].copy()
        self.total = end
        self.finished = False

    def skip(self, n: int) -> None:
        """Drop the next ``n`` ready frames without computing them."""
        if not 0 <= n <= self.ready:
            raise ValueError(f"cannot skip {n} frames, {self.ready} are ready")
        self._advance(self.next_frame + n)

    def _advance(self, frame: int) -> None:
        self.next_frame = frame
        keep_from = max(0, frame - self.window - self.left_frames) * self.spf
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:].copy()
            self._buf_start = keep_from


def streamed_windows(extract: Callable[[Tensor], Tensor], wave: np.ndarray, audio: AudioConfig, *,
                     lookahead: int) -> Tensor:
    """The windowed features ``(1, T, 2w+1, L, D)`` a live run with ``lookahead`` frames gets for the clip ``wave``:
    the audio arrives frame by frame and each frame is taken as soon as it is ready (for lookahead = w they equal
    the offline features)."""
    stream = AudioFeatureStream(extract, audio, lookahead=lookahead)
    spf, out = audio.samples_per_frame, []
    for start in range(0, len(wave), spf):
        stream.push(wave[start : start + spf])
        while stream.ready:
            out.append(stream.pop(1))
    stream.finish()
    while stream.ready:
        out.append(stream.pop(1))
    return torch.cat(out, dim=1)
