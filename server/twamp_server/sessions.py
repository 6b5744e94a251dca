"""The server's table of what it holds: control connections, test sessions, TWAMP Light senders
and STAMP sessions.

One owner for the counts every limit is checked against (connections by address and by
network, idle ones, sessions by client and by network, Light senders by address), for the one
sweep that ends what has been silent too long (:meth:`Sessions.expire`) and for the figures the
status line reports (:meth:`Sessions.snapshot`).  The decisions themselves are kept apart from
the sockets, as :func:`twamp_server.admission.judge` is: :meth:`Sessions.connection_refusal`
and :meth:`LightSenders.admit` answer in words, and ``expire`` takes ``now`` so that a test can
run it on a clock of its own.

Threads: Light senders appear, and NAT senders latch, on the reflector thread;
:class:`LightSenders` and :class:`Latches` are only changed under the reflector's lock (from its
hot path and from ``Reflector.add``/``remove``), and the Light count is a single integer the
event loop reads.  STAMP sessions are admitted and counted by
:class:`~twamp_server.stamp_service.StampService` under its own lock; the table expires them and
counts them with the rest.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, Protocol

from twamp_common.crypto import TestPacketProtection
from twamp_common.errors import ProtocolError

if TYPE_CHECKING:
    from .reflector import Reflector, TestSession
    from .stamp_service import StampService, StampSession

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
#: (address, port) of a sender.
Address = tuple[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """The limits the table is held to: the daemon's configuration, as this module needs it."""

    max_connections: int
    max_connections_per_client: int
    max_connections_per_network: int
    max_idle_connections: int
    #: The last slots of max_connections, only for networks holding no connection yet.
    reserved_connections: int
    #: REFWAIT, seconds: a test session or a Light sender silent this long is ended.
    refwait: float
    #: The network an address is counted in for the per-network limits.
    network_of: Callable[[IPAddress], IPNetwork]
    #: Whether an address may open a control connection (``allow``).
    client_allowed: Callable[[IPAddress], bool]
    #: Whether an address gets TWAMP Light replies (``light_allow``).
    light_allowed: Callable[[str], bool]
    #: Most Light senders tracked at once (each holds a sequence counter), and from one address.
    light_capacity: int
    light_per_address: int


class Connection(Protocol):
    """What the table needs of a control connection (``control_server.ControlConnection``)."""

    peer: IPAddress
    #: ``peer`` as text: what the per-client limits count.
    peer_text: str
    sessions: dict[bytes, TestSession]

    def idle(self, now: float) -> str | None:
        """How the connection ends if it has been silent too long at ``now``, else None."""

    def end(self, outcome: str) -> None:
        """Close it from the server's side; ``outcome`` is what its log line says."""


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What the table holds at one moment: the status line's figures (and a metrics page's)."""

    connections: int
    sessions: int
    #: Sessions that Start-Sessions started (stopped ones too, until they end).
    running: int
    light_senders: int
    stamp_sessions: int
    #: Replies sent since the start, all sessions and senders together (STAMP's too).
    reflected: int


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """Test sessions held, in the three counts Request-TW-Session admission checks."""

    total: int
    by_client: int
    by_network: int


class LightSenders:
    """TWAMP Light senders: who may be one, and how many are tracked in all and per address
    (one host using many source ports must not fill the table)."""

    def __init__(self) -> None:
        self.allowed: Callable[[str], bool] = lambda _address: False
        self.capacity = 0
        self.per_address = 0
        self.count = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count a new sender from ``address``; why it is refused instead, or None."""
        if not self.allowed(address):
            return "sender not in light_allow"
        if self.count >= self.capacity:
            return f"light table full ({self.capacity} senders)"
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            return f"{self.per_address} light senders from this address already"
        self.count += 1
        self._by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        """A sender from ``address`` was forgotten."""
        self.count -= 1
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]


class Latches:
    """Which session a packet from an unannounced sender port may latch onto.

    Behind a NAT the sender's source port is not the one in Request-TW-Session; such a session
    waits here (``add``) until its first packet or its end settles its port for good.
    """

    def __init__(self) -> None:
        #: REFWAIT in seconds: a sender port that served a session this recently is never
        #: latched onto.
        self.refwait = 300.0
        #: Sessions that have not received a packet yet, by (local port, sender address), in
        #: acceptance order: the only ones a packet from an unannounced port may latch onto.
        self._waiting: dict[tuple[int, str], list[TestSession]] = {}
        #: (sender address, sender port) of ended sessions -> when they ended.
        self._ended: dict[Address, float] = {}

    def add(self, session: TestSession) -> None:
        """A new session; it may latch if its request showed a NAT (``latchable``)."""
        if session.latchable:
            self._waiting.setdefault((session.local_port, session.peer[0]), []).append(session)

    def settle(self, session: TestSession) -> None:
        """``session`` received its first packet, or ended: its sender port is known for good."""
        session.latchable = False
        where = (session.local_port, session.peer[0])
        waiting = self._waiting.get(where, [])
        if session in waiting:
            waiting.remove(session)
            if not waiting:
                del self._waiting[where]

    def ended(self, session: TestSession, now: float) -> None:
        """``session`` ended at ``now``: its sender port is kept from latching for REFWAIT."""
        self.settle(session)
        self._ended = {k: t for k, t in self._ended.items() if now - t < self.refwait}
        self._ended[session.peer] = now

    def find(
        self,
        port: int,
        sender: Address,
        data: bytes,
        now: float,
        in_use: Callable[[Address], bool],
    ) -> TestSession | None:
        """The session the packet ``data`` from ``sender`` to ``port`` may latch onto, settled.

        A session may take the new port only when all of these hold: its request showed a NAT
        (a Sender Address that is neither zero nor the control peer's); it is started and has
        heard nothing yet; the port is not (``in_use``), and was not within REFWAIT, the sender
        port of another session of that address (a stopped session's sender that keeps
        sending, a second session's sender); and exactly one such session fits the packet: its
        HMAC verifies (authenticated modes) or its length is the requested one.  When two
        could, neither does.  The address itself is never re-learnt, so replies still go only
        to the control peer.
        """
        waiting = self._waiting.get((port, sender[0]))
        if not waiting:
            return None
        if now - self._ended.get(sender, -math.inf) < self.refwait or in_use(sender):
            return None
        fitting = [
            session
            for session in waiting
            if session.started
            and (
                _authentic(session.protection, data)
                if session.protection is not None
                else session.request_length in (0, len(data))
            )
        ]
        if len(fitting) != 1:
            return None
        self.settle(fitting[0])
        return fitting[0]


class Sessions:
    """The control connections and their test sessions; the Light senders of ``reflector``;
    the STAMP sessions of ``stamp`` (which admits them itself, on its own thread)."""

    def __init__(self, policy: Policy, reflector: Reflector, stamp: StampService, log: Any) -> None:
        self.reflector = reflector
        self.stamp = stamp
        self.log = log
        self.connections: set[Connection] = set()
        self.apply(policy)

    def apply(self, policy: Policy) -> None:
        """Hold the table to ``policy`` from now on (start, reload); nothing running is ended."""
        self.policy = policy
        self.reflector.latches.refwait = policy.refwait
        light = self.reflector.light
        light.allowed = policy.light_allowed
        light.capacity = policy.light_capacity
        light.per_address = policy.light_per_address

    # -- control connections ---------------------------------------------------------------------

    def add_connection(self, connection: Connection) -> None:
        self.connections.add(connection)

    def remove_connection(self, connection: Connection) -> None:
        self.connections.discard(connection)

    def connection_refusal(self, connection: Connection) -> str | None:
        """Why ``connection`` (already in the table) is refused, or None when it is served."""
        policy = self.policy
        total = len(self.connections)
        if total > policy.max_connections:
            return f"max_connections ({policy.max_connections}) reached"
        network = policy.network_of(connection.peer)
        in_network = sum(1 for other in self.connections if other.peer in network)
        # A client of a network that holds nothing yet is served while slots remain, whatever
        # others hold: neither the reserve nor the idle budget is closed to it.
        newcomer = in_network == 1
        if not newcomer and total > policy.max_connections - policy.reserved_connections:
            return f"reserved_connections ({policy.reserved_connections}) kept for other networks"
        idle = sum(1 for other in self.connections if not other.sessions)
        if not newcomer and idle > policy.max_idle_connections:
            return f"max_idle_connections ({policy.max_idle_connections}) reached"
        peer_text = connection.peer_text
        from_client = sum(1 for other in self.connections if other.peer_text == peer_text)
        if from_client > policy.max_connections_per_client:
            return f"max_connections_per_client ({policy.max_connections_per_client}) reached"
        if in_network > policy.max_connections_per_network:
            limit = policy.max_connections_per_network
            return f"max_connections_per_network ({limit}) reached for {network}"
        if not policy.client_allowed(connection.peer):
            return "client address not in allow"
        return None

    def end_connections(self, reason: str) -> None:
        """Close every control connection from the server's side (shutdown)."""
        for connection in list(self.connections):
            connection.end(f"closed by server: {reason}")

    # -- test sessions ---------------------------------------------------------------------------

    def held(self, connection: Connection) -> Held:
        """The sessions held in all, by ``connection``'s client and by its network."""
        network = self.policy.network_of(connection.peer)
        total = by_client = by_network = 0
        for other in self.connections:
            count = len(other.sessions)
            total += count
            if other.peer_text == connection.peer_text:
                by_client += count
            if other.peer in network:
                by_network += count
        return Held(total, by_client, by_network)

    def add(self, connection: Connection, session: TestSession) -> None:
        """An accepted session of ``connection``: counted, and reflected once started."""
        connection.sessions[session.sid] = session
        self.reflector.add(session)

    def end(self, connection: Connection, session: TestSession, why: str) -> None:
        """Stop reflecting for ``session``, free its slot and log its counters."""
        if connection.sessions.pop(session.sid, None) is None:
            return
        self.reflector.remove(session)
        self.log.info(
            "session ended",
            peer=connection.peer_text,
            sid=session.sid.hex(),
            reason=why,
            **session.counters(),
        )

    # -- TWAMP Light senders ---------------------------------------------------------------------

    def end_light(self, session: TestSession, reason: str) -> None:
        self.reflector.remove(session)
        self.log.info(
            "light session ended",
            peer=session.peer[0],
            peer_port=session.peer[1],
            reason=reason,
            **session.counters(),
        )

    def end_light_senders(self, reason: str) -> None:
        """Forget every Light sender (shutdown)."""
        for session in self.reflector.light_senders():
            self.end_light(session, reason)

    # -- STAMP sessions --------------------------------------------------------------------------

    def end_stamp(self, session: StampSession, reason: str) -> None:
        self.log.info("stamp session ended", reason=reason, **session.fields(), **session.counts())

    def end_stamp_sessions(self, reason: str) -> None:
        """Close the STAMP reflector and log the sessions it still held (shutdown)."""
        for session in self.stamp.close():
            self.end_stamp(session, reason)

    # -- the whole table -------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End what is due at ``now``: sessions past their stop timeout or silent for REFWAIT,
        control connections silent too long, Light senders and STAMP sessions silent for
        REFWAIT."""
        refwait = self.policy.refwait
        for connection in list(self.connections):
            for session in list(connection.sessions.values()):
                if session.stop_deadline is not None and now > session.stop_deadline:
                    self.end(connection, session, "stopped")
                elif now - session.last_seen > refwait:
                    self.end(connection, session, f"no packet for {refwait:g} s (REFWAIT)")
            if (outcome := connection.idle(now)) is not None:
                connection.end(outcome)
        for sender in self.reflector.light_senders():
            if now - sender.last_seen > refwait:
                self.end_light(sender, f"no packet for {refwait:g} s")
        for ended in self.stamp.expire(now, refwait):
            self.end_stamp(ended, f"no packet for {refwait:g} s")

    def snapshot(self) -> Snapshot:
        sessions = [session for c in self.connections for session in c.sessions.values()]
        return Snapshot(
            connections=len(self.connections),
            sessions=len(sessions),
            running=sum(1 for session in sessions if session.started),
            light_senders=self.reflector.light.count,
            stamp_sessions=self.stamp.sessions,
            reflected=self.reflector.total_reflected + self.stamp.total_reflected,
        )


def _authentic(protection: TestPacketProtection, data: bytes) -> bool:
    """Whether ``data`` is a sender packet whose HMAC verifies with ``protection``'s keys."""
    try:
        protection.open_sender(data)
    except ProtocolError:
        return False
    return True
