"""Why packets were dropped, told at a bounded rate: one line per sender address and reason.

A reflector drops whatever it cannot answer (senders not allowed, full tables, short or
forged packets), and a hostile or broken sender can make it drop thousands a second.  The
operator still needs each reason once, with the sender's address, and the table that remembers
what was reported must stay bounded whatever the senders do.
"""

from __future__ import annotations

from collections.abc import Callable

Address = tuple[str, int]
#: Seconds between two reports of the same drop reason for one sender address.
REPORT_INTERVAL = 1.0
#: Most (address, reason) pairs remembered for REPORT_INTERVAL.
REPORTS_TRACKED = 4096


class DropReports:
    """Calls ``emit(reason, sender)`` at most once per REPORT_INTERVAL per (address, reason)."""

    __slots__ = ("_emit", "_reported")

    def __init__(self, emit: Callable[[str, Address], None]) -> None:
        self._emit = emit
        self._reported: dict[tuple[str, str], float] = {}

    def __call__(self, reason: str, sender: Address, now: float) -> None:
        """Report a drop at monotonic time ``now``, unless it was reported just now."""
        key = (sender[0], reason)
        if now - self._reported.get(key, -REPORT_INTERVAL) < REPORT_INTERVAL:
            return
        if len(self._reported) >= REPORTS_TRACKED:
            self._reported = {k: t for k, t in self._reported.items() if now - t < REPORT_INTERVAL}
            if len(self._reported) >= REPORTS_TRACKED:
                return
        self._reported[key] = now
        self._emit(reason, sender)
