"""twamp-server with sockets handed over by systemd (socket activation), as a real process.

The sockets are made the way twamp-server.socket's bare port numbers make them: one IPv6
wildcard socket per port that also receives IPv4 (dual-stack).  The daemon must serve both
families through them, bind nothing itself for those ports, and report a handed socket that the
configuration does not use.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ControlClient, ServerProcess, free_port, ping, sender_socket, server_config
from twamp_common.codes import Accept
from twamp_common.stamp import build_sender_packet, parse_reply
from twamp_common.timestamp import ErrorEstimate
from twamp_server.activation import HandedSockets


def _dual_stack(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(16)
    return sock


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(socket.SOCK_STREAM, "::"), free_port(socket.SOCK_DGRAM, "::")


@pytest.fixture
def activated(tmp_path: Path, ports: tuple[int, int]) -> Iterator[ServerProcess]:
    control_port, test_port = ports
    handed = [
        _dual_stack(socket.SOCK_STREAM, control_port),
        _dual_stack(socket.SOCK_DGRAM, test_port),
    ]
    config = server_config(
        tmp_path, control_port=control_port, test_port=test_port, listen="0.0.0.0 ::"
    )
    server = ServerProcess(tmp_path, config, handed=handed)
    for sock in handed:
        sock.close()  # the server holds them now, as it does under systemd
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_handed_sockets_serve_ipv4_and_ipv6(
    activated: ServerProcess, ports: tuple[int, int], host: str
) -> None:
    control_port, test_port = ports
    with ControlClient(host, control_port) as client:
        client.set_up()
        with client.test_socket() as udp:
            accepted = client.request(udp.getsockname()[1], receiver_port=test_port)
            assert accepted.accept == Accept.OK and accepted.port == test_port
            client.start()
            reply = ping(udp, (host, test_port), 3)
            assert reply is not None
            packet, _t4, ttl = reply
            assert packet.sender_seq == 3 and packet.sender_ttl > 0 and ttl == 255
    assert "does not use" not in activated.log()


def _socket_inodes(pid: int) -> set[str]:
    """The process's open sockets as `socket:[inode]`; an fd closed while listed is skipped."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except FileNotFoundError:  # a short-lived socket (a notifier, a resolver) went away
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def test_the_server_binds_nothing_itself_for_handed_ports(
    activated: ServerProcess, ports: tuple[int, int]
) -> None:
    """Every socket on the two ports is the handed one: binding them again would have failed."""
    inodes = _socket_inodes(activated.process.pid)
    bound = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports and f"socket:[{fields[9]}]" in inodes:
                bound.append((table, port))
    assert sorted(bound) == sorted([("tcp6", ports[0]), ("udp6", ports[1])])


def test_a_handed_stamp_socket_serves_ipv4_and_ipv6(tmp_path: Path) -> None:
    """STAMP on a port systemd binds (ListenDatagram=862 in twamp-server.socket)."""
    stamp_port = free_port(socket.SOCK_DGRAM, "::")
    handed = _dual_stack(socket.SOCK_DGRAM, stamp_port)
    config = server_config(
        tmp_path, listen="::", stamp_ports=stamp_port, stamp_allow="127.0.0.1 ::1"
    )
    server = ServerProcess(tmp_path, config, handed=[handed])
    handed.close()
    try:
        server.wait_ready()
        for host in ("127.0.0.1", "::1"):
            with sender_socket(host) as udp:
                request = build_sender_packet(
                    5, time.time_ns(), error_estimate=ErrorEstimate(True, 0, 1)
                )
                udp.sendto(request, (host, stamp_port))
                reply = parse_reply(udp.recv(2048))
                assert (reply.sender_seq, reply.seq) == (5, 0)
        # Binding :: on that port again would have failed the start.
        assert "does not use" not in server.log()
    finally:
        server.stop()


def test_a_handed_socket_the_configuration_does_not_use_is_reported(tmp_path: Path) -> None:
    stray_port = free_port(socket.SOCK_STREAM, "::")
    stray = _dual_stack(socket.SOCK_STREAM, stray_port)
    config = server_config(tmp_path)
    server = ServerProcess(tmp_path, config, handed=[stray])
    stray.close()
    try:
        server.wait_ready()
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        (warning,) = [line for line in lines if "does not use" in str(line.get("event"))]
        assert warning["socket"] == f"TCP [::]:{stray_port}"
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as again:
            again.bind(("::", stray_port))  # closed by the server: the port is free
    finally:
        server.stop()


def test_variables_for_another_process_are_ignored_and_removed() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert HandedSockets.from_environment(environ).close_unused() == []
    assert environ == {}


def test_a_malformed_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="LISTEN_FDS"):
        HandedSockets.from_environment({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"})
