"""When a Session-Sender sends and how much padding each packet carries.

RFC 4656 §3.5 names two schedules, periodic and Poisson (exponential gaps); traffic models that
mimic voice or bulk data add packets of changing size on a fixed gap (IMIX).  A schedule is
asked once per packet, in sequence order, for that packet's padding and for the gap to the next
one: integer nanoseconds, so a long run never drifts.  Randomness comes from a seeded
``random.Random`` the caller owns, never from a global.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Protocol


class Schedule(Protocol):
    """What the Session-Sender asks of a schedule."""

    #: The most padding any packet gets: the session's padding octets are drawn this long.
    @property
    def max_padding(self) -> int: ...

    #: The padding of each size the schedule sends, in the order of a cycle of them (one for
    #: a schedule of one size): what the session's byte counts are made of.
    @property
    def paddings(self) -> tuple[int, ...]: ...

    def padding(self, seq: int) -> int:
        """Padding octets of packet ``seq``."""
        ...

    def gap(self, seq: int) -> int:
        """Nanoseconds from packet ``seq`` to packet ``seq + 1``; called once per packet, in
        order."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Periodic:
    """A fixed gap and a fixed size: the classic ``-i`` schedule."""

    interval_ns: int
    padding_octets: int

    def __post_init__(self) -> None:
        if self.interval_ns < 1:
            raise ValueError(f"the interval must be at least 1 ns, not {self.interval_ns}")

    @property
    def max_padding(self) -> int:
        return self.padding_octets

    @property
    def paddings(self) -> tuple[int, ...]:
        return (self.padding_octets,)

    def padding(self, seq: int) -> int:
        return self.padding_octets

    def gap(self, seq: int) -> int:
        return self.interval_ns


@dataclasses.dataclass(slots=True)
class Poisson:
    """Exponential gaps of mean ``mean_ns`` (RFC 2330 §11.1.1, RFC 4656 §3.5 slot type 0)."""

    mean_ns: int
    padding_octets: int
    rng: random.Random

    def __post_init__(self) -> None:
        if self.mean_ns < 1:
            raise ValueError(f"the mean gap must be at least 1 ns, not {self.mean_ns}")

    @property
    def max_padding(self) -> int:
        return self.padding_octets

    @property
    def paddings(self) -> tuple[int, ...]:
        return (self.padding_octets,)

    def padding(self, seq: int) -> int:
        return self.padding_octets

    def gap(self, seq: int) -> int:
        return max(1, round(self.rng.expovariate(1 / self.mean_ns)))


@dataclasses.dataclass(frozen=True, slots=True)
class Cycle:
    """Packet sizes repeating in a cycle on a fixed gap (an IMIX mix)."""

    paddings: tuple[int, ...]
    interval_ns: int

    def __post_init__(self) -> None:
        if not self.paddings:
            raise ValueError("a cycle needs at least one packet size")
        if self.interval_ns < 1:
            raise ValueError(f"the interval must be at least 1 ns, not {self.interval_ns}")

    @property
    def max_padding(self) -> int:
        return max(self.paddings)

    def padding(self, seq: int) -> int:
        return self.paddings[seq % len(self.paddings)]

    def gap(self, seq: int) -> int:
        return self.interval_ns
