"""Kernel receive timestamps, received TTL and per-packet DSCP on real loopback sockets.

The options and ancillary-data decoding of ``twamp_common.udp_options`` applied to real UDP
sockets, IPv4 and IPv6: the kernel timestamp must be present and precede the user-space time
taken after ``recvmsg`` returns, the TTL must be the one the sender set, and a DSCP given as
ancillary data must reach the receiver's TOS / Traffic Class, and the datagrams a full receive
buffer dropped must be counted.  Transmit timestamps
(SO_TIMESTAMPING) must number each send and time it between the user-space reads around
``sendto``, and must not add a control message to received packets (that would overflow
ANCILLARY_SPACE and cut off the TTL).
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time

import pytest
from twamp_common.udp_options import (
    ANCILLARY_SPACE,
    IPV6_TCLASS,
    SO_EE_ORIGIN_TIMESTAMPING,
    TX_ANCILLARY_SPACE,
    parse_ancillary,
    parse_tx_timestamp,
    receive_options,
    send_options,
    socket_drops,
    traffic_class_ancillary,
    tx_timestamp_options,
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


def probe(
    family: int, receiver: socket.socket, sender: socket.socket
) -> tuple[bytes, list[tuple[int, int, bytes]], int, int, int]:
    """Send b"probe" with TTL 7 and receive it with ANCILLARY_SPACE: (data, ancillary data,
    flags, wall time before sending, wall time after receiving)."""
    for level, option, value in send_options(family, ttl=7):
        sender.setsockopt(level, option, value)
    before = time.time_ns()
    sender.sendto(b"probe", receiver.getsockname())
    data, ancdata, flags, _address = receiver.recvmsg(64, ANCILLARY_SPACE)
    return data, ancdata, flags, before, time.time_ns()


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_kernel_timestamp_and_ttl(family: int, host: str) -> None:
    receiver, sender = pair(family, host)
    with receiver, sender:
        data, ancdata, _flags, before, after = probe(family, receiver, sender)
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


#: Every alternative of ``tx_timestamp_options`` (best first), each tested where the kernel has it.
TX_ALTERNATIVES = list(enumerate(tx_timestamp_options()))


def stamping_socket(family: int, host: str, alternative: int) -> socket.socket:
    """A test socket as the client makes it: receive options, then transmit timestamps."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    for level, option, value in receive_options(family):
        sock.setsockopt(level, option, value)
    level, option, value = tx_timestamp_options()[alternative]
    try:
        sock.setsockopt(level, option, value)
    except OSError as error:
        sock.close()
        # Only a preferred alternative may be refused, and only as unknown flags (EINVAL, what
        # the client's fallback expects): the last one is what every kernel must accept.
        if alternative == len(TX_ALTERNATIVES) - 1 or error.errno != errno.EINVAL:
            raise
        pytest.skip(f"this kernel refuses SO_TIMESTAMPING {value:#x}: {error.strerror}")
    return sock


@pytest.mark.parametrize(("alternative", "_option"), TX_ALTERNATIVES)
@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_tx_timestamps_count_and_time_each_send(
    family: int, host: str, alternative: int, _option: object
) -> None:
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    sender = stamping_socket(family, host, alternative)
    with receiver, sender:
        receiver.bind((host, 0))
        windows = []
        for _ in range(3):
            before = time.time_ns()
            sender.sendto(b"probe", receiver.getsockname())
            windows.append((before, time.time_ns()))
        stamps = []
        while len(stamps) < 3:
            # A pending report makes the socket readable (select counts the error queue).
            assert select.select([sender], [], [], 2)[0], "no transmit timestamp came"
            _data, ancdata, flags, _addr = sender.recvmsg(
                0, TX_ANCILLARY_SPACE, socket.MSG_ERRQUEUE
            )
            assert not flags & socket.MSG_CTRUNC
            stamp = parse_tx_timestamp(ancdata)
            assert stamp is not None
            stamps.append(stamp)
    assert [counter for counter, _sent in stamps] == [0, 1, 2]
    for (_counter, sent_ns), (before, after) in zip(stamps, windows, strict=True):
        assert before <= sent_ns <= after


@pytest.mark.parametrize(("alternative", "_option"), TX_ALTERNATIVES)
@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_tx_timestamps_leave_the_receive_path_alone(
    family: int, host: str, alternative: int, _option: object
) -> None:
    """Reporting software stamps (SOF_TIMESTAMPING_SOFTWARE) also puts an SCM_TIMESTAMPING on
    every received packet unless OPT_RX_FILTER is set: measured on Linux 6.18, it overflows
    ANCILLARY_SPACE (MSG_CTRUNC) and the TTL reads 255.  Neither alternative may do that."""
    receiver = stamping_socket(family, host, alternative)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.settimeout(2)
        data, ancdata, flags, before, after = probe(family, receiver, sender)
    assert data == b"probe"
    assert not flags & socket.MSG_CTRUNC
    received_ns, ttl = parse_ancillary(ancdata)
    assert ttl == 7
    assert received_ns is not None
    assert before <= received_ns <= after


def test_only_timestamping_reports_are_send_times() -> None:
    """An ICMP error on the error queue (origin 2) is no send time; nor is a report without
    sock_extended_err, nor one without a time."""
    timespec = struct.pack("@qq", 1_700_000_000, 5)
    stamping = struct.pack("@qqqqqq", 1_700_000_000, 5, 0, 0, 0, 0)

    def error(origin: int, data: int) -> bytes:
        return struct.pack("@IBBBBII", 42, origin, 0, 0, 0, 0, data)

    stamp = (socket.SOL_SOCKET, 37, stamping)
    assert parse_tx_timestamp([stamp, (socket.IPPROTO_IP, 11, error(4, 9))]) == (
        9,
        1_700_000_000_000_000_005,
    )
    assert parse_tx_timestamp([(socket.SOL_SOCKET, 35, timespec), (41, 25, error(4, 3))]) == (
        3,
        1_700_000_000_000_000_005,
    )
    assert parse_tx_timestamp([stamp, (socket.IPPROTO_IP, 11, error(2, 9))]) is None
    assert parse_tx_timestamp([stamp]) is None
    assert (
        parse_tx_timestamp([(socket.IPPROTO_IP, 11, error(SO_EE_ORIGIN_TIMESTAMPING, 1))]) is None
    )
    assert parse_tx_timestamp([]) is None


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_the_datagrams_a_full_receive_buffer_dropped_are_counted(family: int, host: str) -> None:
    receiver, sender = pair(family, host)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's least
        assert socket_drops(receiver) == 0
        for _ in range(200):
            sender.sendto(bytes(500), receiver.getsockname())
        receiver.setblocking(False)
        delivered = 0
        while True:
            try:
                receiver.recv(1024)
            except BlockingIOError:
                break
            delivered += 1
        # Loopback loses nothing else: every datagram was delivered or dropped here.
        assert 0 < delivered < 200
        assert socket_drops(receiver) == 200 - delivered
