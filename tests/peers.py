"""Small broken or hostile peers for the client's failure tests, on real loopback sockets.

:class:`FakeReflector` answers TWAMP Light packets the way a given reflector does (swapped or
impossible timestamps, its own or our sequence numbers, short replies, drops).
:class:`Dripper` is a TWAMP-Control "server" that sends its greeting one octet at a time.
:class:`Proxy` relays a real server's control connection and can inject bytes into it or cut
it, at a moment the test chooses.  :class:`StampReflector` (our sans-I/O reflector) and
:class:`ScapyStampReflector` (scapy's STAMP packets) answer STAMP on loopback, recording what
they put in each reply, and can lose packets in either direction.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable
from typing import Self

from twamp_common import udp_options
from twamp_common.stamp import FollowUp
from twamp_common.stamp_reflector import Arrival, ReflectorConfig, ReflectorState, reflect
from twamp_common.stamp_tlv import SyncSource, TimestampMethod
from twamp_common.test_packets import ReflectorPacket, SenderPacket
from twamp_common.timestamp import NTP_UNIX_OFFSET, ErrorEstimate, ns_to_ntp

SYNCED = ErrorEstimate(True, 0, 1).to_wire()


@dataclasses.dataclass
class Stamps:
    """What a fake reflector knows when it answers one packet: ``seq`` counts its replies."""

    seq: int
    t2: int
    t3: int
    sender: SenderPacket


#: Turns what the reflector knows into the reply octets, or None to drop the packet.
Behaviour = Callable[[Stamps], bytes | None]


def honest(stamps: Stamps) -> bytes:
    """An RFC 5357 reflector: its own numbers, T2 then T3."""
    return reply(stamps.seq, stamps.t2, stamps.t3, stamps.sender)


def reply(seq: int, t2: int, t3: int, sender: SenderPacket, ttl: int = 255) -> bytes:
    return ReflectorPacket(
        seq,
        ns_to_ntp(t3),
        SYNCED,
        ns_to_ntp(t2),
        sender.seq,
        sender.timestamp,
        sender.error_estimate,
        ttl,
    ).pack(False)


class _Serving:
    """A peer that serves ``sock`` on a thread of its own for the length of a ``with`` block;
    ``_serve`` returns soon after ``_stop`` is set (its socket times out every 0.1 s)."""

    sock: socket.socket

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        raise NotImplementedError


class FakeReflector(_Serving):
    """A TWAMP Light reflector on a free loopback UDP port, in a thread of its own."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1", delay: float = 0.0) -> None:
        self.behaviour = behaviour
        #: Seconds each reply is held back: a long path, with replies in flight.
        self.delay = delay
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]
        #: Replies sent: a stateful reflector's next sequence number.
        self.answered = 0
        super().__init__()

    def _serve(self) -> None:
        held: collections.deque[tuple[float, bytes, tuple[str, int]]] = collections.deque()
        while not self._stop.is_set():
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, answer, peer = held.popleft()
                self.sock.sendto(answer, peer)
            self.sock.settimeout(min(0.1, held[0][0] - now) if held else 0.1)
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            t2 = time.time_ns()
            sender = SenderPacket.unpack(data, False)
            answer = self.behaviour(Stamps(self.answered, t2, time.time_ns(), sender))
            if answer is not None:
                self.answered += 1
                held.append((time.monotonic() + self.delay, answer, peer))


class Dripper(_Serving):
    """Accepts one TWAMP-Control connection and sends a greeting's worth of zeros, one octet
    every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        super().__init__()

    def _serve(self) -> None:
        self.sock.settimeout(5)
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                for _ in range(64):
                    if self._stop.wait(self.every):
                        return
                    conn.sendall(b"\0")


class Proxy:
    """Relays one control connection to ``upstream``; :meth:`inject` sends the client bytes of
    our own, :meth:`cut` closes the client's side; :attr:`from_client` keeps what the client
    sent."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.client: socket.socket | None = None
        self.connected = threading.Event()
        self.from_client = bytearray()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Proxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        self.listener.settimeout(10)
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
            self.client = client
            for source, sink, kept in (
                (client, server, self.from_client),
                (server, client, bytearray()),
            ):
                thread = threading.Thread(
                    target=self._relay, args=(source, sink, kept), daemon=True
                )
                thread.start()
            self.connected.set()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket, kept: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                kept += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def inject(self, data: bytes) -> None:
        assert self.client is not None
        self.client.sendall(data)

    def cut(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_RDWR)
            self.client.close()
            self.client = None


@dataclasses.dataclass
class StampAnswer:
    """What a STAMP test reflector put in one reply (or would have, had it not dropped it)."""

    sender_seq: int
    seq: int
    t2: int
    t3: int
    #: TOS / Traffic Class octet the request arrived with (None: not reported).
    tos: int | None
    ssid: int
    #: Octets of the request (and so of the reply).
    size: int
    #: TTL / Hop Limit the request arrived with.
    ttl: int
    #: When the kernel sent the reply (what a later Follow-Up Telemetry TLV names).
    sent: int = 0
    reply_size: int = 0
    dropped: bool = False


class _UdpReflector(_Serving):
    """A STAMP test reflector's socket loop on loopback; subclasses answer each request.

    ``ignore``: sender sequence numbers never read (lost on the way out); ``drop``: numbers
    answered but not sent back (lost on the way back).  ``answers`` records every reply.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        ignore: frozenset[int] = frozenset(),
        drop: frozenset[int] = frozenset(),
    ) -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        for level, option, value in [
            *udp_options.receive_options(self.family),
            *udp_options.traffic_class_receive_options(self.family),
        ]:
            self.sock.setsockopt(level, option, value)
        for level, option, value in udp_options.tx_timestamp_options():
            try:
                self.sock.setsockopt(level, option, value)
                break
            except OSError:
                continue
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._sent = 0
        self.port = self.address[1]
        self.ignore, self.drop = ignore, drop
        self.answers: list[StampAnswer] = []
        self.errors: list[str] = []
        super().__init__()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, peer = self.sock.recvmsg(
                    65535, udp_options.TRAFFIC_CLASS_ANCILLARY_SPACE
                )
            except TimeoutError:
                continue
            kernel_t2, ttl = udp_options.parse_ancillary(ancdata)
            tos = _tos(ancdata)
            try:
                seq = int.from_bytes(data[:4], "big")
                if seq in self.ignore:
                    continue
                t2 = kernel_t2 or time.time_ns()
                reply, dscp = self.answer(data, t2=t2, ttl=ttl, tos=tos, peer=peer[:2])
            except Exception as error:  # recorded for the test to see
                self.errors.append(repr(error))
                continue
            answer = self.answers[-1]
            if seq in self.drop:
                answer.dropped = True
                continue
            if dscp is not None:
                level, option = (
                    (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
                    if self.family == socket.AF_INET6
                    else (socket.IPPROTO_IP, socket.IP_TOS)
                )
                self.sock.setsockopt(level, option, dscp << 2)
            octets = reply()
            answer.reply_size = len(octets)
            self.sock.sendto(octets, peer)
            answer.sent = self._kernel_send_time()

    def _kernel_send_time(self) -> int:
        """When the kernel sent the last reply (SO_TIMESTAMPING), else the time read now."""
        counter, self._sent = self._sent, self._sent + 1
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                _data, ancdata, _flags, _address = self.sock.recvmsg(
                    0, udp_options.TX_ANCILLARY_SPACE, socket.MSG_ERRQUEUE
                )
            except (BlockingIOError, TimeoutError):
                time.sleep(0.001)
                continue
            stamp = udp_options.parse_tx_timestamp(ancdata)
            if stamp is not None and stamp[0] == counter:
                return stamp[1]
        return time.time_ns()

    def answer(
        self, data: bytes, *, t2: int, ttl: int, tos: int | None, peer: tuple[str, int]
    ) -> tuple[Callable[[], bytes], int | None]:
        """A function that stamps T3 and returns the reply, and the DSCP to send it with;
        appends its StampAnswer."""
        raise NotImplementedError


def _tos(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS and data:
            return data[0]
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_TCLASS and len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    return None


class StampReflector(_UdpReflector):
    """Our sans-I/O :func:`twamp_common.stamp_reflector.reflect` in a socket loop: stateful,
    with Follow-Up Telemetry naming each previous reply's real send time."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        key: bytes | None = None,
        authenticated: bool = False,
        ignore: frozenset[int] = frozenset(),
        drop: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(host, ignore=ignore, drop=drop)
        self.key = key
        self.config = ReflectorConfig(
            ErrorEstimate(True, 0, 1),
            authenticated=authenticated,
            sync_source=SyncSource.PTP,
            timestamp_in=TimestampMethod.HW_ASSIST,
            timestamp_out=TimestampMethod.SW_LOCAL,
        )
        self.state = ReflectorState()

    def answer(
        self, data: bytes, *, t2: int, ttl: int, tos: int | None, peer: tuple[str, int]
    ) -> tuple[Callable[[], bytes], int | None]:
        sent = [answer for answer in self.answers if answer.sent]
        previous = FollowUp(sent[-1].seq, sent[-1].sent, TimestampMethod.SW_LOCAL) if sent else None
        arrival = Arrival(ttl=ttl, tos=tos, source=peer, destination=self.address)
        reflection = reflect(
            data,
            t2_ns=t2,
            config=self.config,
            arrival=arrival,
            key=self.key,
            state=self.state,
            session=peer,
            follow_up=previous,
        )
        answer = StampAnswer(
            reflection.sender_seq, reflection.seq, t2, 0, tos, reflection.ssid, len(data), ttl
        )
        self.answers.append(answer)

        def finish() -> bytes:
            answer.t3 = time.time_ns()
            return reflection.finish(answer.t3)

        return finish, reflection.reply_dscp


class ScapyStampReflector(_UdpReflector):
    """scapy's ``scapy.contrib.stamp`` reads our request and builds the reply (unauthenticated
    only: scapy has no authenticated layout).  Stateful; it fills Timestamp Information (NTP,
    software) and Class of Service from what it saw, and returns every other TLV with U set,
    as a reflector that does not know them must."""

    def answer(
        self, data: bytes, *, t2: int, ttl: int, tos: int | None, peer: tuple[str, int]
    ) -> tuple[Callable[[], bytes], int | None]:
        from scapy.contrib import stamp as scapy_stamp  # here: scapy is slow to load

        request = scapy_stamp.STAMPSessionSenderTestUnauthenticated(data)
        tlvs = []
        reply_dscp = None
        for tlv in request.tlv_objects:
            value, flags = bytes(tlv.value), 0x80
            if tlv.type == 3 and len(value) >= 4:  # Timestamp Information: NTP, SW local
                value, flags = bytes((1, 2, 1, 2)) + value[4:], 0
            elif tlv.type == 4 and len(value) == 4 and tos is not None:  # Class of Service
                dscp1 = value[0] >> 2
                bits = dscp1 << 10 | (tos >> 2) << 4 | (tos & 3) << 2
                value, flags, reply_dscp = bits.to_bytes(2, "big") + bytes(2), 0, dscp1
            elif tlv.type == 1:  # Extra Padding: echoed, understood
                flags = 0
            tlvs.append(
                scapy_stamp.STAMPTestTLV(flags=flags, type=tlv.type, len=len(value), value=value)
            )
        seq = len(self.answers)
        answer = StampAnswer(int(request.seq), seq, t2, 0, tos, int(request.ssid), len(data), ttl)
        self.answers.append(answer)

        def finish() -> bytes:
            answer.t3 = time.time_ns()
            reply = scapy_stamp.STAMPSessionReflectorTestUnauthenticated(
                seq=seq,
                ts=answer.t3 / 1e9 + NTP_UNIX_OFFSET,
                err_estimate=scapy_stamp.ErrorEstimate(S=1, scale=0, multiplier=1),
                ssid=request.ssid,
                ts_rx=t2 / 1e9 + NTP_UNIX_OFFSET,
                seq_sender=request.seq,
                ts_sender=request.getfieldval("ts"),
                err_estimate_sender=request.err_estimate,
                ttl_sender=ttl,
                tlv_objects=tlvs,
            )
            return bytes(reply)

        return finish, reply_dscp
