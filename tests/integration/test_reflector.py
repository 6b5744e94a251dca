"""The Session-Reflector's thread, in process, on real loopback sockets.

The server tests drive the reflector through the daemon; these check what only shows from the
inside: a bug on the reflector thread reaches the daemon instead of silently ending the
reflection, and ``close`` really stops the thread and frees every port.
"""

from __future__ import annotations

import socket
import threading

import pytest
from support import free_port, ping, sender_socket
from twamp_server.reflector import Reflector
from twamp_server.reflector import TestSession as Session


def _reflector(failures: list[BaseException], failed: threading.Event) -> Reflector:
    def on_failure(error: BaseException) -> None:
        failures.append(error)
        failed.set()

    return Reflector(on_failure)


def _reflector_thread_runs() -> bool:
    return any(thread.name == "reflector" for thread in threading.enumerate())


def test_reflects_for_a_started_session_and_close_frees_the_port() -> None:
    failures: list[BaseException] = []
    reflector = _reflector(failures, threading.Event())
    port = free_port(socket.SOCK_DGRAM)
    reflector.bind("127.0.0.1", port, permanent=True)
    with sender_socket("127.0.0.1") as udp:
        reflector.add(Session(sid=bytes(16), peer=udp.getsockname(), local_port=port, started=True))
        reflector.start()
        reply = ping(udp, ("127.0.0.1", port), 7)
        assert reply is not None and reply[0].sender_seq == 7
    reflector.close()
    assert not _reflector_thread_runs()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # the port is free again
    assert failures == []


def test_a_bug_on_the_reflector_thread_is_reported() -> None:
    failures: list[BaseException] = []
    failed = threading.Event()
    reflector = _reflector(failures, failed)
    port = free_port(socket.SOCK_DGRAM)
    reflector.bind("127.0.0.1", port, permanent=True)
    with sender_socket("127.0.0.1") as udp:
        session = Session(sid=bytes(16), peer=udp.getsockname(), local_port=port, started=True)
        session.builder = None  # type: ignore[assignment]  # what a bug in the hot path looks like
        reflector.add(session)
        reflector.start()
        assert ping(udp, ("127.0.0.1", port), 0, timeout=0.5) is None
    assert failed.wait(5.0)
    assert isinstance(failures[0], AttributeError)
    reflector.close()
    assert not _reflector_thread_runs()


def test_close_without_start() -> None:
    """The daemon closes the reflector when binding fails, before the thread ever ran."""
    reflector = Reflector(lambda _error: pytest.fail("no failure expected"))
    reflector.bind("127.0.0.1", 0, permanent=True)
    reflector.close()
