"""Kernel receive timestamps, received TTL and per-packet DSCP on real loopback sockets.

The options and ancillary-data decoding of ``twamp_common.udp_options`` applied to real UDP
sockets, IPv4 and IPv6: the kernel timestamp must be present and precede the user-space time
taken after ``recvmsg`` returns, the TTL must be the one the sender set, and a DSCP given as
ancillary data must reach the receiver's TOS / Traffic Class.
"""

from __future__ import annotations

import socket
import time

import pytest
from twamp_common.udp_options import (
    ANCILLARY_SPACE,
    IPV6_TCLASS,
    parse_ancillary,
    receive_options,
    send_options,
    traffic_class_ancillary,
)

FAMILIES = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)


def pair(family: int, host: str) -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    receiver.settimeout(2)
    for level, option, value in receive_options(family):
        receiver.setsockopt(level, option, value)
    return receiver, sender


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_kernel_timestamp_and_ttl(family: int, host: str) -> None:
    receiver, sender = pair(family, host)
    with receiver, sender:
        for level, option, value in send_options(family, ttl=7):
            sender.setsockopt(level, option, value)
        before = time.time_ns()
        sender.sendto(b"probe", receiver.getsockname())
        data, ancdata, _flags, _addr = receiver.recvmsg(64, ANCILLARY_SPACE)
        after = time.time_ns()
    received_ns, ttl = parse_ancillary(ancdata)
    assert data == b"probe"
    assert ttl == 7
    assert received_ns is not None
    assert before <= received_ns <= after


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_default_send_ttl_is_255(family: int, host: str) -> None:
    receiver, sender = pair(family, host)
    with receiver, sender:
        for level, option, value in send_options(family):
            sender.setsockopt(level, option, value)
        sender.sendto(b"x", receiver.getsockname())
        _data, ancdata, _flags, _addr = receiver.recvmsg(64, ANCILLARY_SPACE)
    assert parse_ancillary(ancdata)[1] == 255


def test_missing_ancillary_data_reads_as_unknown() -> None:
    assert parse_ancillary([]) == (None, 255)


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_dscp_per_packet(family: int, host: str) -> None:
    receiver, sender = pair(family, host)
    with receiver, sender:
        if family == socket.AF_INET6:
            receiver.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        else:
            receiver.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        sender.sendmsg([b"ef"], traffic_class_ancillary(family, 46), 0, receiver.getsockname())
        _data, ancdata, _flags, _addr = receiver.recvmsg(64, ANCILLARY_SPACE * 2)
    # IPv4 reports the TOS octet, IPv6 the Traffic Class as a host-order int.
    kinds = {(socket.IPPROTO_IP, socket.IP_TOS), (socket.IPPROTO_IPV6, IPV6_TCLASS)}
    classes = [data[0] for level, kind, data in ancdata if (level, kind) in kinds]
    assert 46 << 2 in classes


def test_no_ancillary_for_dscp_0() -> None:
    assert traffic_class_ancillary(socket.AF_INET, 0) == []
