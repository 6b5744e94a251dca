"""Property tests of TWAMP-Test packets, their protection and the reflector's builder."""

from __future__ import annotations

import contextlib
import dataclasses

from hypothesis import given
from hypothesis import strategies as st
from strategies import u8, u16, u32, u64
from twamp_common.codes import Mode
from twamp_common.crypto import SessionKeys, TestPacketProtection
from twamp_common.errors import ProtocolError
from twamp_common.test_packets import (
    REFLECTOR_HEADER_SIZE,
    ReflectorPacket,
    ReflectorPacketBuilder,
    SenderPacket,
)

padding = st.binary(max_size=300)
mac = st.binary(min_size=16, max_size=16)
keys = st.builds(
    SessionKeys, st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)
)

sender_packets = st.builds(SenderPacket, u32, u64, u16, padding, mac)
reflector_packets = st.builds(ReflectorPacket, u32, u64, u16, u64, u32, u64, u16, u8, padding, mac)


def _unauthenticated_view(packet: SenderPacket | ReflectorPacket) -> SenderPacket | ReflectorPacket:
    """The unauthenticated layouts carry no HMAC field: it reads back as zeros."""
    return dataclasses.replace(packet, hmac=bytes(16))


def _fields(packet: SenderPacket | ReflectorPacket) -> dict[str, object]:
    return dataclasses.asdict(packet)


@given(sender_packets, st.booleans())
def test_sender_packets_round_trip(packet: SenderPacket, authenticated: bool) -> None:
    expected = packet if authenticated else _unauthenticated_view(packet)
    assert SenderPacket.unpack(packet.pack(authenticated), authenticated) == expected


@given(reflector_packets, st.booleans())
def test_reflector_packets_round_trip(packet: ReflectorPacket, authenticated: bool) -> None:
    expected = packet if authenticated else _unauthenticated_view(packet)
    assert ReflectorPacket.unpack(packet.pack(authenticated), authenticated) == expected


@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, authenticated: bool) -> None:
    for kind in (SenderPacket, ReflectorPacket):
        with contextlib.suppress(ProtocolError):
            kind.unpack(data, authenticated)


@given(keys, st.sampled_from([Mode.AUTHENTICATED, Mode.ENCRYPTED]), st.binary(max_size=200))
def test_opening_arbitrary_bytes_raises_only_protocol_errors(
    session_keys: SessionKeys, mode: Mode, data: bytes
) -> None:
    protection = TestPacketProtection(mode, session_keys)
    for opener in (protection.open_sender, protection.open_reflector):
        with contextlib.suppress(ProtocolError):
            opener(data)


@given(keys, st.sampled_from([Mode.AUTHENTICATED, Mode.ENCRYPTED]), sender_packets)
def test_sealed_packets_open_to_what_was_sealed(
    session_keys: SessionKeys, mode: Mode, packet: SenderPacket
) -> None:
    protection = TestPacketProtection(mode, session_keys)
    wire = packet.pack(True)
    opened = SenderPacket.unpack(protection.open_sender(protection.seal_sender(wire)), True)
    assert _fields(opened) | {"hmac": None} == _fields(packet) | {"hmac": None}


@given(sender_packets, st.booleans(), u32, u64, u16, u8)
def test_builder_reflects_the_sender_fields(
    request: SenderPacket, authenticated: bool, seq: int, t2: int, error: int, ttl: int
) -> None:
    wire = request.pack(authenticated)
    builder = ReflectorPacketBuilder(authenticated)
    reply = ReflectorPacket.unpack(bytes(builder.build(wire, seq, t2, error, ttl)), authenticated)
    assert (reply.seq, reply.receive_timestamp, reply.error_estimate, reply.sender_ttl) == (
        seq,
        t2,
        error,
        ttl,
    )
    assert (reply.sender_seq, reply.sender_timestamp, reply.sender_error_estimate) == (
        request.seq,
        request.timestamp,
        request.error_estimate,
    )
    reply_size = REFLECTOR_HEADER_SIZE[authenticated] + len(reply.padding)
    assert reply_size == max(len(wire), REFLECTOR_HEADER_SIZE[authenticated])
