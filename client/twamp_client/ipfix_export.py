"""Records to one IPFIX collector over UDP or TCP, without ever stalling the measurements.

The caller (the monitor, on its result path) only puts records into a bounded queue; a thread of
this sender's own encodes them with :class:`twamp_common.ipfix.Exporter` and sends them.  While
the collector is down (TCP refused or reset) records wait in that queue; when it is full the
newest are dropped and counted (``dropped``), with one log line when an outage starts and one
when it ends.  TCP reconnects with exponential backoff (1 s doubling to 60 s) and re-sends the
templates on every connect (RFC 7011 §10.3: a new connection is a new stream); UDP re-sends
them every ``template_refresh`` seconds.  A batch cut off by a failing connection is sent again
whole on the next one, so a collector may see some records of it twice; over UDP nothing tells
a sender that the collector is down, so nothing waits.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping

from twamp_common.ipfix import Exporter

#: Reconnect backoff bounds, seconds.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0

#: Largest message: a TCP stream allows IPFIX's 16-bit length; a UDP datagram must fit a
#: 1500-octet path MTU after the IPv4 (20 + 8) or IPv6 (40 + 8) headers.
_MESSAGE_SIZE = {
    ("tcp", socket.AF_INET): 65_535,
    ("tcp", socket.AF_INET6): 65_535,
    ("udp", socket.AF_INET): 1472,
    ("udp", socket.AF_INET6): 1452,
}

Record = Mapping[str, object]
Log = Callable[[str], None]


class IpfixSender:
    """One collector: ``submit`` records from any thread; ``close`` to flush and stop."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        transport: str = "udp",
        observation_domain: int = 0,
        enterprise: int = 32473,
        template_refresh: float = 600.0,
        buffer: int = 10_000,
        log: Log = lambda _line: None,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport {transport!r} is neither udp nor tcp")
        self.address = address
        self.transport = transport
        self.log = log
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._family = family
        # Over TCP a message may be as large as a stream allows; over UDP it must fit a
        # datagram on the path (the encoder's default budget).
        self.exporter = Exporter(
            observation_domain,
            enterprise,
            max_message_size=_MESSAGE_SIZE[transport, family],
            template_refresh=None if transport == "tcp" else template_refresh,
        )
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=buffer)
        self.dropped = 0
        self.sent = 0
        self._outage: str | None = None
        #: Drops since the collector was last reachable (or since the start).
        self._dropped_in_outage = 0
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"ipfix {address}", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Queue one record; never blocks (a full queue drops it and counts it)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._dropped_in_outage += 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()

    # The sender's thread -------------------------------------------------------------------

    def _run(self) -> None:
        """Take records in batches; a batch that fails waits for the next try, the queue
        behind it fills meanwhile."""
        backoff = BACKOFF_FIRST
        batch: list[Record] = []
        stopping = False
        while True:
            if not batch:
                first = self._queue.get()
                if first is None:
                    return
                batch.append(first)
            while len(batch) < 64 and not stopping:
                try:
                    record = self._queue.get_nowait()
                except queue.Empty:
                    break
                if record is None:
                    stopping = True
                else:
                    batch.append(record)
            try:
                self._send(batch)
            except OSError as error:
                self._down(error)
                if stopping:
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.sent += len(batch)
            batch = []
            backoff = BACKOFF_FIRST
            self._up()
            if stopping:
                return

    def _send(self, batch: list[Record]) -> None:
        if self._sock is None:
            self._sock = self._connect()
        for message in self.exporter.messages(batch, time.time()):
            if self.transport == "tcp":
                self._sock.sendall(message)
            else:
                self._sock.sendto(message, self.address)

    def _connect(self) -> socket.socket:
        if self.transport == "udp":
            return socket.socket(self._family, socket.SOCK_DGRAM)
        sock = socket.create_connection(self.address, timeout=5.0)
        self.exporter.reset()  # a new stream: templates first, sequence from 0
        return sock

    def _down(self, error: OSError) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._outage is None:
            self._outage = error.strerror or type(error).__name__
            self.log(
                f"IPFIX collector {self.address[0]} port {self.address[1]} unreachable"
                f" ({self._outage}): records wait, up to the buffer, and reconnects back off"
            )

    def _up(self) -> None:
        if self._outage is not None:
            self.log(
                f"IPFIX collector {self.address[0]} port {self.address[1]} reachable again;"
                f" {self._dropped_in_outage} records dropped meanwhile"
            )
            self._outage = None
        self._dropped_in_outage = 0
