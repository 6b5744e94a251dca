"""The Session-Sender of one test session, apart from I/O (RFC 5357 §4.1, RFC 4656 §4.1, and
STAMP's RFC 8762 §4.2 through the codecs of :mod:`twamp_common.sender_codec`).

The driver owns the socket and the clocks and tells this object what happened; the object says
what to send next, when it next needs the driver's attention, and what each reply means.  It is
in the style of aioquic's connection: ``now`` (a monotonic nanosecond reading) in,
:meth:`SessionSender.next_deadline` out, :meth:`SessionSender.handle_timer` when that time comes.
Wall-clock times are data and are passed in too: T1 read just before ``sendto``, the kernel's
send time when it reports one, the kernel's T4.

Why apart from I/O: the accounting of a run (sent, lost, late, duplicate, invalid, send errors)
is the part that must be exact, and every driver (one blocking run, an engine running hundreds of
sessions, a monitor) must agree on it.  Here it is one piece of code, tested with made-up clocks.

Rules the accounting keeps:

* A packet is given up as lost ``wait_ns`` after it was sent, in sequence order; a reply that
  comes after that is *late*, not received.  Before giving one up the driver reads what has
  arrived already (:meth:`SessionSender.overdue`): a reply that came in time is not late
  because the driver was busy when it came.
* A packet whose send failed (no route, a firewall's EPERM) counts as sent and lost, with the
  reason; the run goes on to its count, as ``ping`` does.
* A reply is accepted only from the address and port its packets went to, only if it decodes
  (and, in the secure modes, passes its HMAC), and only for a sequence number that was sent;
  anything else is counted as invalid with its reason.  An unauthenticated TWAMP reply of 38
  to 40 octets (the RFC 4656 layout, without the Sender TTL) is measured, its TTL unknown.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import struct
from typing import NamedTuple

from .codes import AUTHENTICATED_TEST_MODES, Mode
from .crypto import TestPacketProtection
from .errors import AuthenticationError, ProtocolError
from .schedule import Schedule
from .sender_codec import Seal, StampCodec, TwampCodec
from .stamp_sender import StampReading, StampSetup
from .stats import Reply, ReplyRow
from .timestamp import ns_to_ntp

_NTP = struct.Struct("!Q")

#: Reasons a reply is not accepted (the keys of :attr:`Outcome.invalid`).
FOREIGN_SOURCE = "from an address or port the packets were not sent to"
FAILED_HMAC = "failed its HMAC"
MALFORMED = "malformed"
NEVER_SENT = "answers a packet never sent"


@dataclasses.dataclass(frozen=True, slots=True)
class SenderPlan:
    """What one Session-Sender sends, and where its replies must come from."""

    #: Packets to send; 0 sends until :meth:`SessionSender.stop`.
    count: int
    schedule: Schedule
    #: The security mode: decides the packet layout and what is encrypted.
    mode: Mode
    #: Keys of the authenticated and encrypted modes, None otherwise.
    protection: TestPacketProtection | None
    #: The session's padding octets, ``schedule.max_padding`` long: pseudo-random or all zero
    #: (RFC 4656 §4.1.2), drawn once per session by the caller; each packet takes its prefix.
    padding: bytes
    #: Our Error Estimate (16-bit wire value).
    error_estimate: int
    #: How long to wait for a reply before its packet is lost.
    wait_ns: int
    #: (address, port) the packets go to, as the socket reports a datagram's source.
    reflector: tuple[str, int]
    #: STAMP (RFC 8762) instead of TWAMP-Test: its SSID, TLVs and key (``mode`` and
    #: ``protection`` are then unused).
    stamp: StampSetup | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"a negative count ({self.count}) of packets")
        if len(self.padding) < self.schedule.max_padding:
            raise ValueError(
                f"{len(self.padding)} padding octets, the schedule needs"
                f" {self.schedule.max_padding}"
            )

    @property
    def authenticated(self) -> bool:
        """Whether packets use an authenticated (or encrypted) layout."""
        if self.stamp is not None:
            return self.stamp.authenticated
        return bool(self.mode & AUTHENTICATED_TEST_MODES)

    def codec(self) -> TwampCodec | StampCodec:
        """How this plan's packets are laid out, sealed and decoded."""
        if self.stamp is not None:
            return StampCodec(self.stamp, self.padding, self.error_estimate)
        return TwampCodec(
            self.mode, self.protection, self.padding, self.error_estimate, self.authenticated
        )


@dataclasses.dataclass(slots=True)
class Outgoing:
    """The next packet, prepared before its deadline so that only T1 is left to write (not
    frozen: one is made per packet, and a frozen dataclass is several times slower to make)."""

    seq: int
    #: Monotonic time it is due.
    deadline: int
    _buffer: bytearray
    _stamp_at: int
    _seal: Seal | None

    def wire(self, t1: int) -> bytes | bytearray:
        """The octets to send, stamped with ``t1`` (wall-clock ns read just before sending).

        What T1 lies inside (TWAMP's encrypted block, STAMP's authenticated HMAC) is sealed
        after stamping; the rest was sealed with the packet.
        """
        _NTP.pack_into(self._buffer, self._stamp_at, ns_to_ntp(t1))
        if self._seal is not None:
            return self._seal(self._buffer)
        return self._buffer


class Answered(NamedTuple):
    """A valid reply; ``duplicate`` when its packet was answered before (a named tuple: one
    is made per reply, and its :class:`Reply` only when asked for)."""

    #: The reply's fields, as in :attr:`Outcome.rows`.
    row: ReplyRow
    duplicate: bool

    @property
    def reply(self) -> Reply:
        return Reply._make(self.row)


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """A datagram that is not a valid reply, and why."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Late:
    """A reply to a packet already given up as lost."""

    seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class Lost:
    """A packet given up: no reply within the wait, or (``send_error``) it never left."""

    seq: int
    send_error: str | None = None


ReplyEvent = Answered | Rejected | Late


@dataclasses.dataclass(slots=True)
class Outcome:
    """What a session sent and what came back."""

    sent: int = 0
    #: Every valid reply, duplicates included, in arrival order, each as the plain tuple of a
    #: :class:`Reply`'s fields (:attr:`replies` gives them as Reply).  Why plain: the garbage
    #: collector stops tracking a tuple of numbers, and a monitor holds hundreds of thousands
    #: of replies, each of which, tracked, a full collection visits (a pause of 100 ms every
    #: few seconds here, at 500 sessions of 50 packets/s); a list of numbers costs a visit
    #: per item, an array none.
    rows: list[ReplyRow] = dataclasses.field(default_factory=list)
    #: T1 of each packet by sequence number: the kernel's send time once it reported it, the
    #: time read before ``sendto`` until then (or if it never does); 0 where the send failed.
    #: An array, not a list, for the reason :attr:`rows` gives.
    send_times: array.array[int] = dataclasses.field(default_factory=lambda: array.array("q"))
    #: Whether every reply's Error Estimate said the reflector's clock is synchronised.
    reflector_synchronized: bool = True
    #: Datagrams that were not valid replies, by reason.
    invalid: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: Replies that came after their packet was given up (not counted as replies).
    late: int = 0
    #: Packets whose send failed, by reason (each counted as sent and lost).
    send_errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: ICMP errors about our packets ("port unreachable"...), by what they said.
    icmp_errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: Datagrams this host's kernel dropped at the test socket (its receive buffer full), as the
    #: driver read it when the session ended; None where it could not tell.  Replies among them
    #: count as lost though the path delivered them.
    host_dropped: int | None = None
    #: STAMP: what each valid reply said beyond its timestamps, in arrival order.
    stamp: list[StampReading] = dataclasses.field(default_factory=list)

    @property
    def replies(self) -> list[Reply]:
        """Every valid reply, duplicates included, in arrival order: made afresh from
        :attr:`rows` at each call (kept, they would be tracked again), so ask once."""
        return list(map(Reply._make, self.rows))

    def answered(self) -> set[int]:
        """The sequence numbers of the packets that had a valid reply (no Reply is made)."""
        return {row[0] for row in self.rows}


class SessionSender:
    """One test session's schedule and bookkeeping, driven by the caller's clock."""

    def __init__(self, plan: SenderPlan, *, now: int) -> None:
        self.plan = plan
        self.outcome = Outcome()
        self._next_at = now
        #: What :attr:`sending` says, kept up to date rather than worked out: it is asked
        #: several times per packet.
        self._sending = True
        #: Monotonic time each packet was sent (or its send failed), by sequence number.
        self._sent_at = array.array("q")
        #: Per sequence number: 1 once answered.
        self._answered = bytearray()
        #: Per sequence number: the send error, for the few that failed.
        self._failed: dict[int, str] = {}
        #: Lowest sequence number neither answered nor given up.
        self._next_lost = 0
        #: Whether the kernel's send times may still be matched to sequence numbers.
        self._kernel_times = True
        self._kernel_sent = bytearray()
        #: Distinct replies so far.
        self._received = 0
        self._codec = plan.codec()

    # The schedule -------------------------------------------------------------------------

    @property
    def sending(self) -> bool:
        """Whether packets are still to be sent."""
        return self._sending

    @property
    def finished(self) -> bool:
        """Nothing left to send and every packet answered or given up."""
        return not self._sending and self._next_lost >= self.outcome.sent

    def next_deadline(self) -> int | None:
        """When the driver must next call: the next send or the next give-up; None when
        finished (so that a driver asks once per event, not :attr:`finished` as well)."""
        deadline = self._next_at if self._sending else None
        seq = self._next_lost
        if seq < self.outcome.sent:
            give_up = self._sent_at[seq] + (0 if seq in self._failed else self.plan.wait_ns)
            if deadline is None or give_up < deadline:
                return give_up
        return deadline

    def next_send_at(self) -> int | None:
        """When the next packet is due, or None when nothing is left to send."""
        return self._next_at if self._sending else None

    def outgoing(self) -> Outgoing | None:
        """The next packet, or None when nothing is left to send."""
        if not self._sending:
            return None
        seq = self.outcome.sent
        codec = self._codec
        buffer = codec.packet(seq, self.plan.schedule.padding(seq))
        return Outgoing(seq, self._next_at, buffer, codec.stamp_at, codec.seal)

    def sent(self, t1: int, now: int) -> None:
        """The packet of :meth:`outgoing` left at wall-clock ``t1`` (ns)."""
        self.outcome.send_times.append(t1)
        self._advance(now)

    def send_failed(self, reason: str, now: int) -> None:
        """The packet of :meth:`outgoing` could not be sent: sent and lost, for ``reason``.

        The kernel's send-time counter may or may not have counted the failed datagram, so
        later reports can no longer be matched to sequence numbers: T1 stays the user-space
        time for the rest of the session.
        """
        seq = self.outcome.sent
        self._failed[seq] = reason
        self.outcome.send_errors[reason] += 1
        self.outcome.send_times.append(0)
        self._kernel_times = False
        self._advance(now)

    def _advance(self, now: int) -> None:
        outcome = self.outcome
        seq = outcome.sent
        outcome.sent = sent = seq + 1
        self._sent_at.append(now)
        self._answered.append(0)
        self._kernel_sent.append(0)
        plan = self.plan
        self._next_at += plan.schedule.gap(seq)
        if sent == plan.count:
            self._sending = False

    def stop(self) -> None:
        """Send nothing more; packets in flight are still waited for (Ctrl-C, a shutdown)."""
        self._sending = False

    def overdue(self, now: int) -> bool:
        """Whether :meth:`handle_timer` at ``now`` would give up a packet still waited for (not
        one whose send failed): the driver first reads the replies queued for it."""
        sent_at, answered, failed, wait = (
            self._sent_at,
            self._answered,
            self._failed,
            self.plan.wait_ns,
        )
        for seq in range(self._next_lost, self.outcome.sent):
            if sent_at[seq] + wait > now:
                return False
            if not answered[seq] and seq not in failed:
                return True
        return False

    def handle_timer(self, now: int) -> list[Lost]:
        """Give up, in order, every packet whose wait is over; the packets given up."""
        lost: list[Lost] = []
        sent_at, answered, wait = self._sent_at, self._answered, self.plan.wait_ns
        while self._next_lost < self.outcome.sent:
            seq = self._next_lost
            if not answered[seq]:
                error = self._failed.get(seq)
                if error is None and sent_at[seq] + wait > now:
                    break
                lost.append(Lost(seq, error))
            self._next_lost += 1
        return lost

    def give_up(self) -> list[Lost]:
        """Give up every packet still waited for (the control connection died)."""
        self._sending = False
        lost = [
            Lost(seq, self._failed.get(seq))
            for seq in range(self._next_lost, self.outcome.sent)
            if not self._answered[seq]
        ]
        self._next_lost = self.outcome.sent
        return lost

    # What comes back ----------------------------------------------------------------------

    def handle_send_time(self, counter: int, sent_ns: int) -> None:
        """The kernel's report that datagram number ``counter`` left at ``sent_ns``.

        The socket's counter starts at 0 with the first datagram, so it is the sequence number
        while nothing else is sent on the socket and no send has failed.
        """
        if not self._kernel_times or counter >= self.outcome.sent or self._kernel_sent[counter]:
            return
        self.outcome.send_times[counter] = sent_ns
        self._kernel_sent[counter] = 1

    def handle_icmp_error(self, what: str) -> None:
        """An ICMP error came back about one of our packets."""
        self.outcome.icmp_errors[what] += 1

    def handle_reply(
        self,
        data: bytes,
        *,
        t4: int,
        source: tuple[str, int],
        traffic_class: int | None = None,
    ) -> ReplyEvent:
        """What the datagram ``data`` from ``source``, received at wall-clock ``t4`` (with the
        TOS / Traffic Class octet ``traffic_class``, DSCP and ECN, when the socket reported it),
        is."""
        if source != self.plan.reflector:
            return self._reject(FOREIGN_SOURCE)
        try:
            packet = self._codec.decode(data)
        except AuthenticationError:
            return self._reject(FAILED_HMAC)
        except ProtocolError:
            return self._reject(MALFORMED)
        seq = packet.sender_seq
        outcome = self.outcome
        if seq >= outcome.sent or seq in self._failed:
            return self._reject(NEVER_SENT)
        answered = self._answered
        duplicate = bool(answered[seq])
        if seq < self._next_lost and not duplicate:
            outcome.late += 1
            return Late(seq)
        if not packet.synchronized:
            outcome.reflector_synchronized = False
        row = (
            seq,
            packet.reflector_seq,
            outcome.send_times[seq],
            packet.t2,
            packet.t3,
            t4,
            packet.ttl,
            packet.t1_packet,
        )
        answered[seq] = 1
        if not duplicate:
            self._received += 1
            next_lost, sent = self._next_lost, outcome.sent
            while next_lost < sent and answered[next_lost]:
                next_lost += 1
            self._next_lost = next_lost
        outcome.rows.append(row)
        if packet.stamp is not None:
            outcome.stamp.append(
                StampReading.of(
                    packet.stamp, t4=t4, received=self._received, reply_traffic_class=traffic_class
                )
            )
        return Answered(row, duplicate)

    def _reject(self, reason: str) -> Rejected:
        self.outcome.invalid[reason] += 1
        return Rejected(reason)
