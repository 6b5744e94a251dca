"""Property tests of STAMP: any input to the reflector, and encode/decode round trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import u8, u16, u32, u64
from twamp_common import stamp_tlv
from twamp_common.errors import ProtocolError
from twamp_common.stamp import (
    FollowUp,
    StampReflectorPacket,
    StampSenderPacket,
    build_sender_packet,
    parse_reply,
)
from twamp_common.stamp_reflector import (
    Arrival,
    Counters,
    ReflectorConfig,
    ReflectorState,
    reflect,
)
from twamp_common.test_packets import ReflectorPacket
from twamp_common.timestamp import ErrorEstimate

KEY = b"k" * 32
EE = ErrorEstimate(synchronized=False, scale=8, multiplier=1)
u6 = st.integers(0, 63)
u2 = st.integers(0, 3)
sub_tlvs = st.lists(st.builds(stamp_tlv.SubTlv, u8, st.binary(max_size=20), u8), max_size=3)
tlv_values = st.one_of(
    st.builds(stamp_tlv.ExtraPadding, st.binary(max_size=40)),
    st.builds(stamp_tlv.Location, u16, u16, sub_tlvs.map(tuple)),
    st.builds(stamp_tlv.TimestampInformation, u8, u8, u8, u8, sub_tlvs.map(tuple)),
    st.builds(stamp_tlv.ClassOfService, u6, u6, u2, u2),
    st.builds(stamp_tlv.DirectMeasurement, u32, u32, u32),
    st.builds(stamp_tlv.AccessReport, st.sampled_from(stamp_tlv.AccessId), u8),
    st.builds(stamp_tlv.FollowUpTelemetry, u32, u64, u8),
    st.builds(stamp_tlv.Hmac, st.binary(min_size=16, max_size=16)),
)
arrivals = st.builds(
    Arrival,
    ttl=u8,
    tos=st.none() | u8,
    source=st.none() | st.tuples(st.sampled_from(["192.0.2.1", "2001:db8::1", "x"]), u16),
    destination=st.none() | st.tuples(st.sampled_from(["::ffff:10.0.0.1", "::1"]), u16),
    source_mac=st.none() | st.binary(min_size=6, max_size=8),
)
configs = st.builds(
    ReflectorConfig,
    st.just(EE),
    authenticated=st.booleans(),
    extensions=st.booleans(),
    permitted_dscp=st.none() | st.frozensets(u6),
)
# Requests that are mostly well-formed STAMP, then damaged: deeper than random bytes reach.
built = st.builds(
    lambda seq, tlvs, auth, key, cut, flip: _damage(
        build_sender_packet(
            seq, 10**18, error_estimate=EE, tlvs=tlvs, authenticated=auth, key=KEY if auth else key
        ),
        cut,
        flip,
    ),
    u32,
    st.lists(tlv_values.filter(lambda v: not isinstance(v, stamp_tlv.Hmac)), max_size=5),
    st.booleans(),
    st.sampled_from([None, KEY]),
    st.integers(0, 40),
    st.lists(st.tuples(st.integers(0, 400), u8), max_size=4),
)


def _damage(packet: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(packet[: max(len(packet) - cut, 0)])
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    return bytes(data)


@settings(max_examples=400)
@given(
    st.binary(max_size=400) | built,
    configs,
    arrivals,
    st.sampled_from([None, KEY]),
    st.booleans(),
    st.none() | st.builds(Counters, u32, u32),
    st.none() | st.builds(FollowUp, u32, st.integers(0, 2**62), u8),
)
def test_reflect_never_fails_otherwise_and_never_amplifies(
    data: bytes,
    config: ReflectorConfig,
    arrival: Arrival,
    key: bytes | None,
    stateful: bool,
    counters: Counters | None,
    follow_up: FollowUp | None,
) -> None:
    try:
        reflection = reflect(
            data,
            t2_ns=10**18,
            config=config,
            arrival=arrival,
            key=key,
            state=ReflectorState() if stateful else None,
            session=("peer", 1),
            counters=counters,
            follow_up=follow_up,
        )
    except ProtocolError:
        return
    out = reflection.finish(10**18 + 1)
    assert len(out) == len(data)
    # What we send, a sender (and our own parser) can read.
    parse_reply(out, authenticated=config.authenticated, key=key)


@given(st.binary(max_size=300), st.integers(0, 300))
def test_tlv_decoding_never_raises(data: bytes, start: int) -> None:
    for tlv in stamp_tlv.decode(data, start):
        assert tlv.flags & ~stamp_tlv.ASSIGNED_FLAGS == 0


@given(st.lists(tlv_values, max_size=6), st.sampled_from([0, 0x80, 0xE0]))
def test_tlvs_round_trip(values: list[stamp_tlv.TlvValue], flags: int) -> None:
    decoded = stamp_tlv.decode(stamp_tlv.encode(values, flags))
    assert [tlv.value for tlv in decoded] == values
    assert all(tlv.flags == flags for tlv in decoded)


@given(u32, u64, u16, u16, st.binary(max_size=100), st.booleans())
def test_sender_packets_round_trip(
    seq: int, timestamp: int, error: int, ssid: int, extension: bytes, auth: bool
) -> None:
    packet = StampSenderPacket(seq, timestamp, error, ssid, extension)
    wire = packet.pack(authenticated=auth, key=KEY)
    assert StampSenderPacket.unpack(wire, authenticated=auth, key=KEY) == packet


@given(u32, u64, u16, u64, u32, u64, u16, u8, u16, st.binary(max_size=100), st.booleans())
def test_reflector_packets_round_trip(
    seq: int,
    t3: int,
    error: int,
    t2: int,
    sender_seq: int,
    t1: int,
    sender_error: int,
    ttl: int,
    ssid: int,
    extension: bytes,
    auth: bool,
) -> None:
    base = ReflectorPacket(seq, t3, error, t2, sender_seq, t1, sender_error, ttl)
    wire = StampReflectorPacket(base, ssid, extension).pack(authenticated=auth, key=KEY)
    back = StampReflectorPacket.unpack(wire, authenticated=auth, key=KEY)
    assert (back.base.seq, back.base.timestamp, back.base.receive_timestamp) == (seq, t3, t2)
    assert (back.base.sender_seq, back.base.sender_timestamp, back.base.sender_ttl) == (
        sender_seq,
        t1,
        ttl,
    )
    assert (back.ssid, back.extension) == (ssid, extension)
