"""Key derivations, all clients together: one thread, a short queue and a share of one core.

Each authenticated set-up costs a PBKDF2 derivation (milliseconds of CPU).  The backoff in
:mod:`twamp_server.backoff` stops a few addresses or networks from repeating failures, but a
flood from many networks pays one derivation per network; without a global cap it would queue
without bound and keep a core busy.  So derivations run on one thread of their own (never the
event loop or the reflector thread), at most ``waiting`` of them are queued or running, and the
CPU time they spent is paid back at ``share`` of one core: beyond a ``burst`` of debt a new
set-up is refused (Accept 5) without deriving anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import TypeVar

#: Derivations queued or running at most: an honest set-up then waits a few derivations at
#: most, never behind a flood.
WAITING = 4
#: Share of one core derivations may take in the long run.
SHARE = 0.5
#: CPU seconds of derivations allowed in a burst above that share.
BURST = 0.25

_T = TypeVar("_T")


class Derivations:
    """The gate every key derivation of the control server passes."""

    def __init__(
        self, *, waiting: int = WAITING, share: float = SHARE, burst: float = BURST
    ) -> None:
        self.waiting = waiting
        self.share = share
        self.burst = burst
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kdf")
        self._pending = 0
        #: CPU seconds spent and not yet paid back at ``share``, as of ``_updated``.
        self._debt = 0.0
        self._updated = time.monotonic()

    def refusal(self, now: float) -> str | None:
        """Why a derivation cannot be started now, or None when it can."""
        if now > self._updated:
            self._debt = max(0.0, self._debt - (now - self._updated) * self.share)
            self._updated = now
        if self._pending >= self.waiting:
            return f"{self.waiting} key derivations already waiting"
        if self._debt > self.burst:
            return f"key derivations above {self.share:.0%} of a core"
        return None

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        """``function(*args)`` on the derivation thread; its CPU time is charged."""
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            result, cost = await loop.run_in_executor(self._executor, _timed, function, *args)
        finally:
            self._pending -= 1
        self._debt += cost
        return result


def _timed(function: Callable[..., _T], *args: object) -> tuple[_T, float]:
    """``function(*args)`` and the CPU seconds this thread spent on it."""
    started = time.thread_time()
    result = function(*args)
    return result, time.thread_time() - started
