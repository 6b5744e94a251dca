"""Known-answer tests of the TWAMP-Control messages.

Every expected byte string here is written by hand from the layouts of RFC 4656 §3 and RFC 5357
§3 (and RFC 5938, RFC 6038), field by field with its offset, not produced by our packer.  Each
test packs a message and compares with the hand-written octets, then unpacks the octets and
compares with the message.
"""

from __future__ import annotations

import ipaddress

import pytest
from twamp_common.codes import Accept, Mode
from twamp_common.control_messages import (
    AcceptSession,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartNAck,
    StartNSessions,
    StartSessions,
    StopNAck,
    StopNSessions,
    StopSessions,
)
from twamp_common.errors import RemoteProtocolError

CHALLENGE = b"just a challenge"
SALT = b"some funny saltT"
SID_A = bytes(range(0x10, 0x20))
SID_B = bytes(range(0x20, 0x30))


def test_server_greeting() -> None:
    wire = (
        bytes(12)  # 0: Unused
        + b"\x00\x00\x00\x07"  # 12: Modes = unauthenticated | authenticated | encrypted
        + CHALLENGE  # 16: Challenge
        + SALT  # 32: Salt
        + b"\x00\x00\x08\x00"  # 48: Count = 2048
        + bytes(12)  # 52: MBZ
    )
    message = ServerGreeting(Mode(7), CHALLENGE, SALT, 2048)
    assert len(wire) == 64
    assert message.pack() == wire
    assert ServerGreeting.unpack(wire) == message


def test_set_up_response() -> None:
    wire = (
        b"\x00\x00\x00\x02"  # 0: Mode = authenticated
        + b"alice".ljust(80, b"\0")  # 4: KeyID, zero padded
        + bytes(range(64))  # 84: Token
        + b"I" * 16  # 148: Client-IV
    )
    message = SetUpResponse(Mode.AUTHENTICATED, b"alice", bytes(range(64)), b"I" * 16)
    assert len(wire) == 164
    assert message.pack() == wire
    assert SetUpResponse.unpack(wire) == message


def test_set_up_response_open_mode_is_mode_and_zeros() -> None:
    assert SetUpResponse(Mode.UNAUTHENTICATED).pack() == b"\x00\x00\x00\x01" + bytes(160)


def test_server_start() -> None:
    wire = (
        bytes(15)  # 0: MBZ
        + b"\x00"  # 15: Accept = OK
        + b"this is the IV!!"  # 16: Server-IV
        + b"\xe8\x00\x00\x01\x80\x00\x00\x00"  # 32: Start-Time
        + bytes(8)  # 40: MBZ
    )
    message = ServerStart(Accept.OK, b"this is the IV!!", 0xE800000180000000)
    assert message.pack() == wire
    assert ServerStart.unpack(wire) == message


def test_server_start_maps_unknown_accept_to_failure() -> None:
    wire = bytes(15) + b"\x63" + bytes(32)
    assert ServerStart.unpack(wire).accept is Accept.FAILURE


def test_request_tw_session_ipv4() -> None:
    wire = (
        b"\x05"  # 0: Command = Request-TW-Session
        + b"\x04"  # 1: MBZ | IPVN = 4
        + b"\x00"  # 2: Conf-Sender
        + b"\x00"  # 3: Conf-Receiver
        + bytes(4)  # 4: Number of Schedule Slots
        + bytes(4)  # 8: Number of Packets
        + b"\x22\x38"  # 12: Sender Port = 8760
        + b"\x03\x5f"  # 14: Receiver Port = 863
        + bytes([192, 0, 2, 7])
        + bytes(12)  # 16: Sender Address
        + bytes([198, 51, 100, 1])
        + bytes(12)  # 32: Receiver Address
        + bytes(16)  # 48: SID
        + b"\x00\x00\x00\x1b"  # 64: Padding Length = 27
        + b"\xe8\x00\x00\x00\x00\x00\x00\x00"  # 68: Start Time
        + b"\x00\x00\x00\x02\x80\x00\x00\x00"  # 76: Timeout = 2.5 s
        + b"\x2e\x00\x00\x00"  # 84: Type-P: first two bits 00, then DSCP 46 (EF)
        + bytes(8)  # 88: MBZ
        + bytes(16)  # 96: HMAC
    )
    message = RequestTWSession(
        sender_address=ipaddress.IPv4Address("192.0.2.7"),
        receiver_address=ipaddress.IPv4Address("198.51.100.1"),
        sender_port=8760,
        receiver_port=863,
        padding_length=27,
        start_time=0xE800000000000000,
        timeout=0x0000000280000000,
        type_p=46 << 24,
    )
    assert len(wire) == 112
    assert message.pack() == wire
    assert RequestTWSession.unpack(wire) == message


def test_request_tw_session_ipv6_with_reflect_octets() -> None:
    sender = ipaddress.IPv6Address("2001:db8::7")
    receiver = ipaddress.IPv6Address("2001:db8::1")
    wire = (
        b"\x05\x06\x00\x00"  # 0: Command 5, IPVN 6, Conf-Sender 0, Conf-Receiver 0
        + bytes(8)  # 4: Schedule Slots, Packets
        + b"\x00\x00\x00\x00"  # 12: Sender Port 0, Receiver Port 0
        + sender.packed  # 16
        + receiver.packed  # 32
        + bytes(16)  # 48: SID
        + bytes(4)  # 64: Padding Length
        + bytes(8)  # 68: Start Time
        + bytes(8)  # 76: Timeout
        + bytes(4)  # 84: Type-P
        + b"\xab\xcd"  # 88: Octets to be reflected (RFC 6038)
        + b"\x00\x10"  # 90: Length of padding to reflect
        + bytes(4)  # 92: MBZ
        + bytes(16)  # 96: HMAC
    )
    message = RequestTWSession(
        sender_address=sender,
        receiver_address=receiver,
        sender_port=0,
        receiver_port=0,
        octets_to_reflect=0xABCD,
        padding_to_reflect=16,
    )
    assert message.pack() == wire
    assert RequestTWSession.unpack(wire) == message


def test_request_tw_session_ignores_mbz_bits() -> None:
    message = RequestTWSession(
        sender_address=ipaddress.IPv4Address("192.0.2.7"),
        receiver_address=ipaddress.IPv4Address("192.0.2.8"),
        sender_port=1,
        receiver_port=2,
    )
    wire = bytearray(message.pack())
    wire[1] |= 0xF0  # MBZ half of the IPVN octet
    wire[20:32] = b"\xff" * 12  # MBZ tail of an IPv4 Sender Address
    wire[92:96] = b"\xff" * 4  # MBZ
    wire[96:112] = b"\xee" * 16  # HMAC: not this layer's business
    assert RequestTWSession.unpack(bytes(wire)) == message


def test_request_tw_session_rejects_unknown_ip_version() -> None:
    wire = bytearray(112)
    wire[0], wire[1] = 5, 5
    with pytest.raises(RemoteProtocolError) as caught:
        RequestTWSession.unpack(bytes(wire))
    assert caught.value.field == "IPVN"
    assert caught.value.offset == 1
    assert "Request-TW-Session" in str(caught.value)


def test_accept_session() -> None:
    wire = (
        b"\x00"  # 0: Accept
        + b"\x00"  # 1: MBZ
        + b"\x03\x5f"  # 2: Port = 863
        + SID_A  # 4: SID
        + b"\x12\x34"  # 20: Reflected octets (RFC 6038)
        + b"\x00\x00"  # 22: Server octets
        + bytes(8)  # 24: MBZ
        + bytes(16)  # 32: HMAC
    )
    message = AcceptSession(Accept.OK, 863, SID_A, reflected_octets=0x1234)
    assert message.pack() == wire
    assert AcceptSession.unpack(wire) == message


def test_start_sessions_start_ack_stop_sessions() -> None:
    assert StartSessions().pack() == b"\x02" + bytes(31)
    assert StartSessions.unpack(b"\x02" + b"\x01" * 15 + bytes(16)) == StartSessions()
    assert StartAck(Accept.TEMPORARY_RESOURCE_LIMIT).pack() == b"\x05" + bytes(31)
    assert StartAck.unpack(b"\x02" + bytes(31)) == StartAck(Accept.INTERNAL_ERROR)
    stop = (
        b"\x03"  # 0: Command
        + b"\x00"  # 1: Accept
        + bytes(2)  # 2: MBZ
        + b"\x00\x00\x00\x02"  # 4: Number of Sessions
        + bytes(8)  # 8: MBZ
        + bytes(16)  # 16: HMAC
    )
    assert StopSessions(Accept.OK, 2).pack() == stop
    assert StopSessions.unpack(stop) == StopSessions(Accept.OK, 2)


def test_start_sessions_with_wrong_command_is_refused() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        StartSessions.unpack(b"\x03" + bytes(31))
    assert caught.value.offset == 0
    assert caught.value.field == "Command"


def test_rfc5938_messages() -> None:
    start_n = (
        b"\x07"  # 0: Command = Start-N-Sessions
        + bytes(11)  # 1: MBZ
        + b"\x00\x00\x00\x02"  # 12: Number of Sessions
        + SID_A  # 16: first SID
        + SID_B  # 32: second SID
        + bytes(16)  # 48: HMAC
    )
    assert StartNSessions((SID_A, SID_B)).pack() == start_n
    assert StartNSessions.unpack(start_n) == StartNSessions((SID_A, SID_B))
    assert StartNSessions.wire_size(start_n[:16]) == 64
    stop_ack = (
        b"\x0a"  # 0: Command = Stop-N-Ack
        + b"\x03"  # 1: Accept = not supported
        + bytes(10)  # 2: MBZ
        + b"\x00\x00\x00\x01"  # 12: Number of Sessions
        + SID_B  # 16
        + bytes(16)  # 32: HMAC
    )
    assert StopNAck((SID_B,), Accept.NOT_SUPPORTED).pack() == stop_ack
    assert StopNAck.unpack(stop_ack) == StopNAck((SID_B,), Accept.NOT_SUPPORTED)
    assert StopNSessions((SID_A,)).pack()[0] == 9
    assert StartNAck((SID_A,)).pack()[:2] == b"\x08\x00"


def test_rfc5938_number_of_sessions_is_bounded() -> None:
    head = b"\x07" + bytes(11) + b"\xff\xff\xff\xff"
    with pytest.raises(RemoteProtocolError) as caught:
        StartNSessions.wire_size(head)
    assert caught.value.field == "Number of Sessions"
    assert caught.value.offset == 12
    with pytest.raises(RemoteProtocolError):
        StartNSessions.wire_size(b"\x07" + bytes(15))  # zero sessions


@pytest.mark.parametrize(
    ("cls", "size"),
    [
        (ServerGreeting, 64),
        (SetUpResponse, 164),
        (ServerStart, 48),
        (RequestTWSession, 112),
        (AcceptSession, 48),
        (StartSessions, 32),
        (StartAck, 32),
        (StopSessions, 32),
    ],
)
def test_wrong_sizes_are_refused_with_the_message_name(cls: type, size: int) -> None:
    for wrong in (size - 1, size + 1, 0):
        with pytest.raises(RemoteProtocolError) as caught:
            cls.unpack(bytes(wrong))
        assert cls.NAME in str(caught.value)


def test_fields_of_wrong_length_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="challenge"):
        ServerGreeting(Mode(1), b"short", SALT, 1024)
    with pytest.raises(ValueError, match="key_id"):
        SetUpResponse(Mode(2), b"x" * 81)
    with pytest.raises(ValueError, match="one IP version"):
        RequestTWSession(
            sender_address=ipaddress.IPv4Address("192.0.2.1"),
            receiver_address=ipaddress.IPv6Address("::1"),
            sender_port=1,
            receiver_port=2,
        )
