"""The sans-I/O Session-Sender driven by made-up clocks: no sockets, no sleeps.

A small reflector written here from ``twamp_common``'s packet classes answers what the sender
prepares, so that every rule of the accounting (lost after the wait, late, duplicate, invalid by
reason, send errors, kernel send times) is checked against exact numbers.
"""

from __future__ import annotations

import gc
import random

import pytest
from twamp_common import crypto
from twamp_common.codes import Mode
from twamp_common.schedule import Cycle, Periodic, Poisson
from twamp_common.test_packets import (
    SENDER_HEADER_SIZE,
    SYMMETRIC_SENDER_PADDING,
    ReflectorPacket,
    SenderPacket,
)
from twamp_common.test_session import (
    FAILED_HMAC,
    FOREIGN_SOURCE,
    MALFORMED,
    NEVER_SENT,
    Answered,
    Late,
    Lost,
    Rejected,
    SenderPlan,
    SessionSender,
)
from twamp_common.timestamp import ErrorEstimate, ns_to_ntp, ntp_to_ns

MS = 1_000_000
REFLECTOR = ("192.0.2.1", 862)
#: Wall clock of the made-up world: 2026-12-01 in Unix ns.
WALL = 1_796_000_000 * 1_000_000_000
SYNCED = ErrorEstimate(True, 0, 1).to_wire()
KEYS = crypto.SessionKeys(bytes(range(16)), bytes(range(32)))


def plan(
    count: int = 5,
    *,
    mode: Mode = Mode.UNAUTHENTICATED,
    interval_ms: int = 10,
    wait_ms: int = 100,
    schedule: Periodic | Cycle | Poisson | None = None,
) -> SenderPlan:
    authenticated = mode in (Mode.AUTHENTICATED, Mode.ENCRYPTED)
    padding = SYMMETRIC_SENDER_PADDING[authenticated]
    schedule = schedule or Periodic(interval_ms * MS, padding)
    protection = crypto.TestPacketProtection(mode, KEYS) if authenticated else None
    return SenderPlan(
        count=count,
        schedule=schedule,
        mode=mode,
        protection=protection,
        padding=bytes(k % 256 for k in range(schedule.max_padding)),
        error_estimate=SYNCED,
        wait_ns=wait_ms * MS,
        reflector=REFLECTOR,
    )


class Reflector:
    """Answers a sender packet as a stateful RFC 5357 reflector would, at made-up times."""

    def __init__(self, mode: Mode = Mode.UNAUTHENTICATED) -> None:
        self.mode = mode
        self.authenticated = mode in (Mode.AUTHENTICATED, Mode.ENCRYPTED)
        self.protection = crypto.TestPacketProtection(mode, KEYS) if self.authenticated else None
        self.seq = 0

    def answer(self, wire: bytes, t2: int, t3: int, *, ttl: int = 60) -> bytes:
        data = bytes(wire)
        if self.protection is not None:
            data = self.protection.open_sender(data)
        sent = SenderPacket.unpack(data, self.authenticated)
        reply = ReflectorPacket(
            self.seq,
            ns_to_ntp(t3),
            SYNCED,
            ns_to_ntp(t2),
            sent.seq,
            sent.timestamp,
            sent.error_estimate,
            ttl,
        ).pack(self.authenticated)
        self.seq += 1
        if self.protection is not None:
            reply = self.protection.seal_reflector(reply)
        return reply


def send(sender: SessionSender, now: int) -> bytes | bytearray:
    """Send the next packet at monotonic ``now`` (wall clock WALL + now)."""
    packet = sender.outgoing()
    assert packet is not None and packet.deadline <= now
    wire = bytes(packet.wire(WALL + now))
    sender.sent(WALL + now, now)
    return wire


def test_a_periodic_schedule_keeps_absolute_deadlines() -> None:
    sender = SessionSender(plan(3), now=1000)
    assert sender.next_deadline() == 1000
    send(sender, 1000)
    assert sender.next_deadline() == 1000 + 10 * MS
    send(sender, 1000 + 10 * MS + 70_000)  # sent 70 µs late: the next deadline does not move
    assert sender.next_deadline() == 1000 + 20 * MS
    send(sender, 1000 + 20 * MS)
    assert sender.outgoing() is None
    assert not sender.finished
    assert sender.next_deadline() == 1000 + 100 * MS  # the first packet's give-up


def test_replies_are_matched_and_the_run_finishes_when_all_are_answered() -> None:
    sender, reflector = SessionSender(plan(2), now=0), Reflector()
    first = send(sender, 0)
    event = sender.handle_reply(
        reflector.answer(first, WALL + 400_000, WALL + 450_000), t4=WALL + 900_000, source=REFLECTOR
    )
    assert isinstance(event, Answered) and not event.duplicate
    reply = event.reply
    assert (reply.t1, reply.t2, reply.t3, reply.t4) == (
        WALL,
        ntp_to_ns(ns_to_ntp(WALL + 400_000)),
        ntp_to_ns(ns_to_ntp(WALL + 450_000)),
        WALL + 900_000,
    )
    assert reply.sender_ttl == 60
    second = send(sender, 10 * MS)
    sender.handle_reply(
        reflector.answer(second, WALL + 10 * MS, WALL + 10 * MS),
        t4=WALL + 11 * MS,
        source=REFLECTOR,
    )
    assert sender.finished
    assert sender.next_deadline() is None
    assert sender.outcome.sent == 2 and len(sender.outcome.replies) == 2


def test_the_replies_a_run_keeps_are_not_tracked_by_the_garbage_collector() -> None:
    """Hundreds of thousands of kept replies, each tracked, would make every full collection
    visit them all: a run keeps plain tuples (and its send times in an array), and makes
    Reply objects only when asked."""
    sender, reflector = SessionSender(plan(3), now=0), Reflector()
    for k in range(3):
        wire = send(sender, k * 10 * MS)
        moment = WALL + k * 10 * MS
        sender.handle_reply(
            reflector.answer(wire, moment + 1, moment + 2), t4=moment + 3, source=REFLECTOR
        )
    gc.collect()
    assert [gc.is_tracked(row) for row in sender.outcome.rows] == [False] * 3
    # What a collection visits of the send times: not one object per packet.
    assert len(gc.get_referents(sender.outcome.send_times)) <= 1
    replies = sender.outcome.replies
    assert [reply.sender_seq for reply in replies] == [0, 1, 2]
    assert [reply.round_trip for reply in replies] == [2, 2, 2]
    assert sender.outcome.answered() == {0, 1, 2}


def test_packets_are_given_up_in_order_after_the_wait_and_late_replies_are_counted() -> None:
    sender, reflector = SessionSender(plan(3, wait_ms=100), now=0), Reflector()
    wires = [send(sender, k * 10 * MS) for k in range(3)]
    assert sender.handle_timer(99 * MS) == []
    # Packet 1 is answered in time; 0 and 2 are not.
    sender.handle_reply(reflector.answer(wires[1], WALL, WALL), t4=WALL + 15 * MS, source=REFLECTOR)
    assert sender.handle_timer(100 * MS) == [Lost(0)]
    assert sender.handle_timer(119 * MS) == []
    assert sender.handle_timer(120 * MS) == [Lost(2)]
    assert sender.finished
    late = sender.handle_reply(reflector.answer(wires[0], WALL, WALL), t4=WALL, source=REFLECTOR)
    assert late == Late(0)
    assert sender.outcome.late == 1
    assert len(sender.outcome.replies) == 1


def test_overdue_says_when_a_packet_waited_for_is_about_to_be_given_up() -> None:
    sender, reflector = SessionSender(plan(3, wait_ms=100), now=0), Reflector()
    wires = [send(sender, 0), send(sender, 10 * MS)]
    sender.send_failed("Operation not permitted", 20 * MS)
    assert not sender.overdue(99 * MS)
    assert sender.overdue(100 * MS)
    sender.handle_reply(reflector.answer(wires[0], WALL, WALL), t4=WALL + 5 * MS, source=REFLECTOR)
    # Packet 0 answered: only packet 1's wait counts; the failed packet 2 needs no reading.
    assert not sender.overdue(109 * MS)
    assert sender.overdue(110 * MS)
    sender.handle_reply(reflector.answer(wires[1], WALL, WALL), t4=WALL + 15 * MS, source=REFLECTOR)
    assert not sender.overdue(10_000 * MS)
    assert sender.handle_timer(10_000 * MS) == [Lost(2, "Operation not permitted")]


def test_a_duplicate_counts_as_a_reply_to_an_answered_packet() -> None:
    sender, reflector = SessionSender(plan(1), now=0), Reflector()
    wire = send(sender, 0)
    answer = reflector.answer(wire, WALL, WALL)
    assert sender.handle_reply(answer, t4=WALL + 1, source=REFLECTOR).duplicate is False  # type: ignore[union-attr]
    again = sender.handle_reply(answer, t4=WALL + 2, source=REFLECTOR)
    assert isinstance(again, Answered) and again.duplicate
    assert len(sender.outcome.replies) == 2


def test_datagrams_that_are_not_replies_are_counted_by_reason() -> None:
    sender, reflector = SessionSender(plan(2), now=0), Reflector()
    wire = send(sender, 0)
    answer = reflector.answer(wire, WALL, WALL)
    assert sender.handle_reply(answer, t4=WALL, source=("192.0.2.66", 862)) == Rejected(
        FOREIGN_SOURCE
    )
    assert sender.handle_reply(answer, t4=WALL, source=(REFLECTOR[0], 9999)) == Rejected(
        FOREIGN_SOURCE
    )
    assert sender.handle_reply(b"\x00" * 20, t4=WALL, source=REFLECTOR) == Rejected(MALFORMED)
    unsent = ReflectorPacket(0, 0, SYNCED, 0, 7, 0, SYNCED, 255).pack(False)
    assert sender.handle_reply(unsent, t4=WALL, source=REFLECTOR) == Rejected(NEVER_SENT)
    assert dict(sender.outcome.invalid) == {FOREIGN_SOURCE: 2, MALFORMED: 1, NEVER_SENT: 1}
    assert sender.outcome.replies == []


@pytest.mark.parametrize("mode", [Mode.AUTHENTICATED, Mode.ENCRYPTED])
def test_secure_modes_seal_stamp_and_check_the_hmac(mode: Mode) -> None:
    sender, reflector = SessionSender(plan(2, mode=mode), now=0), Reflector(mode)
    wire = send(sender, 0)
    assert len(wire) == SENDER_HEADER_SIZE[True] + SYMMETRIC_SENDER_PADDING[True]
    opened = SenderPacket.unpack(reflector.protection.open_sender(bytes(wire)), True)  # type: ignore[union-attr]
    assert (opened.seq, ntp_to_ns(opened.timestamp)) == (0, ntp_to_ns(ns_to_ntp(WALL)))
    answer = bytearray(reflector.answer(wire, WALL + 5, WALL + 6))
    assert isinstance(sender.handle_reply(bytes(answer), t4=WALL + 9, source=REFLECTOR), Answered)
    second = send(sender, 10 * MS)
    tampered = bytearray(reflector.answer(second, WALL, WALL))
    tampered[0] ^= 1
    assert sender.handle_reply(bytes(tampered), t4=WALL, source=REFLECTOR) == Rejected(FAILED_HMAC)


def test_a_failed_send_is_sent_and_lost_at_once_and_the_run_goes_on() -> None:
    sender, reflector = SessionSender(plan(3), now=0), Reflector()
    send(sender, 0)
    assert sender.outgoing() is not None
    sender.send_failed("Operation not permitted", 10 * MS)
    third = send(sender, 20 * MS)
    # The failed packet is given up at once, but only after packet 0 (order is kept).
    assert sender.handle_timer(20 * MS) == []
    assert sender.handle_timer(100 * MS) == [Lost(0), Lost(1, "Operation not permitted")]
    sender.handle_reply(reflector.answer(third, WALL, WALL), t4=WALL, source=REFLECTOR)
    assert sender.finished
    outcome = sender.outcome
    assert outcome.sent == 3
    assert dict(outcome.send_errors) == {"Operation not permitted": 1}
    assert len(outcome.replies) == 1


def test_a_reply_claiming_a_failed_packet_was_never_sent() -> None:
    sender = SessionSender(plan(1), now=0)
    sender.send_failed("Network is unreachable", 0)
    forged = ReflectorPacket(0, 0, SYNCED, 0, 0, 0, SYNCED, 255).pack(False)
    assert sender.handle_reply(forged, t4=WALL, source=REFLECTOR) == Rejected(NEVER_SENT)


def test_kernel_send_times_replace_t1_until_a_send_fails() -> None:
    sender = SessionSender(plan(3), now=0)
    send(sender, 0)
    sender.handle_send_time(0, WALL + 8_000)
    sender.handle_send_time(0, WALL + 9_999)  # a second report of the same packet is ignored
    sender.handle_send_time(5, WALL)  # a counter beyond what was sent is ignored
    assert list(sender.outcome.send_times) == [WALL + 8_000]
    sender.send_failed("No route to host", 10 * MS)
    send(sender, 20 * MS)
    sender.handle_send_time(2, WALL + 20 * MS + 8_000)
    assert sender.outcome.send_times[2] == WALL + 20 * MS  # the counter may be off by one now


def test_count_zero_sends_until_stopped_then_waits_for_packets_in_flight() -> None:
    sender, reflector = SessionSender(plan(0), now=0), Reflector()
    wires = [send(sender, k * 10 * MS) for k in range(50)]
    assert sender.outgoing() is not None
    sender.stop()
    assert sender.outgoing() is None and not sender.finished
    for wire in wires[:-1]:
        sender.handle_reply(reflector.answer(wire, WALL, WALL), t4=WALL, source=REFLECTOR)
    assert not sender.finished
    assert sender.next_deadline() == 49 * 10 * MS + 100 * MS
    assert sender.handle_timer(590 * MS) == [Lost(49)]
    assert sender.finished


def test_give_up_ends_the_run_and_reports_what_was_still_waited_for() -> None:
    sender, reflector = SessionSender(plan(5), now=0), Reflector()
    wires = [send(sender, k * 10 * MS) for k in range(3)]
    sender.handle_reply(reflector.answer(wires[1], WALL, WALL), t4=WALL, source=REFLECTOR)
    assert sender.give_up() == [Lost(0), Lost(2)]
    assert sender.finished and sender.outgoing() is None


def test_a_cycle_varies_the_padding_of_each_packet() -> None:
    schedule = Cycle((27, 100, 27, 500), 5 * MS)
    sender = SessionSender(plan(6, schedule=schedule), now=0)
    sizes = [len(send(sender, k * 5 * MS)) for k in range(6)]
    assert sizes == [14 + 27, 114, 41, 514, 41, 114]


def test_poisson_gaps_are_positive_and_average_to_the_mean() -> None:
    schedule = Poisson(10 * MS, 27, random.Random(7))
    gaps = [schedule.gap(k) for k in range(20_000)]
    assert min(gaps) >= 1
    assert 9.7 * MS < sum(gaps) / len(gaps) < 10.3 * MS


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="padding octets"):
        SenderPlan(1, Periodic(MS, 27), Mode.UNAUTHENTICATED, None, b"", SYNCED, MS, REFLECTOR)
    with pytest.raises(ValueError, match="negative count"):
        SenderPlan(-1, Periodic(MS, 0), Mode.UNAUTHENTICATED, None, b"", SYNCED, MS, REFLECTOR)
    with pytest.raises(ValueError, match="at least 1 ns"):
        Periodic(0, 0)
