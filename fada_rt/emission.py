"""What a frame leaving :class:`~fada_rt.api.StreamingAvatar` is stamped with (docs/calls.md): its slot on the
output clock and the turn events it carries.

**The output clock** (:class:`OutputClock`): slot ``k`` is due at ``t0 + k / fps``, ``t0`` being when the first
frame left, and a frame's pts is ``k / fps``. In realtime mode the clock *holds*: a frame ready more than half
a slot after its time takes the next slot not yet half gone, the slots that went by stay empty (its pts skips
them; :attr:`OutputClock.missed` counts them), so a frame leaves within half a slot of its time and the pictures
never trail the clock.

**Turn events** (:class:`TurnEvents`): ``speaking_started`` rides on a turn's first frame; ``speaking_finished``
on the frame after its last (known once the turn was ended), or on the first frame of a turn that began before
the last one's end was known; ``interrupted`` on the frame after a barge-in. Idle frames inside a turn whose
audio came late are a pause, not an end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fada_rt.turns import Slot

EventKind = Literal["speaking_started", "speaking_finished", "interrupted"]


@dataclass(frozen=True)
class AvatarEvent:
    kind: EventKind
    turn: int  # 1, 2, ... in push order
    pts: float  # output time of the frame that carries the event
    played: float  # seconds of the turn's speech played before this frame


class OutputClock:
    """Slots of ``1 / fps`` on ``clock``, started by the first frame out (realtime mode)."""

    def __init__(self, fps: int, clock: Callable[[], float]) -> None:
        self.fps, self.clock = fps, clock
        self.t0: float | None = None  # when the first frame left
        self.slot = 0  # the next frame's slot: its index, and its pts times fps
        self.missed = 0  # slots that went by empty

    @property
    def pts(self) -> float:
        """The next frame's output time, seconds."""
        return self.slot / self.fps

    def due(self, now: float) -> float:
        """When the next frame is due (now, before the first)."""
        return now if self.t0 is None else self.t0 + self.slot / self.fps

    def hold(self, now: float) -> int:
        """Skip the slots a frame ready at ``now`` has missed (more than half a slot late); how many."""
        if self.t0 is None:
            return 0
        late = (now - self.due(now)) * self.fps  # slots
        missed = math.ceil(late - 0.5) if late > 0.5 else 0
        self.slot += missed
        self.missed += missed
        return missed

    def start(self) -> None:
        """The first frame leaves now: the clock starts (later calls do nothing)."""
        if self.t0 is None:
            self.t0 = self.clock()

    def tick(self) -> None:
        """A frame left in the current slot."""
        self.slot += 1


class TurnEvents:
    """The turn being played and the events for the next frames out."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.turn: int | None = None  # the turn being played
        self.played = 0  # its frames out
        self._pending: list[AvatarEvent] = []  # for the next frame out
        self._finished: tuple[int, float, float] | None = None  # (turn, pts, played) for the next frame out

    def on_frame(self, slot: Slot, pts: float) -> tuple[AvatarEvent, ...]:
        """The events of the frame of ``slot`` leaving at ``pts``; it counts as played."""
        events, self._pending = self._pending, []
        if self._finished is not None:
            events.append(AvatarEvent("speaking_finished", *self._finished))
            self._finished = None
        if slot.turn is not None and slot.turn != self.turn:
            if self.turn is not None:  # a new turn before the last one's end was known (not ended, then more)
                events.append(AvatarEvent("speaking_finished", self.turn, pts, self.played / self.fps))
            events.append(AvatarEvent("speaking_started", slot.turn, pts, 0.0))
            self.turn, self.played = slot.turn, 0
        if slot.turn is not None:
            self.played += 1
            if slot.last:
                self._finished = (slot.turn, pts + 1.0 / self.fps, self.played / self.fps)
                self.turn, self.played = None, 0
        return tuple(events)

    def interrupt(self, turn: int, pts: float) -> None:
        """Barge-in during ``turn``: the next frame out carries ``interrupted``; no turn is being played."""
        self._pending.append(AvatarEvent("interrupted", turn, pts, self.played / self.fps))
        self.turn, self.played, self._finished = None, 0, None
