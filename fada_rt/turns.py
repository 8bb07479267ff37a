"""Speech waiting to be animated, as turns, handed out one video frame at a time (docs/calls.md).

A caller pushes PCM at any rate and in blocks of any size, as fast as its TTS produces it. Each push is
converted twice: to the model's rate (``AudioConfig.sample_rate``, for the audio features) and to the
output rate (the audio played with the frames). Pushes go into the open turn; ``end_turn`` closes it.
The resamplers' tails are flushed, and both streams are padded to a whole frame. So every turn fills a
whole number of frames in both domains, and the two never drift apart.

:meth:`SpeechQueue.take` hands out one frame: ``spf`` model samples, ``osp`` output samples and a
:class:`Slot` that says which turn the frame belongs to. :meth:`SpeechQueue.silence` hands out an idle
frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from fada_rt.media import PcmConverter


@dataclass(frozen=True, eq=False)
class Slot:
    """One video frame's place on the output timeline."""

    audio: np.ndarray  # (osp,) float32 at the output rate: what plays with the frame
    turn: int | None  # None: an idle frame
    first: bool = False  # the turn's first frame
    last: bool = False  # the turn's last frame (known once the turn was ended)
    arrival: float | None = None  # clock time the frame's audio was pushed (speech frames)


@dataclass
class _Turn:
    id: int
    model: PcmConverter
    out: PcmConverter
    model_buf: list[np.ndarray] = field(default_factory=list)
    out_buf: list[np.ndarray] = field(default_factory=list)
    model_len: int = 0
    out_len: int = 0
    arrivals: deque[tuple[int, float]] = field(default_factory=deque)  # (model samples pushed so far, time)
    ended: bool = False
    taken: int = 0  # frames handed out
    taken_model: int = 0  # model samples handed out (arrivals count from the turn's start)

    def append(self, model: np.ndarray, out: np.ndarray, now: float) -> None:
        if model.size:
            self.model_buf.append(model)
            self.model_len += model.size
        if out.size:
            self.out_buf.append(out)
            self.out_len += out.size
        self.arrivals.append((self.model_len + self.taken_model, now))

    def pop(self, buf: list[np.ndarray], n: int) -> np.ndarray:
        whole = np.concatenate(buf) if len(buf) > 1 else (buf[0] if buf else np.zeros(0, np.float32))
        head, rest = whole[:n], whole[n:]
        buf.clear()
        if rest.size:
            buf.append(rest)
        return head if head.size == n else np.concatenate([head, np.zeros(n - head.size, np.float32)])


class SpeechQueue:
    """Turns of pushed speech at the model rate and the output rate; see the module docstring."""

    def __init__(self, *, model_rate: int, out_rate: int, fps: int) -> None:
        if model_rate % fps or out_rate % fps:
            raise ValueError(f"the model rate ({model_rate} Hz) and the output audio rate ({out_rate} Hz) must be "
                             f"whole multiples of {fps} fps (e.g. 16000, 24000, 44100 or 48000)")
        self.model_rate, self.out_rate, self.fps = model_rate, out_rate, fps
        self.spf, self.osp = model_rate // fps, out_rate // fps
        self._turns: deque[_Turn] = deque()
        self._next_id = 1

    @property
    def open_turn(self) -> int | None:
        """The id of the turn pushes go to, or None (the next push opens one)."""
        return self._turns[-1].id if self._turns and not self._turns[-1].ended else None

    def push(self, pcm: np.ndarray, sample_rate: int, *, now: float) -> int:
        """Append PCM (any rate; see :func:`fada_rt.media.to_mono_float`) to the open turn; returns its id."""
        if not self._turns or self._turns[-1].ended:
            self._turns.append(_Turn(self._next_id, PcmConverter(rate=self.model_rate), PcmConverter(rate=self.out_rate)))
            self._next_id += 1
        turn = self._turns[-1]
        model = turn.model.convert(pcm, sample_rate)  # validates shape, dtype, finiteness and the rate
        turn.append(model, turn.out.convert(pcm, sample_rate), now)
        return turn.id

    def end_turn(self) -> int | None:
        """Close the open turn (its resamplers flushed, padded to a whole frame); returns its id, or None."""
        if self.open_turn is None:
            return None
        turn = self._turns[-1]
        turn.append(turn.model.flush(), turn.out.flush(), turn.arrivals[-1][1] if turn.arrivals else 0.0)
        frames = -(-(turn.taken_model + turn.model_len) // self.spf)  # ceil: the last frame is padded
        turn.model_len = max(turn.model_len, frames * self.spf - turn.taken_model)
        turn.out_len = frames * self.osp - turn.taken * self.osp  # what the turn's frames will take
        turn.ended = True
        return turn.id

    def clear(self) -> list[int]:
        """Drop every queued turn (an interrupt); returns the ids of those that had started or were open."""
        dropped = [t.id for t in self._turns]
        self._turns.clear()
        return dropped

    def frames_ready(self) -> int:
        """Speech frames :meth:`take` can hand out now (an open turn's only when both rates have a whole frame)."""
        total = 0
        for turn in self._turns:
            if turn.ended:
                total += turn.model_len // self.spf
            else:
                total += min(turn.model_len // self.spf, turn.out_len // self.osp)
                break
        return total

    def ended_frames(self) -> int:
        """Frames of ended turns not yet handed out: speech that will not grow, to be flushed."""
        return sum(t.model_len // self.spf for t in self._turns if t.ended)

    def pending_seconds(self) -> float:
        return sum(t.model_len for t in self._turns) / self.model_rate

    def take(self) -> tuple[np.ndarray, Slot] | None:
        """One speech frame: ``(model samples (spf,), slot)``, or None when no whole frame is there."""
        while self._turns and self._turns[0].ended and self._turns[0].model_len < self.spf:
            self._turns.popleft()  # an ended turn with nothing left
        if self.frames_ready() == 0:
            return None
        turn = self._turns[0]
        model = turn.pop(turn.model_buf, self.spf)
        out = turn.pop(turn.out_buf, self.osp)
        turn.model_len -= self.spf
        turn.out_len = max(0, turn.out_len - self.osp)
        centre = turn.taken_model + self.spf // 2
        turn.taken_model += self.spf
        arrival = next((t for end, t in turn.arrivals if end > centre), turn.arrivals[-1][1])
        while len(turn.arrivals) > 1 and turn.arrivals[0][0] <= turn.taken_model:
            turn.arrivals.popleft()
        first, turn.taken = turn.taken == 0, turn.taken + 1
        last = turn.ended and turn.model_len < self.spf
        if last:
            self._turns.popleft()
        return model, Slot(audio=out, turn=turn.id, first=first, last=last, arrival=arrival)

    def silence(self) -> tuple[np.ndarray, Slot]:
        """One idle frame: silence in both domains."""
        return np.zeros(self.spf, np.float32), Slot(audio=np.zeros(self.osp, np.float32), turn=None)
