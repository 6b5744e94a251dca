"""The monitor's schedule: random first offsets, period boundaries, overruns."""

from __future__ import annotations

import random

from twamp_client import Target, Test
from twamp_client.monitor.config import TargetConfig
from twamp_client.monitor.scheduler import due, first_slot, next_wake


def config(every: float) -> TargetConfig:
    return TargetConfig("t", Target("h"), Test(), every)


def test_first_runs_spread_over_the_period() -> None:
    rng = random.Random(1)
    starts = [first_slot(config(60), 1000.0, rng).due for _ in range(500)]
    assert all(1000.0 <= start <= 1060.0 for start in starts)
    # Spread over the minute, not bunched: every 6-second tenth of it gets some.
    assert len({int((start - 1000) // 6) for start in starts}) == 10


def test_a_run_within_its_period_keeps_the_grid() -> None:
    slot = first_slot(config(10), 0.0, random.Random(2))
    anchor = slot.anchor
    slot.start(anchor + 0.001)
    assert due({"t": slot}, anchor + 5) == []  # running: never started twice
    assert next_wake({"t": slot}) is None
    assert slot.finish(anchor + 3.0) is False
    assert slot.due == anchor + 10
    slot.start(anchor + 10.002)
    assert slot.finish(anchor + 19.9) is False
    assert slot.due == anchor + 20


def test_an_overrun_waits_for_the_next_boundary() -> None:
    slot = first_slot(config(10), 0.0, random.Random(3))
    anchor = slot.anchor
    slot.start(anchor)
    assert slot.finish(anchor + 23.5) is True
    assert slot.due == anchor + 30
    assert due({"t": slot}, anchor + 29.9) == []
    assert due({"t": slot}, anchor + 30) == ["t"]
