"""The sans-I/O STAMP Session-Reflector: RFC 8762 §4.3 and the TLV rules of RFC 8972 §4."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from twamp_common import stamp_tlv
from twamp_common.errors import AuthenticationError, RemoteProtocolError
from twamp_common.stamp import FollowUp, build_sender_packet, parse_reply
from twamp_common.stamp_reflector import (
    Arrival,
    Counters,
    ReflectorConfig,
    ReflectorState,
    reflect,
)
from twamp_common.stamp_tlv import (
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Location,
    LocationSubType,
    SubTlv,
    TimestampInformation,
    TlvFlags,
)
from twamp_common.timestamp import ErrorEstimate, ns_to_ntp, ns_to_ptp

KEY = b"a STAMP session key, 32 octets!!"
T1, T2, T3 = 1_700_000_000_000_000_000, 1_700_000_000_000_100_000, 1_700_000_000_000_150_000
SENDER_EE = ErrorEstimate(synchronized=True, scale=10, multiplier=3)
OUR_EE = ErrorEstimate(synchronized=False, scale=20, multiplier=7)
CONFIG = ReflectorConfig(OUR_EE)
AUTH = ReflectorConfig(OUR_EE, authenticated=True)
ARRIVAL = Arrival(
    ttl=61,
    tos=0xB9,  # DSCP 46, ECN 01
    source=("192.0.2.7", 40000),
    destination=("198.51.100.1", 862),
    source_mac=bytes.fromhex("020000aabbcc"),
)


def request(
    seq: int = 5,
    *,
    ssid: int = 0x1234,
    auth: bool = False,
    tlvs: list[stamp_tlv.TlvValue] | None = None,
    key: bytes | None = None,
    size: int | None = None,
) -> bytes:
    return build_sender_packet(
        seq,
        T1,
        error_estimate=SENDER_EE,
        ssid=ssid,
        tlvs=tlvs or [],
        authenticated=auth,
        key=KEY if auth else key,
        size=size,
    )


def answer(data: bytes, config: ReflectorConfig = CONFIG, **kwargs: object) -> bytes:
    kwargs.setdefault("arrival", ARRIVAL)
    return reflect(data, t2_ns=T2, config=config, **kwargs).finish(T3)  # type: ignore[arg-type]


@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth"])
def test_reply_copies_the_sender_fields_and_stamps_t2_t3(auth: bool) -> None:
    sent = request(5, auth=auth)
    reply = parse_reply(
        answer(sent, AUTH if auth else CONFIG, key=KEY), authenticated=auth, key=KEY
    )
    assert (reply.sender_seq, reply.ssid, reply.ttl) == (5, 0x1234, 61)
    assert (reply.t1_ns, reply.t2_ns, reply.t3_ns) == (T1, T2, T3)
    assert reply.sender_error_estimate == SENDER_EE
    assert reply.error_estimate == OUR_EE


@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth"])
def test_reply_is_exactly_as_long_as_the_request(auth: bool) -> None:
    config = AUTH if auth else CONFIG
    for size in (None, 200, 1400):
        sent = request(auth=auth, tlvs=[ClassOfService(46)], size=size)
        assert len(answer(sent, config, key=KEY)) == len(sent)


def test_stateless_reflector_seq_is_the_senders() -> None:
    for seq in (0, 7, 0xFFFFFFFF):
        assert parse_reply(answer(request(seq))).seq == seq


def test_stateful_reflector_counts_per_session_and_ssid_from_zero() -> None:
    state = ReflectorState()
    seqs = [
        parse_reply(answer(request(100 + i, ssid=ssid), state=state, session=peer)).seq
        for i, (peer, ssid) in enumerate([("a", 1), ("a", 1), ("b", 1), ("a", 2), ("a", 1)])
    ]
    assert seqs == [0, 1, 0, 0, 2]
    assert len(state) == 3
    state.forget(("a", 1))
    assert parse_reply(answer(request(ssid=1), state=state, session="a")).seq == 0


def test_stateful_state_is_bounded() -> None:
    state = ReflectorState(max_sessions=2)
    for peer in ("a", "b", "c"):
        answer(request(), state=state, session=peer)
    assert len(state) == 2
    assert parse_reply(answer(request(), state=state, session="a")).seq == 0  # forgotten
    assert parse_reply(answer(request(), state=state, session="c")).seq == 1


def test_t3_is_written_late_and_can_be_rewritten() -> None:
    reflection = reflect(request(), t2_ns=T2, config=CONFIG)
    assert reflection.packet[4:12] == bytes(8)
    assert parse_reply(reflection.finish(T3)).t3_ns == T3
    assert reflection.finish(T3 + 1)[4:12] == ns_to_ntp(T3 + 1).to_bytes(8, "big")


def test_short_request_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        reflect(request()[:43], t2_ns=T2, config=CONFIG)
    with pytest.raises(RemoteProtocolError):
        reflect(request(auth=True)[:111], t2_ns=T2, config=AUTH, key=KEY)


def test_authenticated_request_with_a_bad_hmac_or_no_key_is_dropped() -> None:
    sent = bytearray(request(auth=True))
    with pytest.raises(AuthenticationError):
        reflect(bytes(sent), t2_ns=T2, config=AUTH, key=None)
    sent[3] ^= 1
    state = ReflectorState()
    with pytest.raises(AuthenticationError):
        reflect(bytes(sent), t2_ns=T2, config=AUTH, key=KEY, state=state)
    assert len(state) == 0  # a forged packet does not move the counters


def test_authenticated_reply_hmac_covers_t3() -> None:
    out = answer(request(auth=True), AUTH, key=KEY)
    assert out[96:112] == hmac.new(KEY, out[:96], hashlib.sha256).digest()[:16]


def _reply_tlvs(out: bytes, auth: bool = False) -> tuple[stamp_tlv.Tlv, ...]:
    return stamp_tlv.decode(out, 112 if auth else 44)


def test_understood_tlvs_are_filled_with_flags_clear() -> None:
    sent = request(
        tlvs=[
            ExtraPadding(b"\x55" * 8),
            TimestampInformation(),
            ClassOfService(34),
            DirectMeasurement(9),
            AccessReport(2, 1),
            FollowUpTelemetry(),
            Location.asking(*ASK_ALL),
        ]
    )
    out = answer(sent, counters=Counters(received=9, transmitted=8))
    tlvs = _reply_tlvs(out)
    assert all(tlv.flags == 0 for tlv in tlvs)
    values = [tlv.value for tlv in tlvs]
    assert values[0] == ExtraPadding(b"\x55" * 8)
    assert values[1] == TimestampInformation(1, 2, 1, 2)  # NTP, SW local
    assert values[2] == ClassOfService(34, 46, 1, 0)
    assert values[3] == DirectMeasurement(9, 9, 8)
    assert values[4] == AccessReport(2, 1)
    assert values[5] == FollowUpTelemetry()  # stateless: zeros (RFC 8972 §4.7)
    location = values[6]
    assert isinstance(location, Location)
    assert (location.destination_port, location.source_port) == (862, 40000)
    assert location.answer(LocationSubType.SOURCE_MAC) == bytes.fromhex("020000aabbcc")
    assert location.answer(LocationSubType.DESTINATION_IP) == bytes([198, 51, 100, 1])
    assert location.answer(LocationSubType.SOURCE_IP) == bytes([192, 0, 2, 7])


#: The three generic sub-TLVs a sender asks with (RFC 8972 §4.2.2).
ASK_ALL = (LocationSubType.SOURCE_MAC, LocationSubType.DESTINATION_IP, LocationSubType.SOURCE_IP)


def test_location_sub_tlvs_are_answered_with_the_specific_types() -> None:
    out = answer(request(tlvs=[Location.asking(*ASK_ALL)]))
    assert out[44:] == bytes.fromhex(
        "00 02 0038 035E 9C40"  # ports 862 and 40000
        " 00 02 0008 020000AABBCC 0000"  # Source EUI-48 Address, 2 MBZ
        " 00 05 0010 C6336401 000000000000000000000000"  # Destination IPv4 198.51.100.1
        " 00 08 0010 C0000207 000000000000000000000000"  # Source IPv4 192.0.2.7
    )


def test_location_over_ipv6_and_with_an_eui_64_source() -> None:
    v6 = Arrival(
        source=("2001:db8::7", 1),
        destination=("2001:db8::1", 862),
        source_mac=bytes.fromhex("0200aabbccddeeff"),
    )
    out = answer(request(tlvs=[Location.asking(*ASK_ALL)]), arrival=v6)
    assert out[44:] == bytes.fromhex(
        "00 02 0038 035E 0001"
        " 00 03 0008 0200AABBCCDDEEFF"  # Source EUI-64 Address
        " 00 06 0010 20010DB8000000000000000000000001"  # Destination IPv6
        " 00 09 0010 20010DB8000000000000000000000007"  # Source IPv6
    )


def test_location_without_a_source_mac_or_addresses() -> None:
    out = answer(request(tlvs=[Location.asking(*ASK_ALL)]), arrival=Arrival())
    assert out[44:] == bytes.fromhex(
        "80 02 0038 0000 0000"  # ports unknown: U
        " 00 03 0008 0000000000000000"  # "MUST zero the EUI-64 field" (§4.2.2)
        " 80 04 0010 00000000000000000000000000000000"  # no address known: U, still generic
        " 80 07 0010 00000000000000000000000000000000"
    )


def test_location_sub_tlv_processing_stops_at_a_malformed_one() -> None:
    subs = (
        SubTlv(8, bytes(16), 0x80),  # an answer type in a request: not a question
        SubTlv(4, bytes(8), 0x80),  # Length 8, the type needs 16
        SubTlv(7, bytes(16), 0x80),  # after the M: returned as received
    )
    (tlv,) = _reply_tlvs(answer(request(tlvs=[Location(sub_tlvs=subs)])))
    assert tlv.flags == 0
    assert isinstance(tlv.value, Location)
    assert tlv.value.sub_tlvs == (
        SubTlv(8, bytes(16), 0x80),
        SubTlv(4, bytes(8), 0x40),
        SubTlv(7, bytes(16), 0x80),
    )


def test_follow_up_telemetry_is_filled_in_stateful_mode_only() -> None:
    previous = FollowUp(4, T2 - 7, 1)
    sent = request(tlvs=[FollowUpTelemetry()])
    stateless = _reply_tlvs(answer(sent, follow_up=previous))[0]
    assert stateless.flags == 0 and stateless.value == FollowUpTelemetry()
    out = answer(sent, follow_up=previous, state=ReflectorState(), session="s")
    assert out[44:] == bytes.fromhex("00 07 0010 00000004") + ns_to_ntp(T2 - 7).to_bytes(
        8, "big"
    ) + bytes.fromhex("01 000000")


def test_follow_up_telemetry_of_a_wrong_length_is_zeroed_and_flagged_m() -> None:
    sent = request() + bytes.fromhex("80 07 000E" + "11" * 14)
    out = answer(sent, follow_up=FollowUp(4, T2, 1), state=ReflectorState(), session="s")
    assert out[44:] == bytes.fromhex("40 07 000E" + "00" * 12 + "1111")


def test_access_report_is_echoed_and_an_invalid_access_id_flagged_u() -> None:
    sent = request() + bytes.fromhex("80 06 0004 2F 01 ABCD")  # Resv and Reserved not zero
    assert answer(sent)[44:] == bytes.fromhex("00 06 0004 20 01 0000")
    for access_id in ("00", "30", "F0"):
        sent = request() + bytes.fromhex(f"80 06 0004 {access_id} 01 0000")
        assert answer(sent)[44:] == bytes.fromhex(f"80 06 0004 {access_id} 01 0000")


def test_class_of_service_asks_the_reply_dscp_within_policy() -> None:
    sent = request(tlvs=[ClassOfService(34)])
    reflection = reflect(sent, t2_ns=T2, config=CONFIG, arrival=ARRIVAL)
    assert reflection.reply_dscp == 34
    # DSCP1 34 (100010), DSCP2 46 (101110), ECN 01, RP 0: 1000 1010 1110 0100.
    assert reflection.finish(T3)[44:] == bytes.fromhex("00 04 0004 8AE4 0000")
    strict = ReflectorConfig(OUR_EE, permitted_dscp=frozenset({0, 10}))
    reflection = reflect(sent, t2_ns=T2, config=strict, arrival=ARRIVAL)
    assert reflection.reply_dscp == 46  # refused: the DSCP the request arrived with
    # RP 1: 1000 1010 1110 0101.
    assert reflection.finish(T3)[44:] == bytes.fromhex("00 04 0004 8AE5 0000")


def test_stateful_direct_measurement_counts_itself() -> None:
    state = ReflectorState()
    for _ in range(3):
        out = answer(request(tlvs=[DirectMeasurement(1)]), state=state, session="s")
    assert _reply_tlvs(out)[0].value == DirectMeasurement(1, 3, 3)


def test_what_the_io_layer_does_not_know_is_flagged_u_and_zeroed() -> None:
    sent = request(tlvs=[ClassOfService(46), DirectMeasurement(1), Location.asking()])
    tlvs = _reply_tlvs(answer(sent, arrival=Arrival()))
    assert [tlv.flags for tlv in tlvs] == [0x80, 0x80, 0x80]
    assert tlvs[2].value == Location(0, 0)


def test_follow_up_without_a_previous_reply_is_zero() -> None:
    (tlv,) = _reply_tlvs(answer(request(tlvs=[FollowUpTelemetry(1, 2, 3)])))
    assert tlv.flags == 0 and tlv.value == FollowUpTelemetry()


def test_unknown_tlv_is_echoed_with_u_set() -> None:
    odd = bytes.fromhex("80 63 0003 010203".replace(" ", ""))
    zeroed = bytes.fromhex("00 00 0000".replace(" ", ""))
    out = answer(request() + odd + zeroed)
    assert out[44:] == bytes.fromhex("80 63 0003 010203 80 00 0000".replace(" ", ""))


def test_unknown_sub_tlvs_are_flagged_u() -> None:
    sent = request(tlvs=[TimestampInformation(sub_tlvs=(SubTlv(9, b"ab", 0),))])
    (tlv,) = _reply_tlvs(answer(sent))
    assert tlv.flags == 0
    assert isinstance(tlv.value, TimestampInformation)
    assert tlv.value.sub_tlvs == (SubTlv(9, b"ab", 0x80),)
    sent = request(tlvs=[Location(sub_tlvs=(SubTlv(77, b"", 0), SubTlv(2, b"12", 0)))])
    (tlv,) = _reply_tlvs(answer(sent))
    assert isinstance(tlv.value, Location)
    assert [sub.flags for sub in tlv.value.sub_tlvs] == [0x80, 0x40]  # unknown; wrong length


def test_length_wrong_for_the_type_is_flagged_m_and_processing_stops() -> None:
    bad_cos = bytes.fromhex("8004000200 00".replace(" ", ""))
    rest = stamp_tlv.encode([DirectMeasurement(1), ClassOfService(46)])
    out = answer(request() + bad_cos + rest, counters=Counters(1, 1))
    assert out[44] == TlvFlags.MALFORMED
    assert out[45:50] == bad_cos[1:]
    assert out[50:] == rest  # "copy the remainder of the received extended STAMP packet"


def test_overrunning_tlv_is_flagged_m_and_nothing_grows() -> None:
    for tail in ("80040010 0000", "8004", "80"):
        sent = request() + bytes.fromhex(tail.replace(" ", ""))
        out = answer(sent)
        assert len(out) == len(sent)
        assert out[44] == TlvFlags.MALFORMED
        assert out[45:] == sent[45:]
    for tlv in ("80020008 00000000 80010010", "80030008 09090909 80010010"):
        sub_overrun = request() + bytes.fromhex(tlv)
        out = answer(sub_overrun, arrival=ARRIVAL)
        assert out[44] == TlvFlags.MALFORMED
        assert out[45:] == sub_overrun[45:]  # nothing filled in


def test_reserved_flag_bits_are_zeroed_in_the_reply() -> None:
    sent = bytearray(request(tlvs=[ExtraPadding(b"x")]))
    sent[44] = 0x9F
    assert answer(bytes(sent))[44] == 0


def test_hmac_tlv_is_verified_and_the_reply_sealed() -> None:
    sent = request(tlvs=[ClassOfService(46)], key=KEY)
    out = answer(sent, key=KEY)
    reply = parse_reply(out, key=KEY)
    assert reply.tlv_integrity is True
    assert [tlv.flags for tlv in reply.tlvs] == [0, 0]
    assert reply.class_of_service == ClassOfService(46, 46, 1)


@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth"])
def test_failed_hmac_tlv_sets_i_on_every_tlv_and_fills_nothing(auth: bool) -> None:
    config = AUTH if auth else CONFIG
    at = 112 if auth else 44
    sent = bytearray(request(auth=auth, tlvs=[ClassOfService(46), DirectMeasurement(1)], key=KEY))
    sent[at + 5] ^= 0x04  # DSCP1 changed after sealing
    if auth:  # keep the base HMAC right: only the extensions are tampered with
        sent[96:112] = hmac.new(KEY, bytes(sent[:96]), hashlib.sha256).digest()[:16]
    reflection = reflect(bytes(sent), t2_ns=T2, config=config, arrival=ARRIVAL, key=KEY)
    assert reflection.reply_dscp is None
    out = reflection.finish(T3)
    assert [tlv.flags for tlv in _reply_tlvs(out, auth)] == [0x20, 0x20, 0x20]
    assert out[at + 4 : at + 8] == sent[at + 4 : at + 8]  # echoed, not filled
    # The reply itself is sealed by the reflector: authentic, and its I flags tell the news.
    reply = parse_reply(out, authenticated=auth, key=KEY)
    assert reply.tlv_integrity is True
    assert reply.class_of_service is None


def test_hmac_tlv_is_required_in_authenticated_mode_and_must_be_last() -> None:
    bare = bytearray(request(auth=True))
    bare += stamp_tlv.encode([ClassOfService(46)])
    out = answer(bytes(bare), AUTH, key=KEY)
    assert _reply_tlvs(out, True)[0].flags == TlvFlags.INTEGRITY
    # HMAC TLV followed by a TLV other than Extra Padding: misplaced.
    sent = request(tlvs=[ClassOfService(46)], key=KEY) + stamp_tlv.encode([DirectMeasurement()])
    assert {tlv.flags for tlv in _reply_tlvs(answer(sent, key=KEY))} == {TlvFlags.INTEGRITY}
    # Followed by Extra Padding: in place.
    sent = request(tlvs=[ClassOfService(46)], key=KEY) + stamp_tlv.encode([ExtraPadding(b"p")])
    assert {tlv.flags for tlv in _reply_tlvs(answer(sent, key=KEY))} == {0}
    # No key to check it with.
    sent = request(tlvs=[ClassOfService(46)], key=KEY)
    assert {tlv.flags for tlv in _reply_tlvs(answer(sent))} == {TlvFlags.INTEGRITY}


def test_rfc_8762_only_reflector_copies_the_extension_untouched() -> None:
    plain = ReflectorConfig(OUR_EE, extensions=False)
    sent = request(tlvs=[ClassOfService(46)])
    out = answer(sent, plain)
    assert out[44:] == sent[44:]
    assert _reply_tlvs(out)[0].flags == TlvFlags.UNRECOGNIZED  # what the sender learns


def test_ipv4_mapped_addresses_are_answered_as_ipv4() -> None:
    sent = request(tlvs=[Location.asking(LocationSubType.SOURCE_IP)])
    mapped = Arrival(source=("::ffff:192.0.2.7", 1), destination=("::ffff:192.0.2.1", 862))
    location = _reply_tlvs(answer(sent, arrival=mapped))[0].value
    assert isinstance(location, Location)
    assert location.sub_tlvs[0].type == LocationSubType.SOURCE_IPV4
    assert location.answer(LocationSubType.SOURCE_IP) == bytes([192, 0, 2, 7])


def test_a_ptp_reflector_writes_t2_t3_and_the_follow_up_timestamp_in_ptp_format() -> None:
    ptp = ReflectorConfig(ErrorEstimate(synchronized=True, scale=0, multiplier=1, ptp=True))
    sent = request(tlvs=[FollowUpTelemetry()])
    out = answer(sent, ptp, follow_up=FollowUp(4, T2 - 7, 1), state=ReflectorState(), session="s")
    assert out[4:12] == ns_to_ptp(T3).to_bytes(8, "big")
    assert out[16:24] == ns_to_ptp(T2).to_bytes(8, "big")
    assert out[52:60] == ns_to_ptp(T2 - 7).to_bytes(8, "big")
    reply = parse_reply(out)
    assert (reply.t2_ns, reply.t3_ns) == (T2, T3)
    follow_up = reply.follow_up
    assert follow_up is not None and follow_up.t3_ns == T2 - 7
