"""TWAMP-Test packets against vectors written octet by octet from RFC 5357 §4.1.2 and §4.2.1."""

from __future__ import annotations

import pytest
from twamp_common.errors import RemoteProtocolError
from twamp_common.test_packets import (
    REFLECTOR_HEADER_SIZE,
    SENDER_HEADER_SIZE,
    SYMMETRIC_SENDER_PADDING,
    ReflectorPacket,
    ReflectorPacketBuilder,
    SenderPacket,
)

T1 = 0xE1E2E3E4_F1F2F3F4
T2 = 0xA1A2A3A4_B1B2B3B4
T3 = 0xC1C2C3C4_D1D2D3D4


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# Session-Sender, unauthenticated: Sequence Number (4), Timestamp (8), Error Estimate (2),
# then padding.
OPEN_SENDER = hexbytes("""
    00000102
    E1E2E3E4 F1F2F3F4
    8001
    AABBCC
""")

# Session-Sender, authenticated/encrypted: Sequence Number (4), MBZ (12), Timestamp (8),
# Error Estimate (2), MBZ (6), HMAC (16), then padding.
AUTH_SENDER = hexbytes("""
    00000102 000000000000000000000000
    E1E2E3E4 F1F2F3F4 8001 000000000000
    55555555555555555555555555555555
    AABBCC
""")

# Session-Reflector, unauthenticated: Sequence Number, Timestamp (T3), Error Estimate, MBZ (2),
# Receive Timestamp (T2), Sender Sequence Number, Sender Timestamp (T1), Sender Error Estimate,
# MBZ (2), Sender TTL, padding.
OPEN_REFLECTOR = hexbytes("""
    00000009
    C1C2C3C4 D1D2D3D4
    0102 0000
    A1A2A3A4 B1B2B3B4
    00000102
    E1E2E3E4 F1F2F3F4
    8001 0000
    40
    AABBCC
""")

# Session-Reflector, authenticated/encrypted: the same fields on 16-octet blocks, HMAC at 96.
AUTH_REFLECTOR = hexbytes("""
    00000009 000000000000000000000000
    C1C2C3C4 D1D2D3D4 0102 000000000000
    A1A2A3A4 B1B2B3B4 0000000000000000
    00000102 000000000000000000000000
    E1E2E3E4 F1F2F3F4 8001 000000000000
    40 000000000000000000000000000000
    66666666666666666666666666666666
    AABBCC
""")


def test_header_sizes_are_the_rfcs() -> None:
    assert SENDER_HEADER_SIZE == {False: 14, True: 48}
    assert REFLECTOR_HEADER_SIZE == {False: 41, True: 112}
    assert SYMMETRIC_SENDER_PADDING == {False: 27, True: 64}
    assert len(OPEN_SENDER) == 14 + 3 and len(AUTH_SENDER) == 48 + 3
    assert len(OPEN_REFLECTOR) == 41 + 3 and len(AUTH_REFLECTOR) == 112 + 3


@pytest.mark.parametrize(
    ("authenticated", "wire", "mac"),
    [(False, OPEN_SENDER, bytes(16)), (True, AUTH_SENDER, b"\x55" * 16)],
)
def test_sender_packet_known_answer(authenticated: bool, wire: bytes, mac: bytes) -> None:
    packet = SenderPacket(0x102, T1, 0x8001, b"\xaa\xbb\xcc", mac)
    assert packet.pack(authenticated) == wire
    assert SenderPacket.unpack(wire, authenticated) == packet


@pytest.mark.parametrize(
    ("authenticated", "wire", "mac"),
    [(False, OPEN_REFLECTOR, bytes(16)), (True, AUTH_REFLECTOR, b"\x66" * 16)],
)
def test_reflector_packet_known_answer(authenticated: bool, wire: bytes, mac: bytes) -> None:
    packet = ReflectorPacket(9, T3, 0x0102, T2, 0x102, T1, 0x8001, 64, b"\xaa\xbb\xcc", mac)
    assert packet.pack(authenticated) == wire
    assert ReflectorPacket.unpack(wire, authenticated) == packet


def test_mbz_octets_are_ignored_on_receipt() -> None:
    dirty = bytearray(AUTH_REFLECTOR)
    dirty[4:16] = b"\xff" * 12
    dirty[81:96] = b"\xff" * 15
    assert ReflectorPacket.unpack(bytes(dirty), True) == ReflectorPacket.unpack(
        AUTH_REFLECTOR, True
    )


@pytest.mark.parametrize("authenticated", [False, True])
def test_short_packets_are_protocol_errors(authenticated: bool) -> None:
    with pytest.raises(RemoteProtocolError, match="shorter than its"):
        SenderPacket.unpack(bytes(SENDER_HEADER_SIZE[authenticated] - 1), authenticated)
    with pytest.raises(RemoteProtocolError, match="reflector packet"):
        ReflectorPacket.unpack(bytes(REFLECTOR_HEADER_SIZE[authenticated] - 1), authenticated)


@pytest.mark.parametrize(
    ("authenticated", "request_wire", "reply_wire"),
    [(False, OPEN_SENDER, OPEN_REFLECTOR), (True, AUTH_SENDER, AUTH_REFLECTOR)],
)
def test_builder_copies_sender_fields_and_stamps_last(
    authenticated: bool, request_wire: bytes, reply_wire: bytes
) -> None:
    """The reply to a short request is a bare header (the padding octets fall away)."""
    builder = ReflectorPacketBuilder(authenticated)
    reply = builder.build(request_wire, 9, T2, 0x0102, 64)
    header = REFLECTOR_HEADER_SIZE[authenticated]
    expected = bytearray(reply_wire[:header])
    if authenticated:
        expected[96:112] = bytes(16)  # HMAC is the crypto layer's business
    stamp_at = 16 if authenticated else 4
    assert reply[stamp_at : stamp_at + 8] == bytes(8)
    builder.stamp(T3)
    assert bytes(reply) == bytes(expected)


@pytest.mark.parametrize("authenticated", [False, True])
def test_reply_is_as_long_as_the_request_and_reuses_its_padding(authenticated: bool) -> None:
    sender_header = SENDER_HEADER_SIZE[authenticated]
    padding = bytes(range(200))
    request = SenderPacket(1, T1, 0x8001, padding).pack(authenticated)
    builder = ReflectorPacketBuilder(authenticated)
    reply = bytes(builder.build(request, 0, T2, 1, 255))
    assert len(reply) == len(request)
    header = REFLECTOR_HEADER_SIZE[authenticated]
    # RFC 5357 §4.2.1: the highest-numbered padding octets are the ones dropped.
    assert reply[header:] == padding[: len(request) - header]
    assert len(request) - sender_header == len(padding)


def test_builder_buffers_are_clean_between_packets() -> None:
    """A reused buffer must not leak a previous packet's octets into the next, shorter one."""
    builder = ReflectorPacketBuilder(True)
    long_request = SenderPacket(1, T1, 1, b"\xee" * 100).pack(True)
    short_request = SenderPacket(2, T1, 1).pack(True)
    builder.build(long_request, 0, T2, 1, 255)
    reply = bytes(builder.build(short_request, 1, T2, 1, 255))
    assert len(reply) == 112 and b"\xee" not in reply
