"""The Session-Reflector: TWAMP-Test over UDP (RFC 5357 §4.2), the daemon's hot path.

One :class:`Reflector` owns the UDP sockets (the shared ``test_port``, ports that clients asked
for, TWAMP Light ports) and a table of :class:`TestSession` keyed by (local port, sender address,
sender port).  A packet is reflected only when it matches a session that was accepted and
started, and only back to the address it came from, which is always the address of the
client's control connection: the reflector can never be aimed at a third party.  Who may be
a TWAMP Light sender, and which session a NAT-rewritten sender port may latch onto, the session
table decides (:mod:`twamp_server.sessions`); the reflector asks it from the hot path.

Timing: the receive time T2 is the kernel's (SO_TIMESTAMPNS), not the moment Python woke up;
the send time T3 is read immediately before ``sendto``.  Per packet there is no logging and no
object creation beyond what the socket calls need; counters are plain integers read by the
status line and the per-session log line.

Threads: packets are reflected on a :class:`~twamp_server.poll_thread.PollThread` of their own
(why: see there), so the event loop is left to TWAMP-Control and timers.  The control side
changes the socket and session tables only while holding ``_lock``, which the reflector thread
holds while it handles a batch; the fields of a :class:`TestSession` that both sides touch are
single attribute writes.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable

from twamp_common import udp_options
from twamp_common.crypto import TestPacketProtection
from twamp_common.errors import ProtocolError
from twamp_common.test_packets import (
    REFLECTOR_HEADER_SIZE,
    SENDER_HEADER_SIZE,
    ReflectorPacketBuilder,
)
from twamp_common.timestamp import ns_to_ntp

from .activation import is_dual_stack
from .drops import Address, DropReports
from .poll_thread import PollThread
from .sessions import Latches, LightSenders

#: Receive buffer asked of the kernel: a few ms of a 100k packets/s flow, so that a short
#: scheduling stall of this process loses nothing.
RECEIVE_BUFFER = 4 * 1024 * 1024
#: Largest datagram we read; anything longer is truncated by the kernel and dropped by us.
MAX_DATAGRAM = 65535

ANCILLARY_SPACE = udp_options.TRAFFIC_CLASS_ANCILLARY_SPACE
#: A plain int: ``int & socket.MSG_TRUNC`` would build an enum member per packet (~0.8 µs).
_MSG_TRUNC = int(socket.MSG_TRUNC)
SessionKey = tuple[int, str, int]


@dataclasses.dataclass(eq=False, slots=True)
class TestSession:
    """One accepted TWAMP-Test session (or one TWAMP Light sender) and its counters."""

    sid: bytes
    #: Where replies go and packets must come from: the control connection's peer address and
    #: the sender port (announced, or latched from the first packet when a NAT rewrote it).
    peer: Address
    #: Our UDP port for this session.
    local_port: int
    #: Authenticated/encrypted test layout (48/112 octet headers) instead of the open one.
    authenticated: bool = False
    protection: TestPacketProtection | None = None
    dscp: int = 0
    #: How long to keep reflecting after Stop-Sessions (Request-TW-Session Timeout), seconds.
    timeout: float = 0.0
    #: Whether replies may go out: set by Start-Sessions, cleared when the stop timeout ends.
    started: bool = False
    #: Monotonic time after which nothing more is reflected (Stop-Sessions + Timeout).
    stop_deadline: float | None = None
    #: Monotonic time of the last packet received, or of acceptance: for REFWAIT.
    last_seen: float = 0.0
    #: Whether the sender port is still the announced one and may be re-learnt once: only when
    #: the request showed a NAT (see Reflector._latch).
    latchable: bool = False
    #: Length of the sender's packets as requested (header and Padding Length); 0: unknown.
    request_length: int = 0
    #: Reply packets must never be larger than requests (TWAMP Light: no control session).
    no_amplification: bool = False
    seq: int = 0
    reflected: int = 0
    dropped: int = 0
    bad_hmac: int = 0
    builder: ReflectorPacketBuilder = dataclasses.field(init=False)
    ancillary: list[tuple[int, int, bytes]] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.builder = ReflectorPacketBuilder(self.authenticated)
        self.ancillary = udp_options.traffic_class_ancillary(self.family, self.dscp)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.peer[0] else socket.AF_INET

    def mark(self, dscp: int) -> None:
        """Send the replies that follow with ``dscp`` (TWAMP Light copies the request's)."""
        if dscp != self.dscp:
            self.dscp = dscp
            self.ancillary = udp_options.traffic_class_ancillary(self.family, dscp)

    @property
    def key(self) -> SessionKey:
        return (self.local_port, self.peer[0], self.peer[1])

    def counters(self) -> dict[str, int]:
        """What the session-ended log line reports."""
        return {"reflected": self.reflected, "dropped": self.dropped, "bad_hmac": self.bad_hmac}


class Reflector:
    """The UDP side of the server: sockets, the session table, the reflect loop."""

    def __init__(self, on_failure: Callable[[BaseException], None]) -> None:
        """``on_failure`` is called, on the reflector thread, if that thread dies of a bug."""
        self._poller = PollThread("reflector", self._ready, on_failure)
        self._lock = self._poller.lock
        self._sockets: dict[tuple[str, int], socket.socket] = {}
        #: The same sockets by file descriptor, with their port and whether they are dual-stack:
        #: what epoll reports.
        self._by_fd: dict[int, tuple[socket.socket, int, bool]] = {}
        #: Ports bound for the daemon's lifetime (test_port, light ports); others are closed
        #: when their last session ends.
        self._permanent_ports: set[int] = set()
        self._light_ports: set[int] = set()
        self._sessions: dict[SessionKey, TestSession] = {}
        #: Which sessions a packet from an unannounced sender port may latch onto (NAT); the
        #: session table sets its REFWAIT.
        self.latches = Latches()
        #: Who may be a TWAMP Light sender, and how many are: the session table's counts.
        self.light = LightSenders()
        #: Whether Light requests shorter than the reply (41 octets) are reflected anyway.
        self.light_short = False
        #: Called (on the reflector thread) with the reason and the sender of a dropped Light
        #: packet, at most once per REPORT_INTERVAL per sender address and reason; set by the
        #: daemon to log it.
        self.on_light_drop: Callable[[str, Address], None] = lambda _reason, _sender: None
        # Looked up per report: the daemon sets on_light_drop after construction.
        self._report = DropReports(lambda reason, sender: self.on_light_drop(reason, sender))  # noqa: PLW0108
        #: Error Estimate (16-bit wire value) for T2 and T3; refreshed by the daemon.
        self.error_estimate = 0x0001
        #: Datagrams that matched no session (or no started one): never answered.
        self.unmatched = 0
        #: Total replies sent, for the status line's packet rate.
        self.total_reflected = 0

    # -- sockets ---------------------------------------------------------------------------------

    def bind(
        self, address: str, port: int, *, permanent: bool = False, light: bool = False
    ) -> None:
        """Open a UDP socket on ``address``:``port`` (idempotent).  Raises OSError.

        A socket that is not ``permanent`` serves the sessions that asked for its port and is
        closed with the last of them.
        """
        if (address, port) in self._sockets:
            return
        sock = open_udp(address, port)
        try:
            self.adopt(sock, permanent=permanent, light=light)
        except OSError:
            sock.close()
            raise

    def adopt(self, sock: socket.socket, *, permanent: bool = True, light: bool = False) -> None:
        """Reflect on ``sock``, a bound UDP socket (ours, or handed over by systemd).

        An IPv6 socket that is not IPv6-only (systemd's ``ListenDatagram=863``) also receives
        IPv4, from IPv4-mapped addresses: it gets the IPv4 options too, and the hot path strips
        the mapping so that sessions are known by their plain IPv4 address.
        """
        dual_stack = is_dual_stack(sock)
        families = (socket.AF_INET6, socket.AF_INET) if dual_stack else (sock.family,)
        for each in families:
            options = udp_options.receive_options(each)
            if light:  # Light replies copy the request's DSCP (RFC 5357 §4.2.1)
                options += udp_options.traffic_class_receive_options(each)
            for level, option, value in options:
                sock.setsockopt(level, option, value)
            for level, option, value in udp_options.send_options(each):
                sock.setsockopt(level, option, value)
        udp_options.grow_buffers(sock, RECEIVE_BUFFER, RECEIVE_BUFFER)
        sock.setblocking(False)
        address, bound_port = sock.getsockname()[:2]
        with self._lock:
            self._sockets[(address, bound_port)] = sock
            self._by_fd[sock.fileno()] = (sock, bound_port, dual_stack)
            if permanent or light:
                self._permanent_ports.add(bound_port)
            if light:
                self._light_ports.add(bound_port)
            self._poller.register(sock)

    def bound(self, port: int) -> bool:
        """Whether some socket already listens on ``port``."""
        return any(bound_port == port for _address, bound_port in self._sockets)

    def start(self) -> None:
        """Start reflecting on the reflector thread."""
        self._poller.start()

    def dropped(self) -> int:
        """Datagrams the kernel dropped at the reflector's sockets since the start."""
        with self._lock:
            return self._poller.dropped()

    def close(self) -> None:
        """Stop the reflector thread and close every socket (shutdown)."""
        self._poller.stop()
        with self._lock:
            for key in list(self._sockets):
                self._close(key)
        self._poller.close()

    def _close(self, key: tuple[str, int]) -> None:
        """Close one socket; the caller holds ``_lock``."""
        sock = self._sockets.pop(key)
        del self._by_fd[sock.fileno()]
        self._poller.unregister(sock)
        sock.close()

    # -- sessions --------------------------------------------------------------------------------

    def add(self, session: TestSession) -> None:
        with self._lock:
            self._sessions[session.key] = session
            self.latches.add(session)

    def taken(self, key: SessionKey) -> bool:
        """Whether a session already receives from that sender on that port."""
        return key in self._sessions

    def remove(self, session: TestSession) -> None:
        """Forget ``session``; close its port if it was opened for it and nothing else uses it."""
        with self._lock:
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]
            self.latches.ended(session, time.monotonic())
            if not session.sid:
                self.light.release(session.peer[0])
            port = session.local_port
            if port in self._permanent_ports or any(
                other.local_port == port for other in self._sessions.values()
            ):
                return
            for key in [key for key in self._sockets if key[1] == port]:
                self._close(key)

    def sessions(self) -> list[TestSession]:
        with self._lock:
            return list(self._sessions.values())

    def _latch(self, port: int, sender: Address, data: bytes, now: float) -> TestSession | None:
        """The session a packet from an unannounced sender port belongs to (see
        :meth:`Latches.find`), now known by that port; the caller holds ``_lock``."""
        session = self.latches.find(port, sender, data, now, self._sender_in_use)
        if session is None:
            return None
        del self._sessions[session.key]
        session.peer = sender
        self._sessions[session.key] = session
        return session

    def _sender_in_use(self, sender: Address) -> bool:
        """Whether a session, on any port, receives from ``sender``."""
        return any(key[1] == sender[0] and key[2] == sender[1] for key in self._sessions)

    def _light_session(self, port: int, sender: Address, now: float) -> TestSession | None:
        if port not in self._light_ports:
            return None
        refusal = self.light.admit(sender[0])
        if refusal is not None:
            self._report(refusal, sender, now)
            return None
        session = TestSession(
            sid=b"",
            peer=sender,
            local_port=port,
            started=True,
            last_seen=now,
            latchable=False,
            no_amplification=not self.light_short,
        )
        self._sessions[session.key] = session
        return session

    def light_senders(self) -> list[TestSession]:
        """The TWAMP Light senders tracked now."""
        with self._lock:
            return [session for session in self._sessions.values() if not session.sid]

    # -- the hot path ----------------------------------------------------------------------------

    def _ready(self, fd: int, _events: int) -> None:
        """On the reflector thread, holding ``_lock``: ``fd`` has a datagram."""
        entry = self._by_fd.get(fd)
        if entry is not None:
            self._receive(*entry)

    def _receive(self, sock: socket.socket, port: int, dual_stack: bool) -> None:
        """Reflect one datagram from ``sock``; the caller holds ``_lock``.

        One per readiness report, not "until EAGAIN": epoll is level-triggered, so a fuller
        socket is simply reported again, and the exception that ends a drain loop costs more
        than the epoll_wait it saves (about 5 µs per wake-up against 1 µs).
        """
        now = time.monotonic()
        try:
            data, ancdata, flags, address = sock.recvmsg(MAX_DATAGRAM, ANCILLARY_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.unmatched += 1
            return
        host = address[0]
        if dual_stack and host.startswith("::ffff:"):
            host = host[7:]
        session = self._sessions.get((port, host, address[1]))
        if session is not None and session.latchable:
            self.latches.settle(session)
        elif session is None:
            sender = (host, address[1])
            session = self._latch(port, sender, data, now) or self._light_session(port, sender, now)
            if session is None:
                self.unmatched += 1
                return
        if flags & _MSG_TRUNC:
            session.dropped += 1
            return
        received_ns, ttl = udp_options.parse_ancillary(ancdata)
        if not session.sid and (dscp := udp_options.received_dscp(ancdata)) is not None:
            session.mark(dscp)  # TWAMP Light: the reply keeps the request's DSCP
        self._reflect(sock, session, data, address, received_ns, ttl, now)

    def _reflect(
        self,
        sock: socket.socket,
        session: TestSession,
        data: bytes,
        address: Address,
        received_ns: int | None,
        ttl: int,
        now: float,
    ) -> None:
        deadline = session.stop_deadline
        if not session.started or (deadline is not None and now > deadline):
            session.dropped += 1
            return
        session.last_seen = now
        if received_ns is None:  # the kernel always stamps; never expected, but never lie
            received_ns = time.time_ns()
        if session.protection is not None:
            try:
                data = session.protection.open_sender(data)
            except ProtocolError:
                session.bad_hmac += 1
                return
        authenticated = session.authenticated
        if len(data) < SENDER_HEADER_SIZE[authenticated] or (
            session.no_amplification and len(data) < REFLECTOR_HEADER_SIZE[authenticated]
        ):
            session.dropped += 1
            if not session.sid:
                self._report(
                    f"{len(data)} octets, shorter than the reply"
                    f" ({REFLECTOR_HEADER_SIZE[authenticated]}); light_short_requests is off"
                    if len(data) >= SENDER_HEADER_SIZE[authenticated]
                    else f"{len(data)} octets, shorter than a TWAMP-Test packet",
                    session.peer,
                    now,
                )
            return

        builder = session.builder
        reply = builder.build(data, session.seq, ns_to_ntp(received_ns), self.error_estimate, ttl)
        builder.stamp(ns_to_ntp(time.time_ns()))
        packet: bytes | bytearray = reply
        if session.protection is not None:
            packet = session.protection.seal_reflector(bytes(reply))
        try:
            if session.ancillary:
                sock.sendmsg([packet], session.ancillary, 0, address)
            else:
                sock.sendto(packet, address)
        except OSError:
            session.dropped += 1
            return
        session.seq = (session.seq + 1) & 0xFFFF_FFFF
        session.reflected += 1
        self.total_reflected += 1


def open_udp(address: str, port: int) -> socket.socket:
    """A UDP socket bound to ``address``:``port`` (IPv6 sockets IPv6-only); raises OSError."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock
