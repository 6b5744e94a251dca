"""The Server: TWAMP-Control over TCP (RFC 5357 §3), one coroutine per control connection.

Each connection runs a :class:`twamp_common.control.ServerControl` state machine: this module
only moves bytes between the socket and the state machine, applies the operator's policy (who
may connect, with which key, how many sessions) and turns accepted sessions into reflector
sessions.  Any protocol error, timeout or disconnect ends that connection and its sessions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections import Counter
from typing import Any

from twamp_common.codes import SECURE_CONTROL_MODES, Accept, Mode, mode_name
from twamp_common.control import (
    NEED_DATA,
    ConnectionClosed,
    Phase,
    ServerControl,
    UnknownCommand,
)
from twamp_common.control_messages import (
    AcceptSession,
    RequestTWSession,
    SetUpResponse,
    StartAck,
    StartNAck,
    StartNSessions,
    StartSessions,
    StopNAck,
    StopNSessions,
    StopSessions,
    make_sid,
)
from twamp_common.errors import ProtocolError
from twamp_common.test_packets import SENDER_HEADER_SIZE
from twamp_common.timestamp import ns_to_ntp, ntp_interval_to_ns

from .admission import Limits, judge, normalise
from .backoff import Backoff
from .config import Config
from .derivations import Derivations
from .logs import printable
from .reflector import Reflector, TestSession

#: Failed authentications a network may have before it is backed off (an address: none).
NETWORK_FREE_FAILURES = 8
#: Offered besides the configured security modes.
FEATURES = Mode.INDIVIDUAL_SESSION_CONTROL
#: Largest read per wake-up.
READ_SIZE = 65536


class Server:
    """What every control connection shares: configuration, reflector, the session census."""

    def __init__(self, config: Config, reflector: Reflector, log: Any) -> None:
        self.config = config
        self.reflector = reflector
        self.log = log
        self.connections: set[ControlConnection] = set()
        #: Cleared on SIGTERM: new connections are then greeted with Modes 0.
        self.accepting = True
        #: Start-Time of Server-Start: when this server instance started (RFC 4656 §3.1).
        self.start_time = ns_to_ntp(time.time_ns())
        #: Key derivations, capped for all clients together.
        self.derivations = Derivations()
        #: Failed authentications by client address and by network.
        self.address_failures = Backoff(0)
        self.network_failures = Backoff(NETWORK_FREE_FAILURES)

    @property
    def limits(self) -> Limits:
        config = self.config
        return Limits(
            test_port=config.test_port,
            max_sessions=config.max_sessions,
            max_sessions_per_client=config.max_sessions_per_client,
            max_sessions_per_network=config.max_sessions_per_network,
            test_ports=config.test_ports,
        )

    def session_count(self) -> int:
        return sum(len(connection.sessions) for connection in self.connections)

    def sessions_by_client(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for connection in self.connections:
            counts[connection.peer_text] += len(connection.sessions)
        return counts

    def sessions_in(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
        """Test sessions held by connections from one network."""
        return sum(
            len(connection.sessions)
            for connection in self.connections
            if connection.peer in network
        )

    def connections_from(self, peer_text: str) -> int:
        """Control connections open from one (normalised) client address, a new one included."""
        return sum(1 for connection in self.connections if connection.peer_text == peer_text)

    def connections_in(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
        """Control connections open from one network, a new one included."""
        return sum(1 for connection in self.connections if connection.peer in network)

    def idle_connections(self) -> int:
        """Control connections holding no session (set-up unfinished included), a new one
        included."""
        return sum(1 for connection in self.connections if not connection.sessions)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio.start_server callback: serve one control connection to its end."""
        connection = ControlConnection(self, reader, writer)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def end_session(self, connection: ControlConnection, session: TestSession, why: str) -> None:
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

    def expire_idle(self, now: float) -> None:
        """REFWAIT: end sessions that have been silent longer than ``session_timeout``."""
        limit = self.config.session_timeout_seconds
        for connection in list(self.connections):
            for session in list(connection.sessions.values()):
                if session.stop_deadline is not None and now > session.stop_deadline:
                    self.end_session(connection, session, "stopped")
                elif now - session.last_seen > limit:
                    self.end_session(connection, session, f"no packet for {limit:g} s (REFWAIT)")


class ControlConnection:
    """One TWAMP-Control connection and the test sessions it set up."""

    def __init__(
        self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.peer = normalise(ipaddress.ip_address(peer[0]))
        self.local = normalise(ipaddress.ip_address(local[0]))
        self.peer_text = str(self.peer)
        self.log = server.log.bind(peer=self.peer_text, peer_port=peer[1])
        self.sessions: dict[bytes, TestSession] = {}
        self.control: ServerControl | None = None
        #: Why the server itself ended this connection (shutdown), for the log line.
        self.closed_by_server: str | None = None
        #: Set-up must be over by then however slowly the octets drip in (half-open defence).
        self._setup_deadline = time.monotonic() + self._idle_timeout()

    def _offered_modes(self) -> tuple[Mode, str | None]:
        config = self.server.config
        if not self.server.accepting:
            return Mode(0), "server is shutting down"
        total = len(self.server.connections)
        if total > config.max_connections:
            return Mode(0), f"max_connections ({config.max_connections}) reached"
        network = config.network_of(self.peer)
        # A client of a network that holds nothing yet is served while slots remain, whatever
        # others hold: neither the reserve nor the idle budget is closed to it.
        newcomer = self.server.connections_in(network) == 1
        if not newcomer and total > config.max_connections - config.reserved_connections:
            reserved = config.reserved_connections
            return Mode(0), f"reserved_connections ({reserved}) kept for other networks"
        if not newcomer and self.server.idle_connections() > config.max_idle_connections:
            return Mode(0), f"max_idle_connections ({config.max_idle_connections}) reached"
        if self.server.connections_from(self.peer_text) > config.max_connections_per_client:
            limit = config.max_connections_per_client
            return Mode(0), f"max_connections_per_client ({limit}) reached"
        if self.server.connections_in(network) > config.max_connections_per_network:
            limit = config.max_connections_per_network
            return Mode(0), f"max_connections_per_network ({limit}) reached for {network}"
        if not config.client_allowed(self.peer):
            return Mode(0), "client address not in allow"
        return config.modes | FEATURES, None

    async def run(self) -> None:
        modes, refusal = self._offered_modes()
        control = ServerControl(modes, count=self.server.config.pbkdf2_count)
        self.control = control
        outcome = "closed by client"
        try:
            self.writer.write(control.greet())
            if refusal is not None:
                outcome = f"refused: {refusal}"
                await self.writer.drain()
                return
            outcome = await self._serve(control)
        except ProtocolError as error:
            outcome = f"protocol error: {error}"
        except TimeoutError:
            if control.phase is not Phase.OPEN:
                outcome = "timed out (set-up)"
            elif not self.sessions:
                outcome = "idle (no session, idle_timeout)"
            else:
                outcome = "idle (SERVWAIT)"
        except (ConnectionError, OSError) as error:
            outcome = f"connection lost: {error.__class__.__name__}"
        finally:
            if self.closed_by_server is not None:
                outcome = f"closed by server: {self.closed_by_server}"
            for session in list(self.sessions.values()):
                self.server.end_session(self, session, "control connection closed")
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.log.info(
                "control connection ended",
                mode=mode_name(control.mode),
                outcome=outcome,
            )

    def _idle_timeout(self) -> float:
        config = self.server.config
        return min(config.idle_timeout, config.control_timeout)

    def _read_timeout(self, control: ServerControl) -> float:
        """What is left of idle_timeout during set-up; idle_timeout while the connection holds
        no session (it must not keep a slot for SERVWAIT asking for nothing); else SERVWAIT."""
        if control.phase is not Phase.OPEN:
            return max(0.0, self._setup_deadline - time.monotonic())
        if not self.sessions:
            return self._idle_timeout()
        return self.server.config.control_timeout

    def _sessions_running(self) -> bool:
        """Whether a test session runs (started, not stopped): RFC 5357 §3.1 suspends SERVWAIT
        then, and resumes it once they are stopped or ended by REFWAIT."""
        return any(
            session.started and session.stop_deadline is None for session in self.sessions.values()
        )

    def close(self, reason: str) -> None:
        """End this connection from the server's side (shutdown); ``run`` logs ``reason``."""
        self.closed_by_server = reason
        self.writer.close()

    async def _read(self, control: ServerControl) -> bytes:
        """The next octets from the client; TimeoutError once it was silent too long."""
        while True:
            try:
                return await asyncio.wait_for(
                    self.reader.read(READ_SIZE), self._read_timeout(control)
                )
            except TimeoutError:
                if control.phase is not Phase.OPEN or not self._sessions_running():
                    raise

    async def _serve(self, control: ServerControl) -> str:
        while True:
            event = control.next_event()
            if event is NEED_DATA:
                data = await self._read(control)
                control.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed):
                return "closed by client"
            if isinstance(event, SetUpResponse):
                if not await self._set_up(control, event):
                    return "set-up refused"
                continue
            if isinstance(event, UnknownCommand):
                self.writer.write(control.send(AcceptSession(Accept.NOT_SUPPORTED)))
                await self.writer.drain()
                return f"unknown command {event.command}: answered Accept 3"
            self.writer.write(self._answer(control, event))
            await self.writer.drain()

    def _derivation_refusal(
        self, control: ServerControl, setup: SetUpResponse, now: float
    ) -> str | None:
        """Why an authenticated set-up is refused before its key is derived, or None."""
        if not setup.mode & SECURE_CONTROL_MODES or control.setup_refusal():
            return None  # no derivation
        server = self.server
        network = server.config.network_of(self.peer)
        wait = max(
            server.address_failures.refused_for(self.peer, now),
            server.network_failures.refused_for(network, now),
        )
        if wait > 0:
            return f"authentication failures: backed off for {wait:.0f} s more"
        return server.derivations.refusal(now)

    async def _set_up(self, control: ServerControl, setup: SetUpResponse) -> bool:
        server = self.server
        now = time.monotonic()
        if (refusal := self._derivation_refusal(control, setup, now)) is not None:
            self.writer.write(control.refuse(Accept.TEMPORARY_RESOURCE_LIMIT))
            await self.writer.drain()
            self.log.warning("control connection refused", mode=int(setup.mode), reason=refusal)
            return False
        secret = server.config.keys.get(setup.key_id) if setup.key_id else None
        # PBKDF2 costs milliseconds: keep it off the loop that reflects packets.
        data, accepted = await server.derivations.run(control.start, secret, server.start_time)
        if not accepted and not control.setup_refusal():
            server.address_failures.failed(self.peer, now)
            server.network_failures.failed(server.config.network_of(self.peer), now)
        self.writer.write(data)
        await self.writer.drain()
        # The KeyID names the client's identity in the secure modes; it is not a secret, but it
        # is the client's text: escaped, and not logged at all when the mode does not use it.
        secure = bool(setup.mode & SECURE_CONTROL_MODES)
        identity = {"key_id": printable(setup.key_id)} if setup.key_id and secure else {}
        if accepted:
            self.log = self.log.bind(mode=mode_name(control.mode))
            self.log.info("control connection set up", **identity)
        else:
            self.log.warning(
                "control connection refused",
                mode=int(setup.mode),
                reason="unsupported mode" if control.setup_refusal() else "authentication failed",
                **identity,
            )
        return accepted

    def _answer(
        self,
        control: ServerControl,
        event: RequestTWSession | StartSessions | StopSessions | StartNSessions | StopNSessions,
    ) -> bytes:
        now = time.monotonic()
        if isinstance(event, RequestTWSession):
            return control.send(self._request(control, event, now))
        if isinstance(event, StartSessions):
            for session in self.sessions.values():
                self._start(session, now)
            return control.send(StartAck(Accept.OK))
        if isinstance(event, StopSessions):
            for session in self.sessions.values():
                self._stop(session, now)
            return b""
        chosen = [self.sessions[sid] for sid in event.sids if sid in self.sessions]
        if isinstance(event, StartNSessions):
            for session in chosen:
                self._start(session, now)
            return control.send(StartNAck(event.sids, Accept.OK))
        for session in chosen:
            self._stop(session, now)
        return control.send(StopNAck(event.sids, Accept.OK))

    def _start(self, session: TestSession, now: float) -> None:
        session.started = True
        session.last_seen = now
        self.log.info("session started", sid=session.sid.hex())

    def _stop(self, session: TestSession, now: float) -> None:
        if session.stop_deadline is None:
            session.stop_deadline = now + session.timeout

    def _request(
        self, control: ServerControl, request: RequestTWSession, now: float
    ) -> AcceptSession:
        server = self.server
        authenticated = bool(control.mode & (Mode.AUTHENTICATED | Mode.ENCRYPTED))
        verdict = judge(
            request,
            authenticated=authenticated,
            control_peer=self.peer,
            control_local=self.local,
            limits=server.limits,
            running_total=server.session_count(),
            running_for_client=server.sessions_by_client()[self.peer_text],
            running_for_network=server.sessions_in(server.config.network_of(self.peer)),
            port_usable=self._port_usable,
            sender_taken=lambda port, peer: server.reflector.taken((port, *peer)),
            timeout=ntp_interval_to_ns(request.timeout) / 1e9,
        )
        if verdict.accept != Accept.OK or verdict.peer is None:
            self.log.warning("session refused", accept=int(verdict.accept), reason=verdict.reason)
            return AcceptSession(verdict.accept)
        sid = make_sid(self.local, ns_to_ntp(time.time_ns()), os.urandom(4))
        session = TestSession(
            sid=sid,
            peer=verdict.peer,
            local_port=verdict.port,
            authenticated=authenticated,
            protection=control.test_protection(sid),
            dscp=verdict.dscp,
            timeout=verdict.timeout,
            last_seen=now,
            latchable=verdict.nat,
            request_length=SENDER_HEADER_SIZE[authenticated] + request.padding_length,
        )
        self.sessions[sid] = session
        server.reflector.add(session)
        self.log.info(
            "session accepted",
            sid=sid.hex(),
            reason=verdict.reason,
            sender_port=verdict.peer[1],
            reflector_port=verdict.port,
            padding=request.padding_length,
            dscp=verdict.dscp,
        )
        return AcceptSession(Accept.OK, verdict.port, sid)

    def _port_usable(self, port: int) -> bool:
        """Whether the reflector listens, or can start listening, on ``port`` for this client."""
        reflector = self.server.reflector
        try:
            reflector.bind(str(self.local), port)
        except OSError:
            return reflector.bound(port)
        return True
