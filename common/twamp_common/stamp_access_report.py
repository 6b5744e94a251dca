"""The Session-Sender's Access Report retransmission timer (RFC 8972 §4.6), without I/O.

An Access Report tells the reflector that an access network came up or went down; a lost one
would leave it wrong, so the sender "MUST also arm a retransmission timer after sending a test
packet that includes the Access Report TLV", disarmed when the reflected packet brings the TLV
back, and retransmits on expiry, "up to four times before the procedure is aborted".  The
timeout defaults to three seconds; both figures are the caller's to set, as the RFC requires.

Readings: only an echo the reflector understood (U, M, I clear) and that carries the report
sent disarms the timer, since an RFC 8762-only reflector returns the TLV untouched, with U
set, without having taken note of it; sending a different report starts the count afresh.
"""

from __future__ import annotations

import enum

from .stamp import StampReply
from .stamp_tlv import AccessReport

#: "The default value of the retransmission timer for the Access Report TLV SHOULD be three
#: seconds."
DEFAULT_TIMEOUT_NS = 3_000_000_000
#: "This retransmission SHOULD be repeated up to four times before the procedure is aborted."
DEFAULT_RETRANSMISSIONS = 4


class Due(enum.Enum):
    """What :meth:`AccessReportTimer.poll` asks of the caller."""

    NOTHING = "nothing"
    #: Send the test packet with the Access Report again, then call :meth:`~AccessReportTimer.sent`.
    RETRANSMIT = "retransmit"
    #: The last retransmission went unanswered: the report was not delivered.
    ABORTED = "aborted"


class AccessReportTimer:
    """One sender's pending Access Report: armed by sending it, disarmed by its echo."""

    __slots__ = ("_deadline", "_limit", "_report", "_timeout", "retransmitted")

    def __init__(
        self,
        timeout_ns: int = DEFAULT_TIMEOUT_NS,
        retransmissions: int = DEFAULT_RETRANSMISSIONS,
    ) -> None:
        if timeout_ns <= 0:
            raise ValueError("the retransmission timeout must be positive")
        if retransmissions < 0:
            raise ValueError("the number of retransmissions cannot be negative")
        self._timeout = timeout_ns
        self._limit = retransmissions
        self._report: AccessReport | None = None
        self._deadline: int | None = None
        #: Retransmissions of the pending report so far.
        self.retransmitted = 0

    @property
    def deadline(self) -> int | None:
        """When :meth:`poll` next has something to say; None when disarmed."""
        return self._deadline

    def sent(self, report: AccessReport, now_ns: int) -> None:
        """A test packet carrying ``report`` left at ``now_ns``: arm (or re-arm) the timer."""
        if report != self._report:
            self.retransmitted = 0
        self._report = report
        self._deadline = now_ns + self._timeout

    def received(self, reply: StampReply) -> bool:
        """Disarm if ``reply`` brings the pending report back understood; whether it did."""
        if self._report is None or reply.find(AccessReport) != self._report:
            return False
        self._disarm()
        return True

    def poll(self, now_ns: int) -> Due:
        """What to do at ``now_ns``: nothing yet, retransmit, or give up."""
        if self._deadline is None or now_ns < self._deadline:
            return Due.NOTHING
        if self.retransmitted >= self._limit:
            self._disarm()
            return Due.ABORTED
        self.retransmitted += 1
        self._deadline = None  # until the retransmission is sent
        return Due.RETRANSMIT

    def _disarm(self) -> None:
        self._report = None
        self._deadline = None
