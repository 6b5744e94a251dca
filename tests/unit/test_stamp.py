"""STAMP packets and TLVs against octets written by hand from RFC 8762 §4.2–4.4 and RFC 8972."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import pytest
from twamp_common import stamp_tlv
from twamp_common.errors import AuthenticationError, RemoteProtocolError
from twamp_common.stamp import (
    BASE_SIZE,
    StampReflectorPacket,
    StampSenderPacket,
    build_sender_packet,
    parse_reply,
    peek_ssid,
    tlv_integrity,
)
from twamp_common.stamp_tlv import (
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Hmac,
    Location,
    LocationSubType,
    SubTlv,
    TimestampInformation,
    Tlv,
    TlvFlags,
    Unknown,
)
from twamp_common.test_packets import ReflectorPacket
from twamp_common.timestamp import ErrorEstimate, ns_to_ntp, ns_to_ptp, ntp_to_ns

KEY = bytes(range(32))
T1 = 0xE1E2E3E4_F1F2F3F4
T2 = 0xA1A2A3A4_B1B2B3B4
T3 = 0xC1C2C3C4_D1D2D3D4


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def sha256_128(data: bytes) -> bytes:
    """The RFC's HMAC, computed here independently of twamp_common.crypto."""
    return hmac.new(KEY, data, hashlib.sha256).digest()[:16]


# RFC 8762 Figure 2 with RFC 8972 Figure 1: Sequence Number, Timestamp, Error Estimate, SSID,
# MBZ (28).
OPEN_SENDER = hexbytes("""
    00000102 E1E2E3E4 F1F2F3F4 8001 ABCD
    00000000 00000000 00000000 00000000 00000000 00000000 00000000
""")
# RFC 8762 Figure 3 with RFC 8972 Figure 2: Sequence Number, MBZ (12), Timestamp, Error
# Estimate, SSID, MBZ (68), HMAC (16).
AUTH_SENDER_96 = hexbytes(
    "00000102 000000000000000000000000 E1E2E3E4 F1F2F3F4 8001 ABCD" + "00" * 68
)
AUTH_SENDER = AUTH_SENDER_96 + sha256_128(AUTH_SENDER_96)
# RFC 8762 Figure 4 (SSID in place of the first MBZ): Sequence Number, Timestamp, Error
# Estimate, SSID, Receive Timestamp, Sender Sequence Number, Sender Timestamp, Sender Error
# Estimate, MBZ (2), Sender TTL, MBZ (3).
OPEN_REFLECTOR = hexbytes("""
    00000009 C1C2C3C4 D1D2D3D4 0102 ABCD
    A1A2A3A4 B1B2B3B4 00000102 E1E2E3E4 F1F2F3F4 8001 0000 40 000000
""")
# RFC 8762 Figure 5 (SSID after the Error Estimate): the same fields on 16-octet rows, HMAC at 96.
AUTH_REFLECTOR_96 = hexbytes("""
    00000009 000000000000000000000000
    C1C2C3C4 D1D2D3D4 0102 ABCD 00000000
    A1A2A3A4 B1B2B3B4 0000000000000000
    00000102 000000000000000000000000
    E1E2E3E4 F1F2F3F4 8001 000000000000
    40 000000000000000000000000000000
""")
AUTH_REFLECTOR = AUTH_REFLECTOR_96 + sha256_128(AUTH_REFLECTOR_96)
BASE = ReflectorPacket(9, T3, 0x0102, T2, 0x102, T1, 0x8001, 0x40)


def test_base_sizes_are_44_and_112() -> None:
    assert BASE_SIZE == {False: 44, True: 112}
    assert len(OPEN_SENDER) == len(OPEN_REFLECTOR) == 44
    assert len(AUTH_SENDER) == len(AUTH_REFLECTOR) == 112


@pytest.mark.parametrize(
    ("authenticated", "wire"), [(False, OPEN_SENDER), (True, AUTH_SENDER)], ids=["open", "auth"]
)
def test_sender_packet_layout(authenticated: bool, wire: bytes) -> None:
    packet = StampSenderPacket(0x102, T1, 0x8001, 0xABCD)
    assert packet.pack(authenticated=authenticated, key=KEY) == wire
    assert StampSenderPacket.unpack(wire + b"xyz", authenticated=authenticated, key=KEY) == (
        StampSenderPacket(0x102, T1, 0x8001, 0xABCD, b"xyz")
    )
    assert peek_ssid(wire, authenticated=authenticated) == 0xABCD


@pytest.mark.parametrize(
    ("authenticated", "wire"),
    [(False, OPEN_REFLECTOR), (True, AUTH_REFLECTOR)],
    ids=["open", "auth"],
)
def test_reflector_packet_layout(authenticated: bool, wire: bytes) -> None:
    packet = StampReflectorPacket(BASE, 0xABCD)
    assert packet.pack(authenticated=authenticated, key=KEY) == wire
    unpacked = StampReflectorPacket.unpack(wire, authenticated=authenticated, key=KEY)
    assert unpacked.base.hmac == (wire[96:] if authenticated else bytes(16))
    assert dataclasses.replace(
        unpacked, base=dataclasses.replace(unpacked.base, hmac=bytes(16))
    ) == (packet)


def test_mbz_octets_are_ignored_on_receipt() -> None:
    dirty = bytearray(OPEN_SENDER)
    dirty[16:44] = b"\xff" * 28
    assert StampSenderPacket.unpack(bytes(dirty)).seq == 0x102
    dirty = bytearray(OPEN_REFLECTOR)
    dirty[38:40] = b"\xff\xff"
    dirty[41:44] = b"\xff\xff\xff"
    assert StampReflectorPacket.unpack(bytes(dirty)).base.sender_ttl == 0x40


@pytest.mark.parametrize("cls", [StampSenderPacket, StampReflectorPacket])
@pytest.mark.parametrize("authenticated", [False, True])
def test_short_packet_is_a_protocol_error(cls: type, authenticated: bool) -> None:
    with pytest.raises(RemoteProtocolError, match="shorter than"):
        cls.unpack(bytes(BASE_SIZE[authenticated] - 1), authenticated=authenticated, key=KEY)


@pytest.mark.parametrize("wire", [AUTH_SENDER, AUTH_REFLECTOR], ids=["sender", "reflector"])
def test_authenticated_hmac_covers_octets_0_to_95(wire: bytes) -> None:
    cls = StampSenderPacket if wire is AUTH_SENDER else StampReflectorPacket
    for octet in (0, 20, 95):
        tampered = bytearray(wire)
        tampered[octet] ^= 1
        with pytest.raises(AuthenticationError):
            cls.unpack(bytes(tampered), authenticated=True, key=KEY)
    with pytest.raises(AuthenticationError):
        cls.unpack(wire, authenticated=True, key=bytes(32))
    with pytest.raises(AuthenticationError, match="no key"):
        cls.unpack(wire, authenticated=True, key=None)
    # What follows the base packet is not covered by the base HMAC.
    cls.unpack(wire + b"\x01\x02", authenticated=True, key=KEY)


# --- TLVs: RFC 8972 §4.1–4.8, value by value ------------------------------------------------

TLV_VECTORS = [
    (ExtraPadding(b"\xaa\xbb\xcc"), "80 01 0003 AABBCC"),
    # Destination Port 862, Source Port 5000, then a Source IPv4 Address sub-TLV (Type 8,
    # Length 16): the address and 12 MBZ octets (RFC 8972 §4.2.1, Figure 10).
    (
        Location(862, 5000, (SubTlv(8, bytes([127, 0, 0, 1]) + bytes(12)),)),
        "80 02 0018 035E 1388  00 08 0010 7F000001 000000000000000000000000",
    ),
    (TimestampInformation(1, 2, 5, 3), "80 03 0004 01 02 05 03"),
    # DSCP1 46 (101110), DSCP2 10 (001010), ECN 01, RP 01: 1011 1000 1010 0101, Reserved.
    (ClassOfService(46, 10, 1, 1), "80 04 0004 B8A5 0000"),
    (DirectMeasurement(1, 2, 0xFFFFFFFF), "80 05 000C 00000001 00000002 FFFFFFFF"),
    # ID 2 (non-3GPP) in the high nibble, Return Code 1.
    (AccessReport(2, 1), "80 06 0004 20 01 0000"),
    (FollowUpTelemetry(7, T3, 1), "80 07 0010 00000007 C1C2C3C4D1D2D3D4 01 000000"),
    (Hmac(bytes(range(16))), "80 08 0010 000102030405060708090A0B0C0D0E0F"),
]


@pytest.mark.parametrize(("value", "wire"), TLV_VECTORS, ids=lambda v: type(v).__name__)
def test_tlv_layout(value: stamp_tlv.TlvValue, wire: str) -> None:
    octets = hexbytes(wire)
    assert stamp_tlv.encode([value]) == octets
    assert stamp_tlv.decode(octets) == (Tlv(TlvFlags.UNRECOGNIZED, value),)


def test_location_sub_tlv_types_are_the_iana_registry() -> None:
    names = [kind.name for kind in LocationSubType]
    assert [kind.value for kind in LocationSubType] == list(range(1, 10))
    assert names == [
        "SOURCE_MAC", "SOURCE_EUI48", "SOURCE_EUI64",
        "DESTINATION_IP", "DESTINATION_IPV4", "DESTINATION_IPV6",
        "SOURCE_IP", "SOURCE_IPV4", "SOURCE_IPV6",
    ]  # fmt: skip
    assert [kind.size for kind in LocationSubType] == [8] * 3 + [16] * 6
    assert [kind.request.value for kind in LocationSubType] == [1, 1, 1, 4, 4, 4, 7, 7, 7]
    assert [kind.address_size for kind in LocationSubType] == [0, 6, 8, 0, 4, 16, 0, 4, 16]


def test_location_asks_with_the_generic_sub_tlvs_all_mbz() -> None:
    asked = Location.asking(
        LocationSubType.SOURCE_MAC, LocationSubType.DESTINATION_IP, LocationSubType.SOURCE_IP
    )
    assert stamp_tlv.encode([asked]) == hexbytes(
        "80 02 0038 0000 0000"  # 4 + 12 + 20 + 20 octets
        " 80 01 0008 0000000000000000"
        " 80 04 0010 00000000000000000000000000000000"
        " 80 07 0010 00000000000000000000000000000000"
    )
    with pytest.raises(ValueError, match="ask with SOURCE_IP"):
        Location.asking(LocationSubType.SOURCE_IPV4)


def test_location_answers_are_read_without_their_mbz_octets() -> None:
    location = Location(
        sub_tlvs=(
            SubTlv(2, bytes.fromhex("020000aabbcc") + bytes(2)),
            SubTlv(5, bytes([198, 51, 100, 1]) + bytes(12)),
            SubTlv(9, bytes(16)),  # unreported: zeros
        )
    )
    assert location.answer(LocationSubType.SOURCE_MAC) == bytes.fromhex("020000aabbcc")
    assert location.answer(LocationSubType.SOURCE_EUI64) is None
    assert location.answer(LocationSubType.DESTINATION_IP) == bytes([198, 51, 100, 1])
    assert location.answer(LocationSubType.DESTINATION_IPV4) == bytes([198, 51, 100, 1])
    assert location.answer(LocationSubType.SOURCE_IP) is None
    flagged = Location(sub_tlvs=(SubTlv(1, bytes(8), 0x40), SubTlv(5, b"\x01" * 16)))
    assert flagged.answer(LocationSubType.DESTINATION_IP) is None  # after an M: not read


def test_access_report_ids_other_than_1_or_2_are_discarded() -> None:
    for access_id in (0, 3, 15):
        with pytest.raises(ValueError, match="only 1"):
            AccessReport(access_id, 1)
        (tlv,) = stamp_tlv.decode(bytes([0x80, 6, 0, 4, access_id << 4, 1, 0, 0]))
        assert isinstance(tlv.value, Unknown) and "neither 1 nor 2" in tlv.value.reason
    # Resv and Reserved are ignored on receipt.
    (tlv,) = stamp_tlv.decode(hexbytes("80 06 0004 1F 02 FFFF"))
    assert tlv.value == AccessReport(stamp_tlv.AccessId.THREE_GPP, 2)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("80 04 0002 0000", "needs 4"),
        ("80 05 0004 00000000", "needs 12"),
        ("80 02 0002 0000", "at least 4"),
        ("80 02 0006 0000 0000 0001", "sub-TLV"),
        ("80 08 0004 00000000", "needs 16"),
    ],
)
def test_wrong_length_for_the_type_decodes_as_unknown(wire: str, reason: str) -> None:
    (tlv,) = stamp_tlv.decode(hexbytes(wire))
    assert isinstance(tlv.value, Unknown)
    assert reason in tlv.value.reason
    assert not tlv.understood


def test_overrunning_tlv_ends_the_list() -> None:
    tlvs = stamp_tlv.decode(hexbytes("80 01 0001 AA  80 04 0010 0000"))
    assert tlvs[0].value == ExtraPadding(b"\xaa")
    assert isinstance(tlvs[1].value, Unknown)
    assert "past the end" in tlvs[1].value.reason
    frames = stamp_tlv.frames(hexbytes("80 01 0001 AA 80 04"), 0)
    assert [f.complete for f in frames] == [True, False]


def test_unassigned_flag_bits_are_ignored_on_receipt() -> None:
    (tlv,) = stamp_tlv.decode(hexbytes("1F 04 0004 B8A5 0000"))
    assert tlv.flags == 0
    assert tlv.understood


def test_tlv_types_and_flags_are_the_registries() -> None:
    assert [t.value for t in stamp_tlv.TlvType] == list(range(1, 9))
    assert (TlvFlags.UNRECOGNIZED, TlvFlags.MALFORMED, TlvFlags.INTEGRITY) == (0x80, 0x40, 0x20)
    assert [s.value for s in stamp_tlv.SyncSource] == [1, 2, 3, 4, 5]
    assert stamp_tlv.SyncSource.NTP == 1 and stamp_tlv.SyncSource.PTP == 2
    assert stamp_tlv.SyncSource.LOCAL_FREE_RUNNING == 5
    assert [m.value for m in stamp_tlv.TimestampMethod] == [1, 2, 3]
    assert stamp_tlv.TimestampMethod.HW_ASSIST == 1
    assert stamp_tlv.TimestampMethod.SW_LOCAL == 2
    assert stamp_tlv.TimestampMethod.CONTROL_PLANE == 3
    assert [code.value for code in stamp_tlv.ReturnCode] == [1, 2]
    assert (stamp_tlv.AccessId.THREE_GPP, stamp_tlv.AccessId.NON_THREE_GPP) == (1, 2)


# --- the sender's packet ----------------------------------------------------------------------

EE = ErrorEstimate(synchronized=True, scale=0, multiplier=1)
T1_NS = ntp_to_ns(T1)
#: The base packets with T1 as a whole number of nanoseconds puts it on the wire.
OPEN_SENDER_NS = OPEN_SENDER[:4] + ns_to_ntp(T1_NS).to_bytes(8, "big") + OPEN_SENDER[12:]
AUTH_SENDER_NS_96 = AUTH_SENDER_96[:16] + ns_to_ntp(T1_NS).to_bytes(8, "big") + AUTH_SENDER_96[24:]


def test_built_packet_without_tlvs_is_the_base_packet() -> None:
    assert build_sender_packet(0x102, T1_NS, error_estimate=EE, ssid=0xABCD) == OPEN_SENDER_NS
    built = build_sender_packet(
        0x102, T1_NS, error_estimate=EE, ssid=0xABCD, authenticated=True, key=KEY
    )
    assert built == AUTH_SENDER_NS_96 + sha256_128(AUTH_SENDER_NS_96)


def test_built_tlvs_carry_u_set_and_an_hmac_tlv_last() -> None:
    built = build_sender_packet(
        0x102, T1_NS, error_estimate=EE, ssid=0xABCD, tlvs=[ClassOfService(46)], key=KEY
    )
    cos = hexbytes("80 04 0004 B800 0000")
    assert built[:44] == OPEN_SENDER_NS
    assert built[44:52] == cos
    # HMAC TLV: HMAC-SHA-256/128 of the Sequence Number and the TLVs before it.
    assert built[52:56] == hexbytes("80 08 0010")
    assert built[56:] == sha256_128(OPEN_SENDER[:4] + cos)


def test_built_packet_reaches_the_asked_size_with_extra_padding() -> None:
    built = build_sender_packet(1, T1_NS, error_estimate=EE, size=100)
    assert len(built) == 100
    assert built[44:48] == hexbytes("80 01 0034")
    auth = build_sender_packet(1, T1_NS, error_estimate=EE, authenticated=True, key=KEY, size=200)
    assert len(auth) == 200
    assert [f.type for f in stamp_tlv.frames(auth, 112)] == [1, 8]
    with pytest.raises(ValueError, match="cannot hold"):
        build_sender_packet(1, T1_NS, error_estimate=EE, size=46)
    with pytest.raises(ValueError, match="needs a key"):
        build_sender_packet(1, T1_NS, error_estimate=EE, authenticated=True)


# --- the sender's view of a reply ------------------------------------------------------------


def test_parse_reply_gives_the_figures_in_nanoseconds() -> None:
    reply = parse_reply(OPEN_REFLECTOR)
    assert (reply.seq, reply.sender_seq, reply.ssid, reply.ttl) == (9, 0x102, 0xABCD, 0x40)
    assert (reply.t1_ns, reply.t2_ns, reply.t3_ns) == (T1_NS, ntp_to_ns(T2), ntp_to_ns(T3))
    assert reply.tlvs == () and reply.tlv_integrity is None
    assert reply.sender_error_estimate.synchronized


def test_parse_reply_reads_ptp_timestamps_when_z_is_set() -> None:
    t2 = ns_to_ptp(1_700_000_000_123_456_789)
    ptp = ReflectorPacket(1, t2 + 5, 0x4001, t2, 1, T1, 0x8001, 64)
    reply = parse_reply(StampReflectorPacket(ptp).pack())
    assert reply.t2_ns == 1_700_000_000_123_456_789
    assert reply.t3_ns == reply.t2_ns + 5
    assert reply.t1_ns == T1_NS  # the sender's own Z bit (0): NTP


def test_parse_reply_figures_only_from_tlvs_the_reflector_understood() -> None:
    tlvs = (
        stamp_tlv.encode([ClassOfService(46, 10, 1)], flags=0)
        + stamp_tlv.encode([DirectMeasurement(1, 1, 1)], flags=TlvFlags.UNRECOGNIZED)
        + stamp_tlv.encode([FollowUpTelemetry(8, T3, 1)], flags=0)
    )
    reply = parse_reply(OPEN_REFLECTOR + tlvs)
    assert reply.class_of_service == ClassOfService(46, 10, 1)
    assert reply.direct_measurement is None
    follow_up = reply.follow_up
    assert follow_up is not None
    assert (follow_up.seq, follow_up.t3_ns, follow_up.method) == (8, ntp_to_ns(T3), 1)


def test_parse_reply_stops_at_m_and_discards_everything_at_i() -> None:
    cos = stamp_tlv.encode([ClassOfService(46, 10, 1)], flags=0)
    counters = stamp_tlv.encode([DirectMeasurement(1, 1, 1)], flags=0)
    malformed = stamp_tlv.encode([ExtraPadding(b"x")], flags=TlvFlags.MALFORMED)
    reply = parse_reply(OPEN_REFLECTOR + cos + malformed + counters)
    assert reply.class_of_service == ClassOfService(46, 10, 1)
    assert reply.direct_measurement is None  # after the M: not processed
    assert [tlv.type for tlv in reply.usable_tlvs] == [4]
    broken = stamp_tlv.encode([ExtraPadding(b"x")], flags=TlvFlags.INTEGRITY)
    reply = parse_reply(OPEN_REFLECTOR + cos + counters + broken)
    assert reply.usable_tlvs == () and reply.class_of_service is None


def test_a_lone_extra_padding_tlv_needs_no_hmac_tlv_in_authenticated_mode() -> None:
    base = build_sender_packet(1, T1_NS, error_estimate=EE, authenticated=True, key=KEY)
    padded = base + stamp_tlv.encode([ExtraPadding(bytes(8))])
    found = stamp_tlv.frames(padded, 112)
    assert tlv_integrity(padded, found, authenticated=True, key=KEY) is None
    two = padded + stamp_tlv.encode([ExtraPadding(bytes(2))])
    found = stamp_tlv.frames(two, 112)
    assert tlv_integrity(two, found, authenticated=True, key=KEY) is False
    cos = base + stamp_tlv.encode([ClassOfService(46)])
    found = stamp_tlv.frames(cos, 112)
    assert tlv_integrity(cos, found, authenticated=True, key=KEY) is False
