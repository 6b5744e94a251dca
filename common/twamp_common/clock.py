"""The host clock's synchronisation state, read from the kernel with adjtimex(2).

This is the one module of the library that asks the operating system anything, and only the
server and client drivers call it: the protocol modules take times and error estimates as
arguments.  It exists so that the Error Estimate on the wire says honestly how good our clock is:
S = 1 only when the kernel says an external source (NTP, chrony, PTP) keeps it synchronised, and
the error from the kernel's maximum error bound.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools

from .timestamp import ErrorEstimate

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
#: What we claim when the kernel cannot be asked: unsynchronised, error one second.
_UNKNOWN_ERROR_NS = 1_000_000_000


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (Linux, all 64-bit and 32-bit ABIs with long)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class ClockState:
    """What the kernel says of the system clock."""

    #: An external source disciplines the clock (STA_UNSYNC clear and no TIME_ERROR state).
    synchronized: bool
    #: The kernel's maximum error bound, in nanoseconds.
    max_error_ns: int

    def error_estimate(self) -> ErrorEstimate:
        """The Error Estimate to put on the wire for timestamps taken from this clock."""
        return ErrorEstimate.from_error_ns(self.max_error_ns, synchronized=self.synchronized)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once: finding it runs ``ldconfig`` in a subprocess."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def read_clock_state() -> ClockState:
    """Ask the kernel (read-only adjtimex, allowed to any user) for the clock's state."""
    try:
        libc = _libc()
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return ClockState(synchronized=False, max_error_ns=_UNKNOWN_ERROR_NS)
    if state < 0:
        return ClockState(synchronized=False, max_error_ns=_UNKNOWN_ERROR_NS)
    synchronized = state != _TIME_ERROR and not timex.status & _STA_UNSYNC
    return ClockState(synchronized=synchronized, max_error_ns=max(timex.maxerror, 1) * 1000)
