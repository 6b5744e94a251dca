"""Key derivations, all clients together: one thread, a short queue and a share of one core.

Each authenticated set-up costs a PBKDF2 derivation (milliseconds of CPU).  The backoff in
:mod:`twamp_server.backoff` stops a few addresses or networks from repeating failures, but a
flood from many networks pays one derivation per network; without a global cap it would queue
without bound and keep a core busy.  So derivations run on one thread of their own (never the
event loop or the reflector thread), at most ``running`` of them are queued or running, and the
CPU time they spent is paid back at ``share`` of one core: beyond a ``burst`` of debt no new one
starts.

A set-up that finds no room waits for a turn, at most ``patience`` seconds among at most
``waiting`` others, and each turn that frees goes to one of those waiting at random.  Refused
at once instead, a client would get a turn only by being first when one frees, which a flood
that retries the moment it is refused always is; waiting at random, an honest client's odds
are one in the number waiting, and a flood's connections are held instead of retried.  Beyond
the waiting room, or after ``patience``, the set-up is refused (Accept 5) without deriving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Callable
from typing import TypeVar

from .config import MAX_CONNECTIONS_PER_NETWORK

#: Derivations queued or running at most: an admitted set-up then waits a few derivations at
#: most.
RUNNING = 4
#: Set-ups waiting for a turn at most; beyond them one is refused at once.  As many as one
#: network may hold connections by default: fewer, and a flood's connections beyond the room
#: would retry at once again, and take every place that frees.
WAITING = MAX_CONNECTIONS_PER_NETWORK
#: Seconds a set-up waits for its turn at most before it is refused: well within the
#: set-up deadline (idle_timeout, 30 s) and twamp-client's (10 s).
PATIENCE = 5.0
#: Share of one core derivations may take in the long run.
SHARE = 0.5
#: CPU seconds of derivations allowed in a burst above that share.
BURST = 0.25

_T = TypeVar("_T")


class DerivationRefusedError(Exception):
    """No turn for a key derivation: ``reason`` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Derivations:
    """The gate every key derivation of the control server passes."""

    def __init__(
        self,
        *,
        running: int = RUNNING,
        waiting: int = WAITING,
        patience: float = PATIENCE,
        share: float = SHARE,
        burst: float = BURST,
        choose: Callable[[int], int] = random.randrange,
    ) -> None:
        """``choose(n)``: which of ``n`` waiting set-ups gets the next turn."""
        self.running = running
        self.waiting = waiting
        self.patience = patience
        self.share = share
        self.burst = burst
        self._choose = choose
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kdf")
        #: Derivations admitted and not finished.
        self._pending = 0
        #: CPU seconds spent and not yet paid back at ``share``, as of ``_updated``.
        self._debt = 0.0
        self._updated = time.monotonic()
        #: Set-ups waiting for a turn: each future's result is None once it has one.
        self._turns: list[asyncio.Future[None]] = []
        self._wake: asyncio.TimerHandle | None = None

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        """``function(*args)`` on the derivation thread once it has a turn; its CPU time is
        charged.  DerivationRefusedError when no turn came (nothing was derived)."""
        await self._turn()
        try:
            loop = asyncio.get_running_loop()
            result, cost = await loop.run_in_executor(self._executor, _timed, function, *args)
            self._debt += cost
        finally:
            self._pending -= 1
            self._hand_out()
        return result

    def _blocked(self) -> str | None:
        """Why no derivation may start now, or None."""
        now = time.monotonic()
        self._debt = max(0.0, self._debt - (now - self._updated) * self.share)
        self._updated = now
        if self._pending >= self.running:
            return f"{self.running} key derivations already running or queued"
        if self._debt > self.burst:
            return f"key derivations above {self.share:.0%} of a core"
        return None

    async def _turn(self) -> None:
        """Return once a derivation may start (counted in ``_pending``); DerivationRefusedError
        when the waiting room is full or the wait outlasts ``patience``."""
        blocked = self._blocked()
        if blocked is None and not self._turns:
            self._pending += 1
            return
        if len(self._turns) >= self.waiting:
            reason = blocked or "key derivations waiting their turns"
            raise DerivationRefusedError(f"{reason}, and {self.waiting} set-ups waiting already")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        self._hand_out()
        try:
            # Shielded: only this method takes a turn out of the list, so a turn handed out
            # as the wait ends is seen below and given back.
            await asyncio.wait_for(asyncio.shield(turn), self.patience)
        except TimeoutError:
            self._give_back(turn)
            raise DerivationRefusedError(
                f"no turn for a key derivation within {self.patience:g} s: key derivations are"
                f" held to {self.share:.0%} of a core, {self.running} at a time"
            ) from None
        except BaseException:  # the connection's task was cancelled: it waits no more
            self._give_back(turn)
            raise

    def _give_back(self, turn: asyncio.Future[None]) -> None:
        """Forget ``turn``, whose set-up waits no more, and the derivation it may have got."""
        if turn.done():
            self._pending -= 1
        else:
            self._turns.remove(turn)
            turn.cancel()
        self._hand_out()

    def _hand_out(self) -> None:
        """Give the derivations that may start to set-ups waiting, chosen at random; when
        only the debt stops them, look again when it will have fallen to the burst."""
        while self._turns and self._blocked() is None:
            turn = self._turns.pop(self._choose(len(self._turns)))
            self._pending += 1
            turn.set_result(None)
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._turns and self._pending < self.running:
            delay = (self._debt - self.burst) / self.share
            self._wake = asyncio.get_running_loop().call_later(max(delay, 1e-3), self._hand_out)


def _timed(function: Callable[..., _T], *args: object) -> tuple[_T, float]:
    """``function(*args)`` and the CPU seconds this thread spent on it."""
    started = time.thread_time()
    result = function(*args)
    return result, time.thread_time() - started
