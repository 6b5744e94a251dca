"""Small broken or hostile peers for the client's failure tests, on real loopback sockets.

:class:`FakeReflector` answers TWAMP Light packets the way a given reflector does (swapped or
impossible timestamps, its own or our sequence numbers, short replies, drops).
:class:`Dripper` is a TWAMP-Control "server" that sends its greeting one octet at a time.
:class:`Proxy` relays a real server's control connection and can inject bytes into it or cut
it, at a moment the test chooses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable

from twamp_common.test_packets import ReflectorPacket, SenderPacket
from twamp_common.timestamp import ErrorEstimate, ns_to_ntp

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


class FakeReflector:
    """A TWAMP Light reflector on a free loopback UDP port, in a thread of its own."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1") -> None:
        self.behaviour = behaviour
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        #: Replies sent: a stateful reflector's next sequence number.
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeReflector:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            t2 = time.time_ns()
            sender = SenderPacket.unpack(data, False)
            answer = self.behaviour(Stamps(self.answered, t2, time.time_ns(), sender))
            if answer is not None:
                self.answered += 1
                self.sock.sendto(answer, peer)


class Dripper:
    """Accepts one TWAMP-Control connection and sends a greeting's worth of zeros, one octet
    every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Dripper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        self.listener.settimeout(5)
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
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
