"""fada_rt.emission: the holding output clock and the turn events, against hand-worked sequences."""

from __future__ import annotations

import numpy as np
import pytest

from fada_rt.emission import AvatarEvent, OutputClock, TurnEvents
from fada_rt.turns import Slot

FPS = 25
SLOT = 1 / FPS


def test_the_clock_starts_with_the_first_frame_and_skips_only_slots_missed_by_more_than_half() -> None:
    now = [100.0]
    clock = OutputClock(FPS, lambda: now[0])
    assert clock.due(5.0) == 5.0 and clock.hold(5.0) == 0  # not started: due now, nothing to skip
    clock.start()
    clock.start()  # a second start does not move t0
    assert clock.t0 == 100.0 and clock.pts == 0.0
    clock.tick()
    assert clock.due(0.0) == pytest.approx(100.0 + SLOT) and clock.pts == pytest.approx(SLOT)
    assert clock.hold(100.0 + SLOT + 0.49 * SLOT) == 0  # under half a slot late: it keeps its slot
    assert clock.hold(100.0 + SLOT + 0.51 * SLOT) == 1  # over: the next slot, due half a slot from now
    assert clock.slot == 2 and clock.due(0.0) == pytest.approx(100.0 + 2 * SLOT)
    assert clock.hold(100.0 + 2 * SLOT + 2.6 * SLOT) == 3  # 2.6 slots late: slots 2, 3, 4 go by, slot 5 in 0.4
    assert (clock.slot, clock.missed) == (5, 4) and clock.pts == pytest.approx(5 * SLOT)


def slot(turn: int | None, *, first: bool = False, last: bool = False) -> Slot:
    return Slot(np.zeros(640, np.float32), turn, first=first, last=last, arrival=None if turn is None else 0.0)


def test_turn_events_ride_on_the_frames_around_a_turn() -> None:
    events = TurnEvents(FPS)
    frames = [slot(None), slot(1, first=True), slot(None), slot(1), slot(1, last=True), slot(None), slot(None)]
    got = [events.on_frame(s, k * SLOT) for k, s in enumerate(frames)]
    assert got[0] == () and got[2] == () and got[3] == () and got[6] == ()  # an idle frame inside a turn: a pause
    assert got[1] == (AvatarEvent("speaking_started", 1, SLOT, 0.0),)
    assert got[5] == (AvatarEvent("speaking_finished", 1, pytest.approx(5 * SLOT), pytest.approx(3 * SLOT)),)
    assert events.turn is None and events.played == 0


def test_a_new_turn_ends_the_open_one_and_an_interrupt_rides_on_the_next_frame() -> None:
    events = TurnEvents(FPS)
    events.on_frame(slot(1, first=True), 0.0)
    events.on_frame(slot(1), SLOT)
    started_two = events.on_frame(slot(2, first=True), 2 * SLOT)  # turn 1 was never ended, then more came
    assert [e.kind for e in started_two] == ["speaking_finished", "speaking_started"]
    assert (started_two[0].turn, started_two[0].played) == (1, pytest.approx(2 * SLOT))
    events.on_frame(slot(2), 3 * SLOT)
    events.interrupt(2, 4 * SLOT)
    assert events.turn is None
    assert events.on_frame(slot(None), 4 * SLOT) == (AvatarEvent("interrupted", 2, 4 * SLOT, pytest.approx(2 * SLOT)),)
    assert events.on_frame(slot(None), 5 * SLOT) == ()
