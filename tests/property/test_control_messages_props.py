"""Property tests of the TWAMP-Control messages.

Every message round-trips through pack/unpack for arbitrary field values, and unpacking
arbitrary bytes either yields a message or raises our ProtocolError, never another exception.
"""

from __future__ import annotations

import contextlib
import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from strategies import u8, u16, u32, u64
from twamp_common.codes import Accept, Mode
from twamp_common.control_messages import (
    CLIENT_COMMANDS,
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
from twamp_common.errors import ProtocolError

accepts = st.sampled_from(Accept)
block = st.binary(min_size=16, max_size=16)
sids = st.lists(block, min_size=1, max_size=8).map(tuple)


@st.composite
def address_pairs(
    draw: st.DrawFn,
) -> (
    tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
    | tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]
):
    if draw(st.booleans()):
        return (
            ipaddress.IPv4Address(draw(u32)),
            ipaddress.IPv4Address(draw(u32)),
        )
    return (
        ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))),
        ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))),
    )


@st.composite
def requests(draw: st.DrawFn) -> RequestTWSession:
    sender, receiver = draw(address_pairs())
    return RequestTWSession(
        sender_address=sender,
        receiver_address=receiver,
        sender_port=draw(u16),
        receiver_port=draw(u16),
        padding_length=draw(u32),
        start_time=draw(u64),
        timeout=draw(u64),
        type_p=draw(u32),
        sid=draw(block),
        conf_sender=draw(u8),
        conf_receiver=draw(u8),
        number_of_schedule_slots=draw(u32),
        number_of_packets=draw(u32),
        octets_to_reflect=draw(u16),
        padding_to_reflect=draw(u16),
    )


messages = st.one_of(
    st.builds(ServerGreeting, u32.map(Mode), block, block, u32),
    st.builds(
        SetUpResponse,
        u32.map(Mode),
        st.binary(max_size=80).map(lambda key: key.rstrip(b"\0")),
        st.binary(min_size=64, max_size=64),
        block,
    ),
    st.builds(ServerStart, accepts, block, u64),
    requests(),
    st.builds(AcceptSession, accepts, u16, block, u16, u16),
    st.just(StartSessions()),
    st.builds(StartAck, accepts),
    st.builds(StopSessions, accepts, u32),
    st.builds(StartNSessions, sids),
    st.builds(StopNSessions, sids),
    st.builds(StartNAck, sids, accepts),
    st.builds(StopNAck, sids, accepts),
)


@given(messages)
def test_round_trip(message: object) -> None:
    wire = message.pack()  # type: ignore[attr-defined]
    assert type(message).unpack(wire) == message  # type: ignore[attr-defined]
    assert type(message).wire_size(wire[:16]) == len(wire)  # type: ignore[attr-defined]


ALL = [
    ServerGreeting,
    SetUpResponse,
    ServerStart,
    AcceptSession,
    StartAck,
    StartNAck,
    StopNAck,
    *CLIENT_COMMANDS.values(),
]


#: Arbitrary octets, often of exactly a message's size so that decoding gets past the size check.
octets = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([16, 32, 48, 64, 112, 164]).flatmap(
        lambda size: st.binary(min_size=size, max_size=size)
    ),
)


@given(st.sampled_from(ALL), octets)
def test_arbitrary_bytes_raise_only_protocol_errors(cls: type, data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        cls.unpack(data)
