"""The session table: one sweep ends exactly what is due at ``now``, one snapshot counts it all.

The clock is made up (``expire`` takes ``now``), so nothing here sleeps.  Control connections are
stand-ins that answer ``idle`` from a deadline of their own (the real ones are driven through the
daemon in tests/integration/test_server.py); the reflector and its Light senders are real, on
loopback.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Any

import pytest
from support import free_port, ping, sender_socket
from twamp_server.config import Config
from twamp_server.daemon import table_policy
from twamp_server.reflector import Reflector
from twamp_server.reflector import TestSession as Session
from twamp_server.sessions import Latches, LightSenders, Policy, Sessions
from twamp_server.stamp_service import StampService

REFWAIT = 10.0


class Log:
    """Keeps the lines the table logs, as (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    def reasons(self, event: str) -> list[str]:
        return [fields["reason"] for name, fields in self.lines if name == event]


@dataclasses.dataclass(eq=False)
class Connection:
    """A control connection as the table sees it; silent too long after ``quiet_until``."""

    peer_text: str
    quiet_until: float = float("inf")
    sessions: dict[bytes, Session] = dataclasses.field(default_factory=dict)
    ended: list[str] = dataclasses.field(default_factory=list)

    @property
    def peer(self) -> IPv4Address | IPv6Address:
        return ip_address(self.peer_text)

    def idle(self, now: float) -> str | None:
        return "idle (test)" if now > self.quiet_until else None

    def end(self, outcome: str) -> None:
        self.ended.append(outcome)


def policy(**changes: Any) -> Policy:
    """The daemon's policy for a configuration with REFWAIT and TWAMP Light from loopback."""
    settings: dict[str, Any] = {
        "session_timeout": REFWAIT / 60,
        "light_ports": (1,),
        "_light_allow": (IPv4Network("127.0.0.1/32"),),
    }
    return table_policy(Config(**(settings | changes)))


@pytest.fixture
def reflector() -> Iterator[Reflector]:
    reflector = Reflector(lambda error: pytest.fail(f"reflector failed: {error!r}"))
    yield reflector
    reflector.close()


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def stamp(log: Log) -> Iterator[StampService]:
    service = StampService(
        stateful=True,
        authenticated=False,
        on_failure=lambda error: pytest.fail(f"STAMP reflector failed: {error!r}"),
        log=log.info,
    )
    yield service
    service.close()


@pytest.fixture
def table(reflector: Reflector, stamp: StampService, log: Log) -> Sessions:
    return Sessions(policy(), reflector, stamp, log)


def session(number: int, last_seen: float, **fields: Any) -> Session:
    return Session(
        sid=bytes([number]) * 16,
        peer=("192.0.2.1", 40000 + number),
        local_port=863,
        last_seen=last_seen,
        **fields,
    )


def connect(table: Sessions, peer: str, *sessions: Session, quiet_until: float = 1e9) -> Connection:
    connection = Connection(peer, quiet_until)
    table.add_connection(connection)
    for each in sessions:
        table.add(connection, each)
    return connection


def test_expire_ends_exactly_what_is_due(table: Sessions, reflector: Reflector, log: Log) -> None:
    heard_at_100 = session(1, 100.0, started=True)
    heard_at_105 = session(2, 105.0, started=True)
    stopped = session(3, 104.0, started=True, stop_deadline=103.0)
    measuring = connect(table, "192.0.2.1", heard_at_100, heard_at_105, stopped)
    quiet = connect(table, "192.0.2.2", quiet_until=108.0)

    table.expire(103.0)  # the stop timeout ends at 103: not past it yet
    assert set(measuring.sessions.values()) == {heard_at_100, heard_at_105, stopped}
    table.expire(103.5)
    assert stopped not in measuring.sessions.values()
    assert log.reasons("session ended") == ["stopped"]

    table.expire(108.0)
    assert quiet.ended == []
    table.expire(108.5)
    assert quiet.ended == ["idle (test)"]
    assert measuring.ended == []

    table.expire(110.0)  # REFWAIT is 10 s of silence: 100 + 10 is not beyond it
    assert heard_at_100 in measuring.sessions.values()
    table.expire(110.5)
    assert list(measuring.sessions.values()) == [heard_at_105]
    assert reflector.sessions() == [heard_at_105]
    assert log.reasons("session ended") == ["stopped", "no packet for 10 s (REFWAIT)"]
    assert measuring.ended == []


def test_a_session_heard_again_is_not_ended(table: Sessions) -> None:
    heard = session(1, 100.0, started=True)
    connection = connect(table, "192.0.2.1", heard)
    heard.last_seen = 109.0  # what the reflector thread writes on each packet
    table.expire(111.0)
    assert connection.sessions == {heard.sid: heard}


def test_ending_twice_logs_once(table: Sessions, log: Log) -> None:
    ended = session(1, 0.0)
    connection = connect(table, "192.0.2.1", ended)
    table.end(connection, ended, "control connection closed")
    table.end(connection, ended, "control connection closed")
    assert log.reasons("session ended") == ["control connection closed"]


def test_idle_light_senders_are_ended_by_the_same_sweep(
    table: Sessions, reflector: Reflector, log: Log
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    reflector.bind("127.0.0.1", port, light=True)
    reflector.start()
    with sender_socket("127.0.0.1") as first, sender_socket("127.0.0.1") as second:
        assert ping(first, ("127.0.0.1", port), 0) is not None
        assert ping(second, ("127.0.0.1", port), 0) is not None
        by_port = {sender.peer[1]: sender for sender in reflector.light_senders()}
        earlier = by_port[first.getsockname()[1]]
        later = by_port[second.getsockname()[1]]
    assert later.last_seen > earlier.last_seen
    assert table.snapshot().light_senders == 2

    table.expire(earlier.last_seen + REFWAIT)
    assert table.snapshot().light_senders == 2
    table.expire(later.last_seen + REFWAIT)
    assert reflector.light_senders() == [later]
    assert table.snapshot().light_senders == 1
    assert log.reasons("light session ended") == ["no packet for 10 s"]

    table.end_light_senders("server stopping")
    assert table.snapshot().light_senders == 0
    assert reflector.light.admit("127.0.0.1") is None  # the counts were given back


def test_snapshot_counts_the_table(table: Sessions) -> None:
    assert table.snapshot().connections == table.snapshot().sessions == 0
    connect(table, "192.0.2.1", session(1, 0.0, started=True), session(2, 0.0))
    connect(table, "192.0.2.2", session(3, 0.0, started=True, stop_deadline=5.0))
    connect(table, "192.0.2.3")
    snapshot = table.snapshot()
    assert (snapshot.connections, snapshot.sessions, snapshot.running) == (3, 3, 2)
    assert (snapshot.light_senders, snapshot.stamp_sessions, snapshot.reflected) == (0, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.sessions = 0  # type: ignore[misc]


def test_held_counts_by_client_and_by_network(table: Sessions) -> None:
    asking = connect(table, "192.0.2.1", session(1, 0.0))
    connect(table, "192.0.2.1", session(2, 0.0))
    connect(table, "192.0.2.9", session(3, 0.0), session(4, 0.0))  # the same /24
    connect(table, "198.51.100.1", session(5, 0.0))
    held = table.held(asking)
    assert (held.total, held.by_client, held.by_network) == (5, 2, 4)


def test_connection_refusals_name_the_limit(
    reflector: Reflector, stamp: StampService, log: Log
) -> None:
    table = Sessions(
        policy(max_connections=4, max_connections_per_client=2, reserved_connections=1),
        reflector,
        stamp,
        log,
    )
    connect(table, "192.0.2.1", session(1, 0.0))
    connect(table, "192.0.2.1", session(2, 0.0))
    third = connect(table, "192.0.2.1")
    assert table.connection_refusal(third) == "max_connections_per_client (2) reached"
    table.remove_connection(third)
    connect(table, "192.0.2.3", session(3, 0.0))
    fourth = connect(table, "192.0.2.2")  # the last slot, kept for networks holding nothing
    assert table.connection_refusal(fourth) == "reserved_connections (1) kept for other networks"
    table.remove_connection(fourth)
    newcomer = connect(table, "198.51.100.1")  # a network holding nothing yet gets the reserve
    assert table.connection_refusal(newcomer) is None
    table.apply(policy(max_connections=4, _allow=(IPv4Network("192.0.2.0/24"),)))
    assert table.connection_refusal(newcomer) == "client address not in allow"


def test_light_senders_are_admitted_by_address_and_in_all() -> None:
    light = LightSenders()
    light.allowed = lambda address: address.startswith("192.0.2.")
    light.capacity, light.per_address = 3, 2
    assert light.admit("198.51.100.1") == "sender not in light_allow"
    assert light.admit("192.0.2.1") is None
    assert light.admit("192.0.2.1") is None
    assert light.admit("192.0.2.1") == "2 light senders from this address already"
    assert light.admit("192.0.2.2") is None
    assert light.admit("192.0.2.3") == "light table full (3 senders)"
    light.release("192.0.2.1")
    assert light.count == 2
    assert light.admit("192.0.2.3") is None


def unused(_sender: tuple[str, int]) -> bool:
    """No other session receives from that sender."""
    return False


def natted(number: int, **fields: Any) -> Session:
    """A started session whose request showed a NAT: its sender port may be re-learnt."""
    return session(number, 0.0, started=True, latchable=True, request_length=14, **fields)


def test_a_natted_session_latches_onto_the_one_packet_that_fits() -> None:
    latches = Latches()
    waiting = natted(1)
    latches.add(waiting)
    real = ("192.0.2.1", 50000)
    assert latches.find(863, real, bytes(20), 1.0, unused) is None  # not the requested length
    assert latches.find(863, real, bytes(14), 1.0, lambda _sender: True) is None  # in use
    assert latches.find(863, real, bytes(14), 1.0, unused) is waiting
    assert not waiting.latchable
    assert latches.find(863, real, bytes(14), 1.0, unused) is None  # settled for good


def test_two_sessions_that_could_latch_both_stay_as_they_are() -> None:
    latches = Latches()
    first, second = natted(1), natted(2)
    latches.add(first)
    latches.add(second)
    assert latches.find(863, ("192.0.2.1", 50000), bytes(14), 1.0, unused) is None
    assert first.latchable and second.latchable


def test_a_port_that_ended_a_session_is_not_latched_onto_within_refwait() -> None:
    latches = Latches()
    latches.refwait = REFWAIT
    gone = session(1, 0.0)
    latches.ended(gone, 100.0)
    waiting = natted(2)
    latches.add(waiting)
    assert latches.find(863, gone.peer, bytes(14), 110.0 - 1e-6, unused) is None
    assert latches.find(863, gone.peer, bytes(14), 110.0, unused) is waiting
