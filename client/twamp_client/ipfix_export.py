"""Records to one IPFIX collector over UDP or TCP, without ever stalling the measurements.

The caller (the monitor, on its result path) only puts records into a bounded queue; a thread of
this sender's own encodes them with :class:`twamp_common.ipfix.Exporter` and sends them.

What counts as dropped (``dropped``, twamp-monitor's ``twamp_ipfix_records_dropped_total``):
every record the sender knows did not reach the collector's host.  That is a record refused by a
full queue, and over UDP a record in a datagram the collector's host refused: the socket is
connected and queues ICMP errors (IP_RECVERR), so a "port unreachable" for a datagram names it
by its message header, and its records are counted (when the sender next sends: it reads the
error queue then).  A datagram the kernel would not send, because such a refusal was still
pending (ECONNREFUSED), counts likewise.  A datagram lost without an ICMP error (a firewall, a
host that is down, congestion) cannot be known and is not counted.  Refused records are not
sent again: UDP gives no way to know when a later datagram would arrive.  After a refusal the
next datagram leaves from a new socket: a new source port, so a new Transport Session (RFC 7011
§2), templates first and sequence from 0, which a collector that restarted can decode at once.
"Reachable again" is logged at the first send that finds no refusal of the datagrams before it.

Over TCP records wait in the queue while the collector is down (refused, reset, or closed by
the collector, which is checked before each send: a write after the peer closed would still
succeed and be lost); when the queue is full the newest are dropped.  TCP reconnects with
exponential backoff (1 s doubling to 60 s) and re-sends the templates on every connect (RFC 7011
§10.3: a new connection is a new stream); UDP re-sends them every ``template_refresh`` seconds.
A batch cut off by a failing connection is sent again whole on the next one, so a collector
may see some records of it twice.  An outage is logged once when it starts and once when it
ends.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping

from twamp_common.ipfix import MESSAGE_HEADER, SET_HEADER, Exporter
from twamp_common.udp_options import error_queue_options, parse_icmp_error

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
#: What names a datagram in an ICMP error's quote: its message header and first set header
#: (a template-only message and the data message after it share a sequence number).
_KEY = MESSAGE_HEADER.size + SET_HEADER.size
#: Datagrams remembered for ICMP errors that come back late.
_REMEMBERED = 4096
_SEQUENCE = struct.Struct("!I")
_UINT32 = 2**32

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
        # Two counters, each written by one thread only: the submitting one and the sender's.
        self._overflowed = 0
        self._refused = 0
        #: Records written to the socket (over UDP, those refused afterwards too).
        self.sent = 0
        self._outage: str | None = None
        #: ``dropped`` when the collector was last known reachable (or at the start).
        self._dropped_when_up = 0
        self._sock: socket.socket | None = None
        #: UDP: records in each datagram of this socket that an ICMP error may still name.
        self._in_flight: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._thread = threading.Thread(target=self._run, name=f"ipfix {address}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Records known not to have reached the collector (see the module's docstring)."""
        return self._overflowed + self._refused

    def submit(self, record: Record) -> None:
        """Queue one record; never blocks (a full queue drops it and counts it)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._overflowed += 1

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
                if self.transport == "tcp":
                    self._send_stream(batch)
                else:
                    self._send_datagrams(batch)
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
            if stopping:
                return

    def _send_stream(self, batch: list[Record]) -> None:
        if self._sock is not None and _peer_closed(self._sock):
            raise ConnectionResetError(errno.ECONNRESET, "connection closed by the collector")
        if self._sock is None:
            self._sock = socket.create_connection(self.address, timeout=5.0)
            self.exporter.reset()  # a new stream: templates first, sequence from 0
        for message in self.exporter.messages(batch, time.time()):
            self._sock.sendall(message)
        self._up()

    def _send_datagrams(self, batch: list[Record]) -> None:
        """Each datagram on a connected socket; records the collector's host refused are
        counted, and the rest of a batch cut off by a refusal goes on a new session."""
        pending = batch
        while pending:
            if self._sock is not None and self._collect_refusals():
                self._refusal()
            if self._sock is None:
                self._sock = socket.socket(self._family, socket.SOCK_DGRAM)
                for level, option, value in error_queue_options(self._family):
                    self._sock.setsockopt(level, option, value)
                self._sock.connect(self.address)
                self.exporter.reset()  # a new source port is a new transport session
            done = 0
            for message, records in _record_counts(
                self.exporter.messages(pending, time.time()), self.exporter.sequence
            ):
                done += records
                try:
                    self._sock.send(message)
                except OSError:
                    if not self._collect_refusals():
                        raise
                    # Not sent: the kernel reported a refusal of an earlier datagram instead.
                    self._refused += records
                    self._refusal()
                    break
                self._in_flight[message[:_KEY]] = records
                if len(self._in_flight) > _REMEMBERED:
                    self._in_flight.popitem(last=False)
            pending = pending[done:]

    def _collect_refusals(self) -> bool:
        """Count the records of datagrams the error queue says were refused; whether any
        were.  None after a datagram was sent: the collector is there."""
        assert self._sock is not None
        refused = False
        while True:
            try:
                quote, ancillary, _flags, _address = self._sock.recvmsg(
                    _KEY, socket.CMSG_SPACE(512), socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                break
            if parse_icmp_error(ancillary) is not None:
                refused = True
                self._refused += self._in_flight.pop(quote[:_KEY], 0)
        if not refused and self._in_flight:
            self._up()
        return refused

    def _refusal(self) -> None:
        """The collector's host refused a datagram: log the outage, start a new socket."""
        self._down(ConnectionRefusedError(errno.ECONNREFUSED, "port unreachable"))

    def _down(self, error: OSError) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._in_flight.clear()
        if self._outage is None:
            self._outage = error.strerror or type(error).__name__
            then = (
                "records wait, up to the buffer, and reconnects back off"
                if self.transport == "tcp"
                else "refused records are dropped"
            )
            self.log(
                f"IPFIX collector {self.address[0]} port {self.address[1]} unreachable"
                f" ({self._outage}): {then}"
            )

    def _up(self) -> None:
        if self._outage is not None:
            self.log(
                f"IPFIX collector {self.address[0]} port {self.address[1]} reachable again;"
                f" {self.dropped - self._dropped_when_up} records dropped meanwhile"
            )
            self._outage = None
        self._dropped_when_up = self.dropped


def _record_counts(messages: list[bytes], sequence: int) -> list[tuple[bytes, int]]:
    """Each message with the number of data records it holds, from the sequence numbers in
    the headers (RFC 7011 §3.1) and ``sequence``, the exporter's count after the last."""
    starts = [_SEQUENCE.unpack_from(message, 8)[0] for message in messages]
    ends = [*starts[1:], sequence]
    return [
        (message, (end - start) % _UINT32)
        for message, start, end in zip(messages, starts, ends, strict=True)
    ]


def _peer_closed(sock: socket.socket) -> bool:
    """Whether a collector's TCP connection was closed or reset: it never sends us data, so
    anything readable is the end of the stream."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
