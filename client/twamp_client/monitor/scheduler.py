"""When each target runs: plain arithmetic on the monotonic clock, no I/O.

A target's first run starts after a random offset within its period (so that 500 targets with the
same ``every`` do not start together); its runs start on the boundaries ``first + k * every``; a
run never overlaps the next run of the same target; a run that ends after its next boundary is an
overrun, and the next run starts at the first boundary after it ended.
"""

from __future__ import annotations

import dataclasses
import math
import random

from .config import TargetConfig


@dataclasses.dataclass(slots=True)
class Slot:
    """One target's place in the schedule."""

    config: TargetConfig
    #: Monotonic seconds of boundary 0.
    anchor: float
    #: When the next run is due (monotonic seconds).
    due: float
    #: Start time of the run in progress, or None.
    running_since: float | None = None
    #: The engine's id of the run in progress (to cancel it), or None.
    run_id: int | None = None
    runs: int = 0

    def start(self, now: float) -> None:
        self.running_since = now
        self.runs += 1

    def finish(self, now: float) -> bool:
        """The run in progress ended at ``now``; True when it overran its next boundary."""
        every = self.config.every
        started = self.running_since if self.running_since is not None else now
        self.running_since = self.run_id = None
        following = self.anchor + (math.floor((started - self.anchor) / every + 1e-9) + 1) * every
        if now <= following:
            self.due = following
            return False
        self.due = self.anchor + math.ceil((now - self.anchor) / every) * every
        return True


def first_slot(config: TargetConfig, now: float, rng: random.Random) -> Slot:
    """A new target's slot: its first run a random fraction of its period from ``now``."""
    start = now + rng.uniform(0, config.every)
    return Slot(config, anchor=start, due=start)


def due(slots: dict[str, Slot], now: float) -> list[str]:
    """The names of the targets that should start now (due and not running)."""
    return [name for name, slot in slots.items() if slot.running_since is None and slot.due <= now]


def next_wake(slots: dict[str, Slot]) -> float | None:
    """The earliest due time of a target that is not running."""
    times = [slot.due for slot in slots.values() if slot.running_since is None]
    return min(times) if times else None
