"""NTP 64-bit timestamps and the Error Estimate (RFC 4656 §4.1.2).

Times inside the library are integers: nanoseconds since the Unix epoch (what
``time.time_ns()`` and the kernel's SO_TIMESTAMPNS give).  On the wire a timestamp is 32 bits of
seconds since 1900-01-01 and 32 bits of binary fraction.  Converting through floats would lose
about 240 ns; the integer arithmetic here round-trips every nanosecond exactly, because the wire
fraction (2**-32 s, 0.23 ns) is finer than a nanosecond.
"""

from __future__ import annotations

import dataclasses

#: Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch).
NTP_UNIX_OFFSET = 2_208_988_800
_NS = 1_000_000_000
_FRAC = 1 << 32
_ERA = 1 << 32
#: NTP seconds below this value are read as belonging to era 1 (after 2036-02-07): a 32-bit
#: seconds field covers 136 years, and this pivot (1968-01-20) keeps 1968–2104 unambiguous.
_ERA_PIVOT = 1 << 31
#: The Error Estimate's S bit: the clock is synchronised to UTC.
SYNCHRONIZED_BIT = 0x8000


def ns_to_ntp(unix_ns: int) -> int:
    """Unix nanoseconds -> 64-bit NTP timestamp, rounding to the nearest fraction."""
    seconds, rest = divmod(unix_ns, _NS)
    # Never rounds up to 2**32: the largest remainder, 999999999 ns, gives 0xFFFFFFFC.
    fraction = (rest * _FRAC + _NS // 2) // _NS
    return (((seconds + NTP_UNIX_OFFSET) % _ERA) << 32) | fraction


def ntp_to_ns(ntp: int) -> int:
    """64-bit NTP timestamp -> Unix nanoseconds (nearest), resolving the 2036 era wrap."""
    seconds = ntp >> 32
    if seconds < _ERA_PIVOT:
        seconds += _ERA
    return (seconds - NTP_UNIX_OFFSET) * _NS + ((ntp & (_FRAC - 1)) * _NS + _FRAC // 2) // _FRAC


def ptp_to_ns(ptp: int) -> int:
    """PTPv2 truncated timestamp (32 bits of seconds, 32 of nanoseconds; RFC 8186) -> Unix ns.

    The PTP epoch is read as the Unix epoch and the TAI-UTC offset is not applied: what RFC 8186
    senders put on the wire in practice.  The 2106 wrap of 32-bit seconds is not resolved.
    """
    return (ptp >> 32) * _NS + (ptp & (_FRAC - 1))


def ns_to_ptp(unix_ns: int) -> int:
    """Unix nanoseconds -> PTPv2 truncated timestamp (the inverse of :func:`ptp_to_ns`)."""
    seconds, rest = divmod(unix_ns, _NS)
    return ((seconds % _ERA) << 32) | rest


def ntp_interval_to_ns(ntp: int) -> int:
    """A duration in timestamp format (e.g. Request-TW-Session Timeout) -> nanoseconds."""
    return (ntp >> 32) * _NS + ((ntp & (_FRAC - 1)) * _NS + _FRAC // 2) // _FRAC


def ns_to_ntp_interval(duration_ns: int) -> int:
    """A non-negative duration in nanoseconds -> timestamp format (seconds.fraction)."""
    if duration_ns < 0:
        raise ValueError("a duration cannot be negative")
    seconds, rest = divmod(duration_ns, _NS)
    fraction = (rest * _FRAC + _NS // 2) // _NS
    if seconds >= _ERA:
        raise ValueError("duration does not fit 32 bits of seconds")
    return (seconds << 32) | fraction


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """The 16-bit Error Estimate: ``S(1) Z(1) Scale(6) Multiplier(8)``.

    The error is ``multiplier * 2**(scale - 32)`` seconds.  ``synchronized`` (S) says the clock
    is synchronised to UTC by an external source; ``ptp`` (Z, RFC 8186) says timestamps are
    PTP rather than NTP format, which we never send.
    """

    synchronized: bool
    scale: int
    multiplier: int
    ptp: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.scale < 64:
            raise ValueError(f"scale {self.scale} is outside 0..63")
        if not 0 <= self.multiplier < 256:
            raise ValueError(f"multiplier {self.multiplier} is outside 0..255")

    @property
    def valid(self) -> bool:
        """RFC 4656 §4.1.2: Multiplier MUST NOT be zero; such a packet SHOULD be discarded."""
        return self.multiplier != 0

    def to_wire(self) -> int:
        """The 16-bit field value."""
        return (
            (SYNCHRONIZED_BIT if self.synchronized else 0)
            | (0x4000 if self.ptp else 0)
            | (self.scale << 8)
            | self.multiplier
        )

    @staticmethod
    def synchronized_on_wire(value: int) -> bool:
        """The S bit of a 16-bit field value, without decoding the rest (a per-packet check)."""
        return bool(value & SYNCHRONIZED_BIT)

    @classmethod
    def from_wire(cls, value: int) -> ErrorEstimate:
        """Decode the 16-bit field value."""
        return cls(
            synchronized=cls.synchronized_on_wire(value),
            ptp=bool(value & 0x4000),
            scale=(value >> 8) & 0x3F,
            multiplier=value & 0xFF,
        )

    @property
    def error_ns(self) -> int:
        """The error in nanoseconds, rounded up so the estimate is never understated."""
        numerator = self.multiplier * _NS
        shift = 32 - self.scale
        if shift >= 0:
            return -((-numerator) >> shift)
        return numerator << -shift

    @classmethod
    def from_error_ns(cls, error_ns: int, *, synchronized: bool) -> ErrorEstimate:
        """The smallest estimate that is at least ``error_ns`` (never claims better accuracy).

        A zero or negative error still yields Multiplier 1 (RFC 4656 forbids 0).
        """
        error_ns = max(error_ns, 1)
        for scale in range(64):
            # multiplier * 2**(scale-32) s >= error  <=>  multiplier >= error * 2**(32-scale) / 1e9
            if scale <= 32:
                multiplier = -((-(error_ns << (32 - scale))) // _NS)
            else:
                multiplier = -((-error_ns) // (_NS << (scale - 32)))
            if multiplier < 256:
                return cls(synchronized=synchronized, scale=scale, multiplier=max(multiplier, 1))
        return cls(synchronized=synchronized, scale=63, multiplier=255)
