"""A monotonic timer with nanosecond resolution that ``epoll`` can wait on (Linux timerfd).

Why not ``epoll.poll(timeout)``: Python passes the timeout to ``epoll_wait`` in whole
milliseconds, rounded up, so every wake-up would be up to 1 ms late; a timerfd armed at an
absolute CLOCK_MONOTONIC instant fires within the kernel's timer slack (tens of µs).  Python
exposes timerfd only from 3.13, so this calls libc directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

_CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
# timerfd_settime has no argtypes on purpose: it is called about once per wake-up, and checking
# them costs a third of the call.  Its arguments (two Python ints, a ctypes pointer and None)
# are passed as the C int, int, pointer and NULL it takes without them.


class Timer:
    """One timerfd: :meth:`arm` at an absolute monotonic time, readable when it has fired."""

    def __init__(self) -> None:
        fd = _libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self._fd: int = fd
        self._spec = _Itimerspec()
        self._pointer = ctypes.pointer(self._spec)
        self.armed_at: int | None = None
        #: Whether it has fired and its expiry count is still unread (it is readable).
        self._expired = False

    def fileno(self) -> int:
        return self._fd

    def arm(self, at_ns: int) -> None:
        """Fire at monotonic ``at_ns`` (at once if it has passed).

        Arming also clears an expiry not yet read (timerfd_settime zeroes the count), so a
        timer re-armed after each wake-up is never read at all: see :meth:`fired`.
        """
        if at_ns == self.armed_at:
            return
        value = self._spec.it_value
        # 0 would disarm the timer: a time in the past fires at once, so 1 ns will do.
        value.tv_sec, value.tv_nsec = divmod(max(at_ns, 1), 1_000_000_000)
        if _libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, self._pointer, None) < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self.armed_at = at_ns
        self._expired = False

    def fired(self) -> None:
        """``epoll`` reported the timer readable: it is no longer armed.

        The expiry count is left unread, since the next :meth:`arm` clears it for free; a
        caller that will not arm again before waiting calls :meth:`acknowledge`, or the timer
        stays readable.
        """
        self._expired = True
        self.armed_at = None

    def acknowledge(self) -> None:
        """Read the expiry count if it has fired, so that the timer is no longer readable."""
        if not self._expired:
            return
        # A try costs less than contextlib.suppress.
        try:  # noqa: SIM105
            os.read(self._fd, 8)
        except BlockingIOError:
            pass
        self._expired = False
        self.armed_at = None

    def close(self) -> None:
        os.close(self._fd)
