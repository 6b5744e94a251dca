"""The STAMP Session-Reflector (RFC 8762, RFC 8972): its UDP sockets, sessions and thread.

STAMP has no control protocol: a session is whatever sends to a STAMP port, known by our
address and port, the sender's address and port and the SSID (RFC 8972 §3).  The protocol is
:func:`twamp_common.stamp_reflector.reflect`; this module gives it what only the sockets know
and keeps what a session must remember between packets:

* T2 is the kernel's receive time (SO_TIMESTAMPNS), TTL / Hop Limit and the TOS / Traffic
  Class octet come from the same ``recvmsg`` (Class of Service TLV); T3 is written by
  :meth:`~twamp_common.stamp_reflector.Reflection.finish` immediately before ``sendmsg``;
* the reply is built on a copy of the request: never longer than it, so no input amplifies;
* the kernel's transmit time of each reply (SO_TIMESTAMPING, software, read from the error
  queue) becomes the Follow-Up Telemetry TLV of that session's next reply.  A report is matched
  to its reply by the kernel's per-socket counter (OPT_ID); when the kernel stamps nothing, or
  the report has not arrived before the next request, the TLV is all zeros, which RFC 8972
  §4.7 reads as "no follow-up time";
* stateful mode (RFC 8762 §4.3.1) counts the reflector's own Sequence Numbers per session, so
  that a sender tells loss on the way out from loss on the way back;
* admission: only ``stamp_allow`` addresses, at most ``per_address`` sessions per address and
  ``capacity`` in all; a session is created only once its first packet was answered (an
  authenticated port: once its HMAC verified), so forged packets take no slot.

Every port is either authenticated or not (``stamp_key_id``): the two layouts cannot be told
apart by their octets, since an unauthenticated packet with TLVs may be 112 octets long too.

Threads: like the TWAMP-Test reflector, the sockets are served by a
:class:`~twamp_server.poll_thread.PollThread` of their own; the daemon's event loop only calls
:meth:`StampService.expire`, reads :attr:`StampService.sessions` and changes the policy and
the clock state, under ``_lock``.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import sys
import time
from collections.abc import Callable

from twamp_common import udp_options
from twamp_common.errors import AuthenticationError, RemoteProtocolError
from twamp_common.stamp import BASE_SIZE, FollowUp, peek_ssid
from twamp_common.stamp_reflector import (
    Arrival,
    Counters,
    Reflection,
    ReflectorConfig,
    ReflectorState,
    reflect,
)
from twamp_common.stamp_tlv import SyncSource, TimestampMethod
from twamp_common.timestamp import ErrorEstimate

from .activation import is_dual_stack
from .drops import Address, DropReports
from .poll_thread import PollThread
from .reflector import MAX_DATAGRAM, RECEIVE_BUFFER, open_udp

#: Room for SCM_TIMESTAMPNS, the TTL and the TOS, and for an SCM_TIMESTAMPING a kernel might
#: attach as well (see udp_options.tx_timestamp_options).
RECEIVE_ANCILLARY_SPACE = udp_options.TRAFFIC_CLASS_ANCILLARY_SPACE + socket.CMSG_SPACE(48)
#: Replies whose transmit report is awaited, per socket: more are forgotten oldest first.
PENDING_REPORTS = 4096
_MSG_TRUNC = int(socket.MSG_TRUNC)
_EPOLLIN, _EPOLLERR = int(select.EPOLLIN), int(select.EPOLLERR)
#: Addresses that say nothing of where a packet was sent (a socket bound to every address).
_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104
#: (our address, our port, sender address, sender port, SSID).
SessionKey = tuple[str, int, str, int, int]


@dataclasses.dataclass(eq=False, slots=True)
class StampSession:
    """One STAMP session: what its next reply needs and what its end is logged with."""

    key: SessionKey
    counters: Counters
    #: Monotonic time of the last packet answered: for session_timeout.
    last_seen: float
    #: The previous reply's Sequence Number, and its kernel send time once reported.
    last_seq: int | None = None
    follow_up: FollowUp | None = None
    reflected: int = 0
    dropped: int = 0
    bad_hmac: int = 0

    @property
    def peer(self) -> Address:
        return self.key[2], self.key[3]

    def fields(self) -> dict[str, object]:
        """What its log lines say about it."""
        _address, port, peer, peer_port, ssid = self.key
        return {"peer": peer, "peer_port": peer_port, "port": port, "ssid": ssid}

    def counts(self) -> dict[str, int]:
        return {"reflected": self.reflected, "dropped": self.dropped, "bad_hmac": self.bad_hmac}


@dataclasses.dataclass(eq=False, slots=True)
class _Socket:
    """A STAMP socket and the bookkeeping of its transmit-time reports."""

    sock: socket.socket
    address: str
    port: int
    dual_stack: bool
    #: The SO_TIMESTAMPING value the kernel accepted; None: it stamps nothing we send.
    stamping: int | None
    #: OPT_ID of the next datagram sent, and the replies awaiting their report by OPT_ID.
    next_id: int = 0
    pending: dict[int, tuple[StampSession, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class StampPolicy:
    """Who is answered and how many sessions are kept: the daemon's configuration."""

    allowed: Callable[[str], bool] = lambda _address: False
    capacity: int = 0
    per_address: int = 0
    #: The HMAC key of the authenticated mode (None: unauthenticated ports).
    key: bytes | None = None


class StampService:
    """The STAMP reflector: :meth:`bind` or :meth:`adopt` sockets, :meth:`start`, then the
    daemon calls :meth:`expire` on its tick and :meth:`close` at the end."""

    def __init__(
        self,
        *,
        stateful: bool,
        authenticated: bool,
        on_failure: Callable[[BaseException], None],
        log: Callable[..., None],
    ) -> None:
        """``log(event, **fields)`` must be callable from any thread (the daemon hands the
        lines to its event loop); ``on_failure`` is called on the thread if a bug ends it."""
        self._log = log
        self.authenticated = authenticated
        self.policy = StampPolicy()
        #: Error Estimate of our timestamps; refreshed by the daemon.
        self.error_estimate = ErrorEstimate(synchronized=False, scale=0, multiplier=1)
        self._config = self._reflector_config()
        #: Stateful mode's own Sequence Numbers; our table already bounds the sessions.
        self._state = ReflectorState(sys.maxsize) if stateful else None
        self._poller = PollThread("stamp", self._ready, on_failure)
        self._lock = self._poller.lock
        self._sockets: dict[int, _Socket] = {}
        self._sessions: dict[SessionKey, StampSession] = {}
        self._by_address: dict[str, int] = {}
        self._report = DropReports(self._dropped)
        #: Replies sent, for the status line's packet rate.
        self.total_reflected = 0

    # -- configuration -------------------------------------------------------------------------

    def set_clock(self, error_estimate: ErrorEstimate) -> None:
        """Our clock's state as the daemon last read it (S bit, error)."""
        with self._lock:
            self.error_estimate = error_estimate
            self._config = self._reflector_config()

    def _reflector_config(self) -> ReflectorConfig:
        return ReflectorConfig(
            self.error_estimate,
            authenticated=self.authenticated,
            sync_source=(
                SyncSource.NTP
                if self.error_estimate.synchronized
                else SyncSource.LOCAL_FREE_RUNNING
            ),
            timestamp_in=TimestampMethod.SW_LOCAL,
            timestamp_out=TimestampMethod.SW_LOCAL,
        )

    def set_policy(self, policy: StampPolicy) -> None:
        """New admission rules and key; sessions already admitted stay."""
        with self._lock:
            self.policy = policy

    # -- sockets -------------------------------------------------------------------------------

    def bind(self, address: str, port: int) -> None:
        """Open and serve a STAMP socket on ``address``:``port``.  Raises OSError."""
        sock = open_udp(address, port)
        try:
            self.adopt(sock)
        except OSError:
            sock.close()
            raise

    def adopt(self, sock: socket.socket) -> None:
        """Serve ``sock``, a bound UDP socket (ours, or handed over by systemd)."""
        dual_stack = is_dual_stack(sock)
        families = (socket.AF_INET6, socket.AF_INET) if dual_stack else (sock.family,)
        for family in families:
            for option in (
                *udp_options.receive_options(family),
                *udp_options.traffic_class_receive_options(family),
                *udp_options.send_options(family),
            ):
                sock.setsockopt(*option)
        stamping = _enable_tx_timestamps(sock)
        udp_options.grow_buffers(sock, RECEIVE_BUFFER, RECEIVE_BUFFER)
        sock.setblocking(False)
        address, port = sock.getsockname()[:2]
        with self._lock:
            self._sockets[sock.fileno()] = _Socket(sock, address, port, dual_stack, stamping)
            self._poller.register(sock)

    def start(self) -> None:
        self._poller.start()

    def dropped(self) -> int:
        """Datagrams the kernel dropped at the STAMP sockets since the start."""
        with self._lock:
            return self._poller.dropped()

    def close(self) -> list[StampSession]:
        """Stop the thread, close every socket; the sessions that were running."""
        self._poller.stop()
        with self._lock:
            for entry in self._sockets.values():
                self._poller.unregister(entry.sock)
                entry.sock.close()
            self._sockets.clear()
            ended = list(self._sessions.values())
            self._sessions.clear()
            self._by_address.clear()
        self._poller.close()
        return ended

    # -- sessions ------------------------------------------------------------------------------

    @property
    def sessions(self) -> int:
        """Sessions tracked now (the status line)."""
        return len(self._sessions)

    def expire(self, now: float, limit: float) -> list[StampSession]:
        """Forget the sessions silent for more than ``limit`` seconds; those it forgot."""
        with self._lock:
            ended = [s for s in self._sessions.values() if now - s.last_seen > limit]
            for session in ended:
                self._forget(session)
        return ended

    def _forget(self, session: StampSession) -> None:
        """The caller holds ``_lock``."""
        del self._sessions[session.key]
        host = session.key[2]
        self._by_address[host] -= 1
        if not self._by_address[host]:
            del self._by_address[host]
        if self._state is not None:
            self._state.forget((session.key, session.key[4]))

    def _admit(self, key: SessionKey, sender: Address, now: float) -> StampSession | None:
        """A new session for ``key`` if the policy lets one in (not yet in the table)."""
        policy = self.policy
        if not policy.allowed(sender[0]):
            self._report("sender not in stamp_allow", sender, now)
            return None
        if len(self._sessions) >= policy.capacity:
            self._report(f"stamp table full ({policy.capacity} sessions)", sender, now)
            return None
        if self._by_address.get(sender[0], 0) >= policy.per_address:
            reason = f"{policy.per_address} stamp sessions from this address already"
            self._report(reason, sender, now)
            return None
        return StampSession(key, Counters(), now)

    def _dropped(self, reason: str, sender: Address) -> None:
        self._log("stamp packet dropped", peer=sender[0], peer_port=sender[1], reason=reason)

    # -- the thread ----------------------------------------------------------------------------

    def _ready(self, fd: int, events: int) -> None:
        """On the thread, holding ``_lock``: ``fd`` has send-time reports, a datagram, or both."""
        entry = self._sockets.get(fd)
        if entry is None:
            return
        if events & _EPOLLERR:
            self._read_send_times(entry)
        if events & _EPOLLIN:
            self._receive(entry)

    def _read_send_times(self, entry: _Socket) -> None:
        """Take the kernel's transmit reports off the error queue (while it holds any, epoll
        keeps reporting the socket) and keep each as its session's follow-up time."""
        while True:
            try:
                _data, ancdata, _flags, _address = entry.sock.recvmsg(
                    0, udp_options.TX_ANCILLARY_SPACE, socket.MSG_ERRQUEUE
                )
            except OSError:  # EAGAIN: the queue is empty
                return
            stamp = udp_options.parse_tx_timestamp(ancdata)
            if stamp is None:
                continue
            counter, sent_ns = stamp
            waiting = entry.pending.pop(counter, None)
            if waiting is not None:
                session, seq = waiting
                if session.last_seq == seq:  # still its latest reply: the next one names it
                    session.follow_up = FollowUp(seq, sent_ns, TimestampMethod.SW_LOCAL)

    def _receive(self, entry: _Socket) -> None:
        """Answer one datagram of ``entry``'s socket; the caller holds ``_lock``."""
        try:
            data, ancdata, flags, address = entry.sock.recvmsg(
                MAX_DATAGRAM, RECEIVE_ANCILLARY_SPACE
            )
        except OSError:  # EAGAIN, or an error the kernel reported on the socket: nothing read
            return
        now = time.monotonic()
        host = address[0]
        if entry.dual_stack and host.startswith("::ffff:"):
            host = host[7:]
        sender = (host, address[1])
        size = BASE_SIZE[self.authenticated]
        if flags & _MSG_TRUNC or len(data) < size:
            reason = f"{len(data)} octets, shorter than a base STAMP packet ({size})"
            self._report(reason if len(data) < size else "longer than a datagram", sender, now)
            return
        key = (
            entry.address,
            entry.port,
            host,
            address[1],
            peek_ssid(data, authenticated=self.authenticated),
        )
        session = self._sessions.get(key)
        new = session is None
        if session is None:
            session = self._admit(key, sender, now)
            if session is None:
                return
        reflection = self._reflect(session, data, ancdata, now)
        if reflection is None:
            return
        if new:
            if self._state is not None:  # the counters reflect() keeps for this session
                session.counters = self._state.counters((key, key[4]))
            self._sessions[key] = session
            self._by_address[host] = self._by_address.get(host, 0) + 1
            self._log("stamp session started", **session.fields())
        session.last_seen = now
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        marking = udp_options.traffic_class_ancillary(family, reflection.reply_dscp or 0)
        packet = reflection.finish(time.time_ns())
        try:
            entry.sock.sendmsg([packet], marking, 0, address)
        except OSError:
            session.dropped += 1
            self._restart_counter(entry)
            return
        session.reflected += 1
        self.total_reflected += 1
        session.last_seq, session.follow_up = reflection.seq, None
        if entry.stamping is not None:
            self._await_report(entry, session, reflection.seq)

    def _reflect(
        self,
        session: StampSession,
        data: bytes,
        ancdata: list[tuple[int, int, bytes]],
        now: float,
    ) -> Reflection | None:
        """The reply to ``data`` but for T3, or None (reported) when it is not to be answered."""
        counters = session.counters
        if self._state is None:  # stateless: our counters, this packet and its reply included
            counters.received += 1
            counters.transmitted += 1
        received_ns, ttl = udp_options.parse_ancillary(ancdata)
        arrival = Arrival(
            ttl=ttl,
            tos=udp_options.received_traffic_class(ancdata),
            source=session.peer,
            destination=self._destination(session),
        )
        try:
            return reflect(
                data,
                t2_ns=received_ns if received_ns is not None else time.time_ns(),
                config=self._config,
                arrival=arrival,
                key=self.policy.key,
                state=self._state,
                session=session.key,
                counters=counters,
                follow_up=session.follow_up,
            )
        except RemoteProtocolError as error:
            if self._state is None:
                counters.received -= 1
                counters.transmitted -= 1
            if isinstance(error, AuthenticationError):
                session.bad_hmac += 1
            self._report(error.reason, session.peer, now)
            return None

    @staticmethod
    def _destination(session: StampSession) -> Address | None:
        """Our address as the sender addressed it, when the socket's own address says it."""
        address, port = session.key[:2]
        return None if address in _WILDCARDS else (address, port)

    def _await_report(self, entry: _Socket, session: StampSession, seq: int) -> None:
        pending = entry.pending
        pending[entry.next_id] = (session, seq)
        entry.next_id = (entry.next_id + 1) & 0xFFFF_FFFF
        if len(pending) > PENDING_REPORTS:
            del pending[next(iter(pending))]

    def _restart_counter(self, entry: _Socket) -> None:
        """After a failed send nobody knows whether the kernel counted it: turning OPT_ID off
        and on again restarts its counter at zero (the kernel's documented behaviour)."""
        if entry.stamping is None:
            return
        entry.pending.clear()
        entry.next_id = 0
        try:
            entry.sock.setsockopt(socket.SOL_SOCKET, udp_options.SO_TIMESTAMPING, 0)
            entry.sock.setsockopt(socket.SOL_SOCKET, udp_options.SO_TIMESTAMPING, entry.stamping)
        except OSError:
            entry.stamping = None


def _enable_tx_timestamps(sock: socket.socket) -> int | None:
    """Ask for the kernel's transmit time of each datagram; the value it accepted, or None
    (an old kernel refuses the flags it does not know: the Follow-Up TLV is then zero)."""
    for level, option, value in udp_options.tx_timestamp_options():
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            continue
        return value
    return None
