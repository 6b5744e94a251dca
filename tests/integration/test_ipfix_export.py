"""IPFIX records to a collector that is down, comes up, and over UDP: nothing blocks, nothing is
lost but what the buffer could not hold, and the drops are counted and logged once."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from support import free_port
from twamp_client.ipfix_export import IpfixSender

#: Fixed-size records (two 8-octet elements) so that a data set's length tells its count.
RECORD_SIZE = 16


def record(k: int) -> dict[str, object]:
    return {"flowStartMilliseconds": 1_796_000_000_000 + k, "packetTotalCount": k}


def counts(messages: bytes) -> tuple[list[int], int]:
    """(packetTotalCount of every data record, template sets seen) in a stream of messages."""
    values, templates, at = [], 0, 0
    while at + 16 <= len(messages):
        version, length = struct.unpack_from("!HH", messages, at)
        assert version == 10
        offset = at + 16
        while offset < at + length:
            set_id, set_length = struct.unpack_from("!HH", messages, offset)
            if set_id == 2:
                templates += 1
            elif set_id >= 256:
                for start in range(offset + 4, offset + set_length - RECORD_SIZE + 1, RECORD_SIZE):
                    values.append(struct.unpack_from("!Q", messages, start + 8)[0])
            offset += set_length
        at += length
    return values, templates


def test_a_collector_down_then_up_gets_every_record_the_buffer_held() -> None:
    port = free_port()
    lines: list[str] = []
    sender = IpfixSender(("127.0.0.1", port), transport="tcp", buffer=20, log=lines.append)
    started = time.monotonic()
    for k in range(100):
        sender.submit(record(k))  # never blocks, though nobody listens
    assert time.monotonic() - started < 0.5
    time.sleep(0.3)
    assert sender.dropped > 0 and sender.sent == 0
    received = bytearray()
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(10)
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(3)
            deadline = time.monotonic() + 10
            while sender.sent + sender.dropped < 100 and time.monotonic() < deadline:
                try:
                    chunk = connection.recv(65536)
                except TimeoutError:
                    continue
                received += chunk
            time.sleep(0.2)
            sender.submit(record(1000))  # after the outage: on the same stream
            sender.close()
            while chunk := connection.recv(65536):
                received += chunk
    values, templates = counts(bytes(received))
    assert sender.sent + sender.dropped == 101
    assert len(values) == sender.sent  # every record not dropped arrived
    assert len(set(values)) == len(values) and values[-1] == 1000
    assert templates == 1  # before the first data of the connection
    assert len(lines) == 2
    assert "unreachable" in lines[0] and "reachable again" in lines[1]
    assert f"{sender.dropped} records dropped" in lines[1]


def test_udp_sends_templates_first_and_every_record() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        sender = IpfixSender(collector.getsockname(), transport="udp")
        for k in range(300):
            sender.submit(record(k))
        sender.close()
        received = bytearray()
        values: list[int] = []
        while len(values) < 300:
            datagram = collector.recv(65535)
            assert len(datagram) <= 1472
            received += datagram
            values, templates = counts(bytes(received))
    assert values == list(range(300))
    assert templates >= 1
    assert sender.dropped == 0


def test_submit_never_blocks_on_a_slow_collector() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(10)
        sender = IpfixSender(("127.0.0.1", port), transport="tcp", buffer=10)
        sender.submit(record(0))  # the sender connects when it has something to send
        connection, _ = listener.accept()  # accepted but never read: the window fills
        with connection:
            started = time.monotonic()
            for k in range(50_000):
                sender.submit(record(k))
            assert time.monotonic() - started < 2
            assert sender.dropped > 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_counts_exactly_the_records_the_collectors_host_refused(host: str) -> None:
    """Nobody listens: every datagram comes back as ICMP port unreachable (ICMPv6 over IPv6),
    whether its records went one by one or as a batch of several datagrams; a collector that
    then starts gets the next records, templates first, and the outage is logged once each
    way."""
    port = free_port(socket.SOCK_DGRAM, host)
    lines: list[str] = []
    sender = IpfixSender((host, port), transport="udp", log=lines.append)
    for k in range(3):
        sender.submit(record(k))
        time.sleep(0.2)
    # Records of 1200 octets, one per datagram: a batch of datagrams cut by refusals.
    for k in range(3, 9):
        sender.submit({**record(k), "targetName": "x" * 1200})
    time.sleep(0.5)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as collector:
        collector.bind((host, port))
        collector.settimeout(5)
        datagrams = []
        for k in range(100, 103):
            sender.submit(record(k))
            datagrams.append(collector.recv(65535))
        sender.close()
    values, templates = counts(datagrams[0])
    assert values == [100] and templates == 1  # a new session: the template first
    assert struct.unpack_from("!I", datagrams[0], 8)[0] == 0
    assert [counts(datagram)[0] for datagram in datagrams[1:]] == [[101], [102]]
    assert sender.dropped == 9
    assert len(lines) == 2, lines
    assert "unreachable (port unreachable)" in lines[0]
    assert "reachable again; 9 records dropped meanwhile" in lines[1]


def test_tcp_a_collector_that_closed_gets_the_next_record_on_a_new_connection() -> None:
    """A write after the collector closed would still succeed, and be lost: the sender sees the
    end of the stream first and reconnects, templates first, sequence from 0."""
    port = free_port()
    lines: list[str] = []
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(10)
        sender = IpfixSender(("127.0.0.1", port), transport="tcp", log=lines.append)
        sender.submit(record(0))
        first, _ = listener.accept()
        with first:
            first.settimeout(5)
            assert counts(first.recv(65536)) == ([0], 1)
        time.sleep(0.2)  # the collector's FIN has arrived
        sender.submit(record(1))
        second, _ = listener.accept()
        with second:
            second.settimeout(5)
            sender.close()
            received = bytearray()
            while chunk := second.recv(65536):
                received += chunk
    assert counts(bytes(received)) == ([1], 1)
    assert struct.unpack_from("!I", received, 8)[0] == 0
    assert sender.dropped == 0 and sender.sent == 2
    assert "connection closed by the collector" in lines[0]
