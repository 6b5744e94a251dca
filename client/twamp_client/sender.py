"""The Session-Sender: packets out on a schedule of absolute deadlines, replies in.

Precision is the point of a measurement tool, so this loop owns its timing instead of trusting an
event loop's timers (asyncio's are 0.5-2 ms late on these machines):

* Deadlines are absolute (``start + k × interval``, or Poisson arrivals), so lateness never
  accumulates into drift over a long run.
* Until shortly before a deadline the loop waits in ``select`` on the test socket (reading
  replies as they come); for the last SPIN_NS it spins on the monotonic clock.
* The T1 in the packet is read from the wall clock immediately before ``sendto`` and written into
  a packet that was prepared in advance; only the encrypted mode must seal after stamping,
  because there the timestamp is inside the encrypted block.
* The T1 of our own arithmetic (round trip, outbound delay, --raw) is the kernel's: with
  SO_TIMESTAMPING the kernel reports, on the socket's error queue, when each packet left the
  stack, which the user-space read precedes by the send path (~8 µs on loopback, more on real
  interfaces).  The report is read whenever the socket is drained, before the replies; without
  one (an old kernel, or a reply that overtook its report) the user-space time stands.
* T4 is the kernel's receive time (SO_TIMESTAMPNS), not the moment this process woke up.
"""

from __future__ import annotations

import dataclasses
import os
import random
import select
import socket
import struct
import time
from collections.abc import Callable

from twamp_common.codes import AUTHENTICATED_TEST_MODES, Mode
from twamp_common.crypto import TestPacketProtection
from twamp_common.errors import ProtocolError
from twamp_common.stats import Reply
from twamp_common.test_packets import ReflectorPacket, SenderPacket
from twamp_common.timestamp import ErrorEstimate, ns_to_ntp, ntp_to_ns
from twamp_common.udp_options import (
    ANCILLARY_SPACE,
    SO_TIMESTAMPING,
    SOF_TIMESTAMPING_TX_SOFTWARE,
    TX_ANCILLARY_SPACE,
    parse_ancillary,
    parse_tx_timestamp,
    tx_timestamp_options,
)

#: Spin, rather than sleep, for this long before each deadline (wake-ups are ~100 µs late here).
SPIN_NS = 500_000
_NTP = struct.Struct("!Q")


def enable_tx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to report when each packet leaves ``sock``; False if it will not.

    Set on a fresh socket, before anything is sent, so that the reports' counter (OPT_ID)
    equals the sequence number.  A refusal (an old kernel) is no error: T1 then stays the
    user-space time, as exact as before.
    """
    for level, option, value in tx_timestamp_options():
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            continue
        return True
    return False


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What to send and where."""

    destination: tuple[str, int] | tuple[str, int, int, int]
    count: int
    interval_ns: int
    poisson: bool
    padding: int
    #: All-zero padding (RFC 4656 §4.1.2 MUST offer it) instead of pseudo-random octets.
    zero_padding: bool
    #: The security mode: decides the packet layout and what is encrypted.
    mode: Mode
    #: Keys of the authenticated and encrypted modes, None otherwise.
    protection: TestPacketProtection | None
    #: Our Error Estimate (16-bit wire value).
    error_estimate: int
    #: Seconds to wait for a reply before calling its packet lost.
    wait: float

    @property
    def authenticated(self) -> bool:
        """Whether packets use the authenticated/encrypted layout (48/112 octet headers)."""
        return bool(self.mode & AUTHENTICATED_TEST_MODES)


@dataclasses.dataclass(slots=True)
class Outcome:
    """What came back."""

    sent: int = 0
    #: Every valid reply, duplicates included, in arrival order.
    replies: list[Reply] = dataclasses.field(default_factory=list)
    #: Whether every reply's Error Estimate said the reflector's clock is synchronised.
    reflector_synchronized: bool = True
    #: Replies that failed to decode, failed their HMAC or echoed a sequence never sent.
    invalid: int = 0
    #: Replies that came after their packet was given up as lost (not counted as replies).
    late: int = 0
    #: Why the run ended early, or None.
    aborted: str | None = None
    #: T1 of each packet sent, by sequence number: the kernel's send time once it reported it,
    #: the user-space time read before ``sendto`` until then (or if it never does).
    send_times: list[int] = dataclasses.field(default_factory=list)


class Sender:
    """Runs one test: send ``plan.count`` packets, collect replies, call back per packet."""

    def __init__(
        self,
        sock: socket.socket,
        plan: Plan,
        *,
        control: socket.socket | None = None,
        on_reply: Callable[[Reply, bool], None] = lambda _reply, _duplicate: None,
        on_lost: Callable[[int], None] = lambda _seq: None,
    ) -> None:
        self.sock = sock
        self.plan = plan
        self.control = control
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.outcome = Outcome()
        self._answered: set[int] = set()
        self._next_lost = 0  # lowest sequence number not yet given up or answered
        self._random = random.Random()  # noqa: S311 - schedule jitter, not cryptography
        # Which send times are the kernel's; None when the socket does not report them.
        try:
            tx_flags = sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING)
        except OSError:
            tx_flags = 0
        self._kernel_sent = (
            bytearray(plan.count) if tx_flags & SOF_TIMESTAMPING_TX_SOFTWARE else None
        )

    def run(self) -> Outcome:
        """Send everything, wait for late replies, and return the outcome."""
        plan = self.plan
        self.sock.setblocking(False)
        # Pseudo-random padding (RFC 4656 §4.1.2), drawn from the OS once per session,
        # independently of the key material, and reused by every packet: none of it per packet.
        # --zero-padding asks for all zeros instead (the MUST-offer option of the same section).
        padding = bytes(plan.padding) if plan.zero_padding else os.urandom(plan.padding)
        template = SenderPacket(0, 0, plan.error_estimate, padding)
        buffer = bytearray(template.pack(plan.authenticated))
        stamp_at = 16 if plan.authenticated else 4
        # In the authenticated mode T1 (octets 16-23) lies outside the encrypted, HMAC-covered
        # first block: seal first, stamp last.  In the encrypted mode it lies inside.
        encrypt_after_stamp = plan.mode == Mode.ENCRYPTED
        deadline = time.monotonic_ns()
        for seq in range(plan.count):
            if not self._wait_until(deadline):
                return self.outcome
            struct.pack_into("!I", buffer, 0, seq)
            packet: bytes | bytearray = buffer
            if plan.mode == Mode.AUTHENTICATED and plan.protection is not None:
                packet = bytearray(plan.protection.seal_sender(bytes(buffer)))
            while time.monotonic_ns() < deadline:
                pass
            t1 = time.time_ns()
            _NTP.pack_into(packet, stamp_at, ns_to_ntp(t1))
            if encrypt_after_stamp:
                assert plan.protection is not None
                packet = plan.protection.seal_sender(bytes(packet))
            try:
                self.sock.sendto(packet, plan.destination)
            except OSError as error:
                self.outcome.aborted = f"cannot send test packets: {error.strerror}"
                return self.outcome
            self.outcome.send_times.append(t1)
            self.outcome.sent += 1
            deadline += self._gap()
        self._wait_until(None)
        return self.outcome

    def _gap(self) -> int:
        if self.plan.poisson:
            return max(1, round(self._random.expovariate(1 / self.plan.interval_ns)))
        return self.plan.interval_ns

    def _wait_until(self, deadline: int | None) -> bool:
        """Read replies until SPIN_NS before ``deadline`` (None: the final wait for replies).

        False when the run must end (the control connection dropped).
        """
        readers = [self.sock] if self.control is None else [self.sock, self.control]
        final_end = time.monotonic_ns() + int(self.plan.wait * 1e9) if deadline is None else 0
        while True:
            now = time.monotonic_ns()
            self._give_up_lost(now)
            if deadline is None:
                if len(self._answered) == self.outcome.sent or now >= final_end:
                    self._give_up_lost(None)
                    return True
                timeout = (final_end - now) / 1e9
            else:
                timeout = (deadline - SPIN_NS - now) / 1e9
                if timeout <= 0:
                    # Intervals shorter than SPIN_NS never wait in select: read what has come
                    # (the socket does not block) so that replies are neither given up nor lost.
                    self._drain()
                    return True
            ready, _, _ = select.select(readers, [], [], timeout)
            if self.sock in ready:
                self._drain()
            if self.control is not None and self.control in ready and not self._control_alive():
                self.outcome.aborted = "the server closed the control connection during the test"
                self._give_up_lost(None)
                return False

    def _control_alive(self) -> bool:
        assert self.control is not None
        try:
            return bool(self.control.recv(4096, socket.MSG_PEEK))
        except OSError:
            return False

    def _give_up_lost(self, now: int | None) -> None:
        """Report, in order, packets whose reply is overdue (all outstanding when ``now`` is
        None)."""
        send_times = self.outcome.send_times
        limit = None if now is None else time.time_ns() - int(self.plan.wait * 1e9)
        while self._next_lost < len(send_times):
            seq = self._next_lost
            if seq not in self._answered:
                if limit is not None and send_times[seq] > limit:
                    return
                self.on_lost(seq)
            self._next_lost += 1

    def _read_send_times(self) -> None:
        """Take the kernel's send times off the error queue (which must be emptied anyway: while
        it holds anything, ``select`` reports the socket readable)."""
        send_times = self.outcome.send_times
        kernel_sent = self._kernel_sent
        while True:
            try:
                _data, ancdata, _flags, _address = self.sock.recvmsg(
                    0, TX_ANCILLARY_SPACE, socket.MSG_ERRQUEUE
                )
            except OSError:  # EAGAIN: the queue is empty
                return
            stamp = parse_tx_timestamp(ancdata)
            if stamp is None or kernel_sent is None:
                continue
            seq, sent_ns = stamp
            # The counter is the sequence number: nothing else is sent on the test socket.
            if seq < len(send_times) and not kernel_sent[seq]:
                send_times[seq] = sent_ns
                kernel_sent[seq] = 1

    def _drain(self) -> None:
        plan = self.plan
        self._read_send_times()
        while True:
            try:
                data, ancdata, _flags, _address = self.sock.recvmsg(65535, ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error (port unreachable) queued on the socket: nothing was reflected.
                continue
            received_ns, _ttl = parse_ancillary(ancdata)
            t4 = received_ns if received_ns is not None else time.time_ns()
            try:
                if plan.protection is not None:
                    data = plan.protection.open_reflector(data)
                packet = ReflectorPacket.unpack(data, plan.authenticated)
            except ProtocolError:
                self.outcome.invalid += 1
                continue
            self._record(packet, t4)

    def _record(self, packet: ReflectorPacket, t4: int) -> None:
        seq = packet.sender_seq
        if seq >= len(self.outcome.send_times):
            self.outcome.invalid += 1
            return
        if seq < self._next_lost and seq not in self._answered:
            self.outcome.late += 1
            return
        if self._kernel_sent is not None and not self._kernel_sent[seq]:
            self._read_send_times()  # the reply was read before its send time was reported
        if not ErrorEstimate.from_wire(packet.error_estimate).synchronized:
            self.outcome.reflector_synchronized = False
        reply = Reply(
            sender_seq=seq,
            reflector_seq=packet.seq,
            t1=self.outcome.send_times[seq],
            t2=ntp_to_ns(packet.receive_timestamp),
            t3=ntp_to_ns(packet.timestamp),
            t4=t4,
            sender_ttl=packet.sender_ttl,
            t1_packet=ntp_to_ns(packet.sender_timestamp),
        )
        duplicate = seq in self._answered
        self._answered.add(seq)
        self.outcome.replies.append(reply)
        self.on_reply(reply, duplicate)
