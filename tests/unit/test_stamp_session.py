"""The sans-I/O Session-Sender speaking STAMP, driven by made-up clocks against our sans-I/O
reflector (:func:`twamp_common.stamp_reflector.reflect`): no sockets, no sleeps.

The books (lost, late, duplicates, invalid) are the TWAMP ones, tested in test_test_session.py;
here the STAMP codec and what the TLVs add up to are checked against exact numbers.
"""

from __future__ import annotations

import pytest
from twamp_common.codes import Mode
from twamp_common.schedule import Periodic
from twamp_common.stamp import BASE_SIZE, FollowUp, StampSenderPacket
from twamp_common.stamp_reflector import Arrival, ReflectorConfig, ReflectorState, reflect
from twamp_common.stamp_sender import (
    TLV_CHOICES,
    StampSetup,
    follow_up_inbound,
    parse_tlv_choices,
    sender_tlvs,
    summarize,
)
from twamp_common.stamp_tlv import (
    ClassOfService,
    SyncSource,
    TimestampMethod,
    TlvFlags,
    TlvType,
    decode,
)
from twamp_common.test_session import (
    FAILED_HMAC,
    MALFORMED,
    Answered,
    Lost,
    Rejected,
    SenderPlan,
    SessionSender,
)
from twamp_common.timestamp import ErrorEstimate, ns_to_ntp, ntp_to_ns

MS = 1_000_000
REFLECTOR = ("192.0.2.1", 862)
WALL = 1_796_000_000 * 1_000_000_000
SYNCED = ErrorEstimate(True, 0, 1)
KEY = bytes(range(32))
ARRIVAL = Arrival(ttl=61, tos=0x2A, source=("198.51.100.7", 40001), destination=("192.0.2.1", 862))
CONFIG = ReflectorConfig(SYNCED, sync_source=SyncSource.PTP, timestamp_in=TimestampMethod.HW_ASSIST)


def ntp_exact(ns: int) -> int:
    return ntp_to_ns(ns_to_ntp(ns))


def plan(setup: StampSetup, count: int = 4, padding: int = 0) -> SenderPlan:
    return SenderPlan(
        count=count,
        schedule=Periodic(10 * MS, padding),
        mode=Mode.UNAUTHENTICATED,
        protection=None,
        padding=bytes(range(padding)),
        error_estimate=SYNCED.to_wire(),
        wait_ns=100 * MS,
        reflector=REFLECTOR,
        stamp=setup,
    )


def send(sender: SessionSender, now: int) -> bytes:
    packet = sender.outgoing()
    assert packet is not None
    wire = bytes(packet.wire(WALL + now))
    sender.sent(WALL + now, now)
    return wire


def test_an_unauthenticated_packet_is_the_44_octet_base_with_our_ssid() -> None:
    sender = SessionSender(plan(StampSetup(ssid=0x1234)), now=0)
    wire = send(sender, 0)
    assert len(wire) == BASE_SIZE[False]
    parsed = StampSenderPacket.unpack(wire)
    assert (parsed.seq, parsed.ssid, parsed.extension) == (0, 0x1234, b"")
    assert ntp_to_ns(parsed.timestamp) == ntp_exact(WALL)
    reflection = reflect(wire, t2_ns=WALL + 3 * MS, config=CONFIG)
    event = sender.handle_reply(
        reflection.finish(WALL + 4 * MS), t4=WALL + 7 * MS, source=REFLECTOR
    )
    assert isinstance(event, Answered)
    reply = event.reply
    assert (reply.t2, reply.t3, reply.t4) == (
        ntp_exact(WALL + 3 * MS),
        ntp_exact(WALL + 4 * MS),
        WALL + 7 * MS,
    )
    assert reply.sender_ttl == 255  # the reflector knew no TTL
    assert [reading.sender_seq for reading in sender.outcome.stamp] == [0]


def test_an_authenticated_packet_is_signed_after_t1_is_written() -> None:
    sender = SessionSender(plan(StampSetup(ssid=9, authenticated=True, key=KEY)), now=0)
    wire = send(sender, 0)
    assert len(wire) == BASE_SIZE[True]
    parsed = StampSenderPacket.unpack(wire, authenticated=True, key=KEY)  # verifies the HMAC
    assert ntp_to_ns(parsed.timestamp) == ntp_exact(WALL)
    config = ReflectorConfig(SYNCED, authenticated=True)
    answer = reflect(wire, t2_ns=WALL + MS, config=config, key=KEY).finish(WALL + 2 * MS)
    assert isinstance(sender.handle_reply(answer, t4=WALL + 3 * MS, source=REFLECTOR), Answered)
    second = send(sender, 10 * MS)
    tampered = bytearray(reflect(second, t2_ns=WALL, config=config, key=KEY).finish(WALL))
    tampered[20] ^= 1
    assert sender.handle_reply(bytes(tampered), t4=WALL, source=REFLECTOR) == Rejected(FAILED_HMAC)
    other = reflect(second, t2_ns=WALL, config=config, key=KEY)
    other.key = bytes(32)
    assert sender.handle_reply(other.finish(WALL), t4=WALL, source=REFLECTOR) == Rejected(
        FAILED_HMAC
    )


def test_padding_is_an_extra_padding_tlv_before_the_hmac_tlv() -> None:
    setup = StampSetup(tlvs=sender_tlvs(["timestamp-information"], dscp=0), key=KEY)
    sender = SessionSender(plan(setup, padding=20), now=0)
    wire = send(sender, 0)
    assert len(wire) == 44 + 8 + 20 + 20
    kinds = [tlv.type for tlv in decode(wire, 44)]
    assert kinds == [TlvType.TIMESTAMP_INFORMATION, TlvType.EXTRA_PADDING, TlvType.HMAC]
    assert decode(wire, 44)[1].value.pack_value() == bytes(range(16))  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="Extra Padding TLV, 0 or at least 4"):
        SessionSender(plan(StampSetup(), padding=3), now=0).outgoing()


def test_every_tlv_is_answered_and_summarized() -> None:
    names = [name for name in TLV_CHOICES if name != "hmac"]
    setup = StampSetup(ssid=77, tlvs=sender_tlvs(names, dscp=46), key=KEY)
    sender = SessionSender(plan(setup, count=4), now=0)
    state = ReflectorState()
    wires = [send(sender, k * 10 * MS) for k in range(4)]
    previous: FollowUp | None = None
    sent_at: dict[int, int] = {}
    for k, wire in enumerate(wires):
        if k == 1:
            reflect(wire, t2_ns=WALL, config=CONFIG, arrival=ARRIVAL, key=KEY, state=state)
            continue  # reflected but the reply is lost on the way back
        t2 = WALL + k * 10 * MS + 2 * MS
        reflection = reflect(
            wire, t2_ns=t2, config=CONFIG, arrival=ARRIVAL, key=KEY, state=state, follow_up=previous
        )
        reply = reflection.finish(t2 + 100_000)
        # The reflector's kernel sent it 30 µs after its user-space T3.
        previous = FollowUp(reflection.seq, t2 + 130_000, TimestampMethod.SW_LOCAL)
        sent_at[reflection.seq] = t2 + 130_000
        event = sender.handle_reply(
            reply, t4=t2 + 1 * MS, source=REFLECTOR, traffic_class=40 << 2 | 1
        )
        assert isinstance(event, Answered)
    assert sender.handle_timer(200 * MS) == [Lost(1)]
    outcome = sender.outcome
    summary = summarize(outcome.stamp, ssid=77)
    assert summary.timestamp_information is not None
    info = summary.timestamp_information
    assert (info.sync_in, info.method_in, info.sync_out, info.method_out) == (2, 1, 2, 2)
    assert summary.dscp_requested == 46
    assert summary.dscp_at_reflector == {10: 3} and summary.ecn_at_reflector == {2: 3}
    assert summary.dscp_of_replies == {40: 3} and summary.dscp_refused == 0
    assert summary.ecn_of_replies == {1: 3}
    # The last reply: 4 sent, 4 received and 4 sent by the reflector, 3 of them came back.
    assert summary.direct_measurement is not None
    dm = summary.direct_measurement
    assert (dm.s_txc, dm.r_rxc, dm.r_txc) == (4, 4, 4)
    assert (summary.forward_lost, summary.reverse_lost) == (0, 1)
    assert summary.location is not None
    assert summary.location.source_address == "198.51.100.7"
    assert summary.location.destination_address == "192.0.2.1"
    assert (summary.location.source_port, summary.location.destination_port) == (40001, 862)
    # Replies 2 and 3 give the real send times of the reflector's replies 0 and 2 (reply 1
    # never came back, so the reflector's next reply still names 0): inbound is T4 minus that
    # time, 30 µs less than T4 - T3.
    assert [reply.inbound for reply in outcome.replies] == [900_000] * 3
    assert follow_up_inbound(outcome.stamp) == [870_000, 870_000]
    assert summary.follow_up_inbound is not None and summary.follow_up_inbound.count == 2
    assert summary.follow_up_method == TimestampMethod.SW_LOCAL
    assert summary.flags == {} and summary.integrity_failed == 0


def test_a_refused_dscp_and_the_flags_of_a_reply_are_reported() -> None:
    names = ["class-of-service", "direct-measurement", "location"]
    setup = StampSetup(tlvs=sender_tlvs(names, dscp=46))
    sender = SessionSender(plan(setup, count=2), now=0)
    strict = ReflectorConfig(SYNCED, permitted_dscp=frozenset({0}))
    # Stateless and no counters: Direct Measurement comes back U; IPv6 sub-TLVs for an IPv4
    # arrival come back U too.
    reply = reflect(send(sender, 0), t2_ns=WALL, config=strict, arrival=ARRIVAL).finish(WALL)
    sender.handle_reply(reply, t4=WALL + MS, source=REFLECTOR)
    copier = ReflectorConfig(SYNCED, extensions=False)  # RFC 8762 only: echoes our U flags
    reply = reflect(send(sender, 10 * MS), t2_ns=WALL, config=copier).finish(WALL)
    sender.handle_reply(reply, t4=WALL + MS, source=REFLECTOR)
    summary = summarize(sender.outcome.stamp, ssid=0)
    assert summary.dscp_refused == 1 and summary.dscp_at_reflector == {10: 1}
    assert summary.direct_measurement is None and summary.forward_lost is None
    assert summary.flags == {
        "class-of-service": {"U": 1},
        "direct-measurement": {"U": 2},
        "location": {"U": 1},
    }


def test_tlvs_that_fail_their_hmac_are_not_read() -> None:
    setup = StampSetup(tlvs=sender_tlvs(["class-of-service"], dscp=0), key=KEY)
    sender = SessionSender(plan(setup, count=1), now=0)
    # A reflector with another key: it flags the TLVs I, and its own seal fails with us.
    reflection = reflect(send(sender, 0), t2_ns=WALL, config=CONFIG, arrival=ARRIVAL, key=bytes(32))
    event = sender.handle_reply(reflection.finish(WALL), t4=WALL + MS, source=REFLECTOR)
    assert isinstance(event, Answered)  # the base packet is fine: it is measured
    summary = summarize(sender.outcome.stamp, ssid=0)
    assert summary.integrity_failed == 1 and summary.dscp_at_reflector == {}
    assert summary.flags == {"class-of-service": {"I": 1}, "hmac": {"I": 1}}


def test_direct_measurement_carries_the_sender_counter_of_each_packet() -> None:
    setup = StampSetup(tlvs=sender_tlvs(["direct-measurement"], dscp=0))
    sender = SessionSender(plan(setup, count=3), now=0)
    counters = [decode(send(sender, k * 10 * MS), 44)[0].value for k in range(3)]
    assert [c.s_txc for c in counters] == [1, 2, 3]  # type: ignore[union-attr]
    assert all(tlv.flags == TlvFlags.UNRECOGNIZED for tlv in decode(send_one(setup), 44))


def send_one(setup: StampSetup) -> bytes:
    return send(SessionSender(plan(setup, count=1), now=0), 0)


def reports(setup: StampSetup, count: int, answer: ReflectorConfig | None) -> list[int]:
    """Which of ``count`` packets, 10 ms apart, carried the Access Report; every packet is
    answered by a reflector of ``answer`` (None: none is)."""
    sender = SessionSender(plan(setup, count=count), now=0)
    carried, sizes = [], set()
    for k in range(count):
        wire = send(sender, k * 10 * MS)
        sizes.add(len(wire))
        kinds = [tlv.type for tlv in decode(wire, 44)]
        stand_in = TlvType.EXTRA_PADDING if TlvType.ACCESS_REPORT not in kinds else None
        assert kinds == [TlvType.CLASS_OF_SERVICE, stand_in or TlvType.ACCESS_REPORT]
        if stand_in is None:
            carried.append(k)
        if answer is not None:
            reply = reflect(wire, t2_ns=WALL + k * 10 * MS, config=answer).finish(WALL)
            sender.handle_reply(reply, t4=WALL + k * 10 * MS, source=REFLECTOR)
    assert sizes == {44 + 8 + 8}  # the stand-in is as long as the report
    return carried


def access_setup(timeout_ms: int = 3000, retransmissions: int = 4) -> StampSetup:
    return StampSetup(
        tlvs=sender_tlvs(["class-of-service", "access-report"], dscp=0),
        access_report_timeout_ns=timeout_ms * MS,
        access_report_retransmissions=retransmissions,
    )


def test_the_access_report_goes_once_when_the_reflector_echoes_it() -> None:
    assert reports(access_setup(timeout_ms=25), 12, CONFIG) == [0]


def test_an_unechoed_access_report_is_retransmitted_on_its_timer_then_given_up() -> None:
    # Sent at 0 ms, due again at 25: packet 3 (30 ms) finds the timer expired, packet 4
    # carries it; at 65, packet 7 finds it expired, packet 8 carries the second and last.
    assert reports(access_setup(timeout_ms=25, retransmissions=2), 16, None) == [0, 4, 8]
    # The default: three seconds, so a short session sends it once.
    assert reports(access_setup(), 12, None) == [0]


def test_an_echo_the_reflector_did_not_understand_leaves_the_report_pending() -> None:
    rfc8762_only = ReflectorConfig(SYNCED, extensions=False)  # returns it with U set
    assert reports(access_setup(timeout_ms=25, retransmissions=1), 8, rfc8762_only) == [0, 4]


def test_the_access_report_timer_figures_are_checked() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        StampSetup(access_report_timeout_ns=0)
    with pytest.raises(ValueError, match="cannot be negative"):
        StampSetup(access_report_retransmissions=-1)


def test_tlv_choices_are_words_or_comma_lists_each_once() -> None:
    assert parse_tlv_choices(["location,class-of-service", "location", " HMAC "]) == (
        "location",
        "class-of-service",
        "hmac",
    )
    with pytest.raises(ValueError, match="'colour' is not a STAMP TLV"):
        parse_tlv_choices(["colour"])
    assert sender_tlvs(["hmac", "class-of-service"], dscp=46) == (ClassOfService(46),)


def test_a_bad_setup_is_refused() -> None:
    with pytest.raises(ValueError, match="SSID"):
        StampSetup(ssid=70000)
    with pytest.raises(ValueError, match="needs a key"):
        StampSetup(authenticated=True)


def test_hostile_replies_are_invalid_or_their_tlvs_flagged_never_an_error() -> None:
    setup = StampSetup(tlvs=sender_tlvs(["class-of-service"], dscp=0))
    sender = SessionSender(plan(setup, count=2), now=0)
    wire = send(sender, 0)
    assert sender.handle_reply(b"\x00" * 43, t4=WALL, source=REFLECTOR) == Rejected(MALFORMED)
    good = reflect(wire, t2_ns=WALL, config=CONFIG, arrival=ARRIVAL).finish(WALL)
    # A TLV area cut short and a Length past the end: the base packet is still measured, the
    # TLV is no answer.
    cut = bytearray(good[:50])
    assert isinstance(sender.handle_reply(bytes(cut), t4=WALL + 1, source=REFLECTOR), Answered)
    unknown = bytearray(good)
    unknown[45] = 99  # a TLV type nobody registered
    event = sender.handle_reply(bytes(unknown), t4=WALL + 2, source=REFLECTOR)
    assert isinstance(event, Answered) and event.duplicate
    summary = summarize(sender.outcome.stamp, ssid=0)
    assert summary.dscp_at_reflector == {}
    assert summary.flags == {}  # flags clear but unreadable: not an answer, not a flag either
