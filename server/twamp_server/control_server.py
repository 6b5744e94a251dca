"""The Server: TWAMP-Control over TCP (RFC 5357 §3), one coroutine per control connection.

Each connection runs a :class:`twamp_common.control.ServerControl` state machine: this module
only moves bytes between the socket and the state machine, applies the operator's policy (who
may connect, with which key, how many sessions) and turns accepted sessions into reflector
sessions.  Any protocol error, timeout or disconnect ends that connection and its sessions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import time
from collections.abc import Callable
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
from .derivations import DerivationRefusedError, Derivations
from .keystore import KeyStore
from .logs import printable
from .reflector import Reflector, TestSession
from .sessions import IPAddress, IPNetwork, Sessions

#: Failed authentications a network may have before it is backed off (an address: none).
NETWORK_FREE_FAILURES = 8
#: Offered besides the configured security modes.
FEATURES = Mode.INDIVIDUAL_SESSION_CONTROL
#: Largest read per wake-up.
READ_SIZE = 65536


@dataclasses.dataclass(frozen=True, slots=True)
class ControlPolicy:
    """What TWAMP-Control needs of the daemon's configuration."""

    modes: Mode
    keys: KeyStore
    pbkdf2_count: int
    #: Seconds a connection may take to set up, or stay without a session.
    idle_timeout: float
    #: SERVWAIT, seconds.
    control_timeout: float
    #: The network an address is counted in for the backoff of failed authentications.
    network_of: Callable[[IPAddress], IPNetwork]
    limits: Limits


class Server:
    """What every control connection shares: its policy, the reflector, the session table."""

    def __init__(
        self, policy: ControlPolicy, reflector: Reflector, sessions: Sessions, log: Any
    ) -> None:
        #: Replaced by the daemon on a reload.
        self.policy = policy
        self.reflector = reflector
        self.sessions = sessions
        self.log = log
        #: Cleared on SIGTERM: new connections are then greeted with Modes 0.
        self.accepting = True
        #: Start-Time of Server-Start: when this server instance started (RFC 4656 §3.1).
        self.start_time = ns_to_ntp(time.time_ns())
        #: Key derivations, capped for all clients together.
        self.derivations = Derivations()
        #: Failed authentications by client address and by network.
        self.address_failures = Backoff(0)
        self.network_failures = Backoff(NETWORK_FREE_FAILURES)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio.start_server callback: serve one control connection to its end."""
        connection = ControlConnection(self, reader, writer)
        self.sessions.add_connection(connection)
        try:
            await connection.run()
        finally:
            self.sessions.remove_connection(connection)


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
        #: How the server itself ended this connection (silence, shutdown), for the log line.
        self.ended: str | None = None
        #: When the client last sent anything: for idle_timeout and SERVWAIT.
        self.last_heard = time.monotonic()
        #: Set-up must be over by then however slowly the octets drip in (half-open defence).
        self._setup_deadline = self.last_heard + self._idle_timeout()

    def _offered_modes(self) -> tuple[Mode, str | None]:
        if not self.server.accepting:
            return Mode(0), "server is shutting down"
        refusal = self.server.sessions.connection_refusal(self)
        if refusal is not None:
            return Mode(0), refusal
        return self.server.policy.modes | FEATURES, None

    async def run(self) -> None:
        modes, refusal = self._offered_modes()
        control = ServerControl(modes, count=self.server.policy.pbkdf2_count)
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
        except (ConnectionError, OSError) as error:
            outcome = f"connection lost: {error.__class__.__name__}"
        finally:
            if self.ended is not None:
                outcome = self.ended
            for session in list(self.sessions.values()):
                self.server.sessions.end(self, session, "control connection closed")
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.log.info(
                "control connection ended",
                mode=mode_name(control.mode),
                outcome=outcome,
            )

    def _idle_timeout(self) -> float:
        policy = self.server.policy
        return min(policy.idle_timeout, policy.control_timeout)

    def idle(self, now: float) -> str | None:
        """How this connection ends if it has been silent too long at ``now``, else None.

        Set-up must be over by its deadline; a connection holding no session has idle_timeout
        (it must not keep a slot for SERVWAIT asking for nothing); else SERVWAIT.
        """
        control = self.control
        if control is None or control.phase is not Phase.OPEN:
            return "timed out (set-up)" if now > self._setup_deadline else None
        silent = now - self.last_heard
        if not self.sessions:
            return "idle (no session, idle_timeout)" if silent > self._idle_timeout() else None
        if self._sessions_running():
            return None
        return "idle (SERVWAIT)" if silent > self.server.policy.control_timeout else None

    def _sessions_running(self) -> bool:
        """Whether a test session runs (started, not stopped): RFC 5357 §3.1 suspends SERVWAIT
        then, and resumes it once they are stopped or ended by REFWAIT."""
        return any(
            session.started and session.stop_deadline is None for session in self.sessions.values()
        )

    def end(self, outcome: str) -> None:
        """End this connection from the server's side; ``run`` logs ``outcome``."""
        if self.ended is None:
            self.ended = outcome
        self.writer.close()

    async def _read(self) -> bytes:
        """The next octets from the client (the session table ends a silent connection)."""
        data = await self.reader.read(READ_SIZE)
        self.last_heard = time.monotonic()
        return data

    async def _serve(self, control: ServerControl) -> str:
        while True:
            event = control.next_event()
            if event is NEED_DATA:
                data = await self._read()
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

    def _backoff_refusal(self, now: float) -> str | None:
        """Why this client's authenticated set-up is refused before its key is derived (its
        address or network failed too often), or None."""
        server = self.server
        network = server.policy.network_of(self.peer)
        wait = max(
            server.address_failures.refused_for(self.peer, now),
            server.network_failures.refused_for(network, now),
        )
        return f"authentication failures: backed off for {wait:.0f} s more" if wait > 0 else None

    async def _set_up(self, control: ServerControl, setup: SetUpResponse) -> bool:
        server = self.server
        secret = server.policy.keys.get(setup.key_id) if setup.key_id else None
        if setup.mode & SECURE_CONTROL_MODES and not control.setup_refusal():
            try:
                if (refusal := self._backoff_refusal(time.monotonic())) is not None:
                    raise DerivationRefusedError(refusal)
                # PBKDF2 costs milliseconds: keep it off the loop that reflects packets.
                data, accepted = await server.derivations.run(
                    control.start, secret, server.start_time
                )
            except DerivationRefusedError as refused:
                self.writer.write(control.refuse(Accept.TEMPORARY_RESOURCE_LIMIT))
                await self.writer.drain()
                self.log.warning(
                    "control connection refused", mode=int(setup.mode), reason=refused.reason
                )
                return False
            if not accepted:  # backed off from now, not from before its turn came
                failed = time.monotonic()
                server.address_failures.failed(self.peer, failed)
                server.network_failures.failed(server.policy.network_of(self.peer), failed)
        else:  # no key to derive: unauthenticated, or a mode refused
            data, accepted = control.start(secret, server.start_time)
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
        held = server.sessions.held(self)
        verdict = judge(
            request,
            authenticated=authenticated,
            control_peer=self.peer,
            control_local=self.local,
            limits=server.policy.limits,
            running_total=held.total,
            running_for_client=held.by_client,
            running_for_network=held.by_network,
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
        server.sessions.add(self, session)
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
