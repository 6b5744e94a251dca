"""The Notifier against real AF_UNIX datagram sockets, as systemd's notification socket is.

Each test binds the socket systemd would (a path, or an abstract ``@name``), points
NOTIFY_SOCKET at it and reads back the exact datagrams; then the cases where nobody listens,
which must cost nothing and raise nothing.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from twamp_common.service import Notifier


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with _receiver(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def _receive(sock: socket.socket) -> str:
    data, _ = sock.recvfrom(4096)
    return data.decode()


def test_each_method_sends_its_exact_datagram(receiver: socket.socket) -> None:
    notifier = Notifier()
    notifier.ready("2 sessions")
    assert _receive(receiver) == "READY=1\nSTATUS=2 sessions"
    notifier.stopping()
    assert _receive(receiver) == "STOPPING=1"
    notifier.status("idle")
    assert _receive(receiver) == "STATUS=idle"
    notifier.watchdog()
    assert _receive(receiver) == "WATCHDOG=1"


def test_reloading_carries_the_monotonic_clock_in_microseconds(receiver: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", _receive(receiver))
    assert match is not None
    assert before <= int(match[1]) <= after


def test_status_text_reaches_systemd_as_utf8(receiver: socket.socket) -> None:
    Notifier().status("3 sessions → 192.0.2.7, 12 µs")
    data, _ = receiver.recvfrom(4096)
    assert data == "STATUS=3 sessions → 192.0.2.7, 12 µs".encode()


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"twamp-test-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready("up")
        assert _receive(sock) == "READY=1\nSTATUS=up"


def test_without_notify_socket_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert notifier._notifier is None
    notifier.ready("up")
    notifier.reloading()
    notifier.status("idle")
    notifier.watchdog()
    notifier.stopping()


def test_a_vanished_socket_does_not_raise(tmp_path: Path, receiver: socket.socket) -> None:
    notifier = Notifier()
    receiver.close()
    (tmp_path / "notify.sock").unlink()
    notifier.ready("up")
    notifier.status("idle")
    notifier.watchdog()
    notifier.stopping()


def test_a_socket_missing_from_the_start_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent.sock"))
    notifier = Notifier()
    notifier.ready("up")
    notifier.stopping()


OTHER_PID = str(os.getpid() + 1)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": OTHER_PID}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: float | None
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Notifier().watchdog_interval == expected


def test_environment_is_read_at_construction(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    notifier = Notifier()
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.delenv("WATCHDOG_USEC")
    notifier.watchdog()
    assert _receive(receiver) == "WATCHDOG=1"
    assert notifier.watchdog_interval == 2.0


def test_a_socket_nobody_reads_never_blocks(receiver: socket.socket) -> None:
    """An AF_UNIX datagram queue holds a few datagrams (net.unix.max_dgram_qlen); once it is
    full a blocking send would wait for ever.  The notifier drops them instead."""
    notifier = Notifier()

    def statuses() -> None:
        for n in range(1000):
            notifier.status(f"n={n}")

    sender = threading.Thread(target=statuses, daemon=True)
    sender.start()
    sender.join(10)
    assert not sender.is_alive()
    assert _receive(receiver) == "STATUS=n=0"  # the first ones arrived, the rest were dropped
