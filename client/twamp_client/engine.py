"""The engine: many measurements at once in one thread, over one epoll.

Each measurement is a :class:`_Run`: a TWAMP-Control dialogue over a non-blocking TCP socket
(none for TWAMP Light and STAMP), then a :class:`~twamp_common.test_session.SessionSender` fed
from its UDP socket.  The engine keeps one heap of the runs' next deadlines and one timerfd
armed at the nearest, so that it sleeps in ``epoll_wait`` until a packet is due or a datagram
arrives: CPU per packet stays flat from one session to hundreds, and no wake-up is rounded to
milliseconds.

Timing, where precision is the point:

* Deadlines are absolute (the schedule's), so lateness never accumulates into drift.
* With ``precise`` (one measurement: the command line's single run) the engine wakes SPIN_NS
  early and spins on the monotonic clock to the deadline, for sub-µs lateness; with many
  measurements it sleeps to the deadline itself (tens of µs late), or polls when it is closer
  than BUSY_POLL_NS, and sends every packet that is due.
* T1 is read from the wall clock immediately before ``sendto``, into a packet prepared in
  advance; the kernel's send time (SO_TIMESTAMPING) then replaces it in our own arithmetic.
  T4 is the kernel's receive time (SO_TIMESTAMPNS).
* Sends come first, since only they can be late: what is due is sent between any two events
  the loop handles, replies near a deadline wait in their sockets until it has passed
  (READS_WAIT_NS), and finished runs' results are worked out one per pass of the loop.

:meth:`Engine.submit` and :meth:`Engine.cancel` may be called from any thread;
:meth:`Engine.stop_sending` also from a signal handler.

A cancelled run ends at once and delivers nothing: its ``on_done`` is never called.  Whoever
cancels has said the result is of no use (a reload changed the target's settings), and a
result cut short by a cancel would look like a failure of the path in every report.  Its
sockets close, and Stop-Sessions goes first where a TWAMP-Control session is running, so the
reflector frees the session at once rather than at its timeout.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import heapq
import itertools
import os
import random
import select
import socket
import time
from collections.abc import Callable, Generator

from twamp_common import traffic
from twamp_common.clock import ClockState, read_clock_state
from twamp_common.codes import AUTHENTICATED_TEST_MODES, Mode, mode_name
from twamp_common.control import NEED_DATA, ClientControl, ConnectionClosed
from twamp_common.crypto import TestPacketProtection
from twamp_common.errors import AuthenticationError, ProtocolError
from twamp_common.schedule import Periodic, Poisson, Schedule
from twamp_common.sender_codec import check_stamp_padding, stamp_header_size
from twamp_common.stamp_sender import StampSetup, parse_tlv_choices, sender_tlvs
from twamp_common.test_packets import SENDER_HEADER_SIZE
from twamp_common.test_session import Answered, Outgoing, SenderPlan, SessionSender
from twamp_common.udp_options import (
    ANCILLARY_SPACE,
    TRAFFIC_CLASS_ANCILLARY_SPACE,
    TX_ANCILLARY_SPACE,
    parse_ancillary,
    parse_icmp_error,
    parse_tx_timestamp,
    received_traffic_class,
    socket_drops,
)

from .control_session import (
    Await,
    ClientError,
    SessionRequest,
    Started,
    Step,
    dialogue,
    stop_sessions,
)
from .measurement import Header, Measurement, Observer, Target, Test, stamp_mode
from .sockets import Address, open_test_socket, resolve, size_receive_buffer
from .timer import Timer

#: In ``precise`` mode, spin rather than sleep for this long before each deadline (wake-ups are
#: ~100 µs late here).
SPIN_NS = 500_000
#: Without ``precise``, poll rather than sleep when the nearest deadline is this close: a
#: sleep on the timer costs about 20 µs of CPU here (arming it, waking up) and wakes 10 to
#: 25 µs late, so up to this gap a busy poll costs less and is on time.  With hundreds of
#: sessions most gaps between deadlines are this short.
BUSY_POLL_NS = 20_000
#: When a deadline is this close, the loop sleeps until it without waking for replies or
#: control messages, and reads what came once it is up: each wake-up costs about 20 µs of CPU
#: here, and with hundreds of sessions a deadline is always this close, so a reply's own
#: wake-up would double the wake-ups per packet.  Nothing is lost by the wait: T4 is the
#: kernel's, and a packet is given up only after the replies queued for it are read.
READS_WAIT_NS = 1_000_000
#: Extra seconds the reflector keeps reflecting after Stop-Sessions, beyond the wait.
STOP_MARGIN = 1.0
_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_ERRQUEUE = socket.MSG_ERRQUEUE


Done = Callable[[Measurement], None]
_QUIET = Observer()


def schedule_for(
    test: Test, mode: Mode, ip_version: int, stamp: StampSetup | None = None
) -> Schedule:
    """The send schedule a Test asks for in ``mode`` (or the STAMP session ``stamp``) over
    IPv``ip_version``; ClientError when it cannot be sent (a size below the header, a bandwidth
    too low, padding STAMP cannot carry)."""
    authenticated = bool(mode & AUTHENTICATED_TEST_MODES)
    try:
        header = None if stamp is None else stamp_header_size(stamp)
        if test.traffic is not None:
            schedule: Schedule = traffic.schedule(
                test.traffic,
                ip_version=ip_version,
                authenticated=authenticated,
                stamp_header=header,
            )
        else:
            padding = test.sender_padding(mode) if header is None else test.stamp_padding(header)
            interval_ns = max(1, round(test.interval_ms * 1e6))
            if test.schedule == "poisson":
                schedule = Poisson(interval_ns, padding, random.Random())  # noqa: S311 - not cryptography
            else:
                schedule = Periodic(interval_ns, padding)
        if header is not None:
            check_stamp_padding(schedule.paddings)
    except ValueError as error:  # ModelError is one
        raise ClientError(str(error)) from None
    return schedule


class Engine:
    """Runs measurements concurrently and hands each finished :class:`Measurement` to its
    callback."""

    def __init__(self, *, precise: bool = False) -> None:
        self.precise = precise
        self._epoll = select.epoll()
        #: The timer and the wake-up pipe alone: what the loop sleeps on when a deadline is
        #: near (see READS_WAIT_NS).
        self._urgent = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        #: Descriptors registered since the last poll: the poll's events for a number one of
        #: them reuses (a run's socket closed, another's opened, within one batch) are the old
        #: socket's, and are skipped.
        self._fresh: set[int] = set()
        self._heap: list[tuple[int, int, _Run]] = []
        self._order = itertools.count()
        self._runs: set[_Run] = set()
        self._inbox: collections.deque[_Run] = collections.deque()
        #: The runs admitted and not done, by the id submit returned (for cancel).
        self._by_id: dict[int, _Run] = {}
        self._ids = itertools.count(1)
        self._cancels: collections.deque[int] = collections.deque()
        #: Finished runs whose result is still to be worked out and delivered, one a pass of
        #: the loop.  Summarising a run of hundreds of packets takes a few hundred µs, and runs
        #: that started together finish together: each summarised as it finished, they would
        #: hold up every other run's sends for as long as all of them take.
        self._finished_runs: collections.deque[_Run] = collections.deque()
        self._timer = Timer()
        self._register(self._timer.fileno(), select.EPOLLIN, lambda _mask: self._timer.fired())
        self._urgent.register(self._timer.fileno(), select.EPOLLIN)
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._register(self._wake_read, select.EPOLLIN, self._woken)
        self._urgent.register(self._wake_read, select.EPOLLIN)
        self._stop_sending = False
        self._forever = False

    # What callers use ------------------------------------------------------------------

    def submit(
        self,
        target: Target,
        test: Test,
        on_done: Done,
        observer: Observer | None = None,
        *,
        delay: float = 0.0,
    ) -> int:
        """Measure ``target`` as ``test`` says, ``delay`` seconds from now; ``on_done`` gets the
        result (on the engine's thread).  The run's id, for :meth:`cancel`."""
        start_at = time.monotonic_ns() + int(delay * 1e9)
        run_id = next(self._ids)
        self._inbox.append(_Run(self, run_id, target, test, on_done, observer or _QUIET, start_at))
        self._wake()
        return run_id

    def cancel(self, run_id: int) -> None:
        """End the run ``run_id`` now, without a result (see the module's docstring); nothing
        happens if it is over already."""
        self._cancels.append(run_id)
        self._wake()

    def stop_sending(self) -> None:
        """Every run sends nothing more and waits for its packets in flight (Ctrl-C)."""
        self._stop_sending = True
        self._wake()

    def run(self, *, forever: bool = False) -> None:
        """Run until every submitted measurement is done; with ``forever``, until
        :meth:`shutdown` (submissions from other threads keep it busy meanwhile)."""
        self._forever = forever
        self._admit()
        heap, clock, finished = self._heap, time.monotonic_ns, self._finished_runs
        while self._forever or self._runs or self._inbox or finished:
            self._fire_due()
            if finished:
                finished.popleft().deliver()
            if not (self._forever or self._runs or self._inbox or finished):
                break
            timeout = 0 if finished else self._arm()
            if timeout and heap and heap[0][0] - clock() <= READS_WAIT_NS:
                self._urgent.poll()
                timeout = 0
            fresh = self._fresh
            fresh.clear()
            for fd, mask in self._epoll.poll(timeout):
                handler = self._handlers.get(fd)
                if handler is not None and fd not in fresh:
                    handler(mask)
                # Sends come before reads: a reply keeps its kernel T4 however long it waits,
                # a packet sent late is late for good, and one poll may report hundreds of
                # sockets ready.  (A stale heap top only costs _fire_due a pop.)
                if heap and heap[0][0] <= clock():
                    self._fire_due()

    def shutdown(self) -> None:
        """End :meth:`run`: nothing more is sent, replies in flight are waited for, then it
        returns.  Safe from any thread and from a signal handler."""
        self._forever = False
        self.stop_sending()

    def close(self) -> None:
        for run in list(self._runs):
            run.finish("the engine was closed")
        while self._finished_runs:
            self._finished_runs.popleft().deliver()
        self._timer.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._epoll.close()
        self._urgent.close()

    # The loop's parts ------------------------------------------------------------------

    def _wake(self) -> None:
        # A full pipe means the loop is awake already.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"!")

    def _woken(self, _mask: int) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        self._admit()

    def _admit(self) -> None:
        """Take the submitted runs in, then apply the cancels.  The cancels are taken first: a
        run is in the inbox before its id can be cancelled, so each one's run is taken in too."""
        cancels = [self._cancels.popleft() for _ in range(len(self._cancels))]
        while self._inbox:
            run = self._inbox.popleft()
            self._runs.add(run)
            self._by_id[run.id] = run
            if run.start_at > time.monotonic_ns():
                self._schedule(run, run.start_at)
            else:
                run.begin()
        for run_id in cancels:
            cancelled = self._by_id.get(run_id)
            if cancelled is not None:
                cancelled.cancel()
        if self._stop_sending:
            for run in list(self._runs):
                run.stop_sending()

    def _fire_due(self) -> None:
        """Call every run whose deadline has come (in ``precise`` mode: is within the spin)."""
        heap = self._heap
        lead = SPIN_NS if self.precise else 0
        fired: set[_Run] = set()
        while heap:
            at, _, run = heap[0]
            if run.wake_at != at:
                heapq.heappop(heap)  # superseded by a later entry, or the run is over
                continue
            now = time.monotonic_ns()
            # Each run at most once a pass: between two of its sends, the sockets are read
            # (intervals shorter than the spin would otherwise never reach epoll).
            if at > now + lead or run in fired:
                return
            fired.add(run)
            heapq.heappop(heap)
            run.wake_at = None
            if lead and not run.sends_at(at):
                while now < at:  # a set-up's or a give-up's deadline: spun to here
                    now = time.monotonic_ns()
                run.on_timer(now)
            else:  # a send's: spun to in on_timer, just before T1 is read
                run.on_timer(now, lead)

    def _arm(self) -> float:
        """Arm the timer at the nearest deadline; the epoll timeout to wait with (0 when a
        deadline has come already: re-arming a timer per packet costs more than a poll).

        A timer that fired and is not armed again is read before waiting without a timeout,
        or it would keep epoll returning at once; one armed again needs no read.  Without
        ``precise``, a deadline within BUSY_POLL_NS is waited for by polling.
        """
        heap = self._heap
        while heap and heap[0][2].wake_at != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            self._timer.acknowledge()
            return -1
        if self.precise:
            at = heap[0][0] - SPIN_NS
            if at <= time.monotonic_ns():
                return 0
        else:
            at = heap[0][0]
            if at <= time.monotonic_ns() + BUSY_POLL_NS:
                return 0
        self._timer.arm(at)
        return -1

    def _schedule(self, run: _Run, at: int | None) -> None:
        if at == run.wake_at:
            return
        run.wake_at = at
        if at is not None:
            heapq.heappush(self._heap, (at, next(self._order), run))

    def _register(self, fd: int, mask: int, handler: Callable[[int], None]) -> None:
        self._epoll.register(fd, mask)
        self._handlers[fd] = handler
        self._fresh.add(fd)

    def _modify(self, fd: int, mask: int, handler: Callable[[int], None]) -> None:
        self._epoll.modify(fd, mask)
        self._handlers[fd] = handler

    def _unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _finished(self, run: _Run) -> None:
        self._runs.discard(run)
        self._by_id.pop(run.id, None)
        run.wake_at = None


class _Run:
    """One measurement from name resolution to its result."""

    def __init__(
        self,
        engine: Engine,
        run_id: int,
        target: Target,
        test: Test,
        on_done: Done,
        observer: Observer,
        start_at: int,
    ) -> None:
        self.engine = engine
        self.id = run_id
        self.target = target
        self.test = test
        self.on_done = on_done
        self.observer = observer
        #: Whether the observer does anything with each reply (the reports' per-packet lines):
        #: when it does not, neither the call nor the Reply it takes is made.
        self.observes_replies = type(observer).answered is not Observer.answered
        self.wake_at: int | None = None
        self.done = False
        #: Why it ended, once it has: what :meth:`deliver` reports.
        self.error: str | None = None
        self.hint: str | None = None
        self.address: Address | None = None
        self.where = f"{target.host} port {target.effective_port}"
        self.control: ClientControl | None = None
        self.control_sock: socket.socket | None = None
        self.test_sock: socket.socket | None = None
        self.connecting = False
        self.awaiting = ""
        self.steps: Generator[Step, object, Started] | None = None
        #: The Await the dialogue is blocked at.
        self.step: Await | None = None
        self.outbox = bytearray()
        self.setup_deadline = 0
        self.sender: SessionSender | None = None
        #: The sender's next packet, made ready once the one before it has left.
        self.prepared: Outgoing | None = None
        self.schedule: Schedule | None = None
        self.header: Header | None = None
        self.destination: Address | None = None
        #: Whether the DSCP of each reply is read (STAMP's Class of Service TLV), and the
        #: recvmsg room for ancillary data that takes.
        self.receive_dscp = False
        self.ancillary_space = ANCILLARY_SPACE
        self.stop_requested = False
        #: Monotonic time to begin at; None once begun.
        self.start_at = start_at
        self.begun = False
        #: This host's clock and the wall-clock start, read when the run begins.
        self.clock: ClockState | None = None
        self.started = datetime.datetime.fromtimestamp(0, datetime.UTC)

    # Set-up ----------------------------------------------------------------------------

    def begin(self) -> None:
        self.begun = True
        self.clock = read_clock_state()
        self.started = datetime.datetime.now(datetime.UTC)
        try:
            family, self.address = resolve(self.target, self.test)
            self.receive_dscp = self.target.stamp and "class-of-service" in self.test.stamp_tlvs
            self.test_sock = open_test_socket(self.test, family, receive_dscp=self.receive_dscp)
            if self.receive_dscp:
                self.ancillary_space = TRAFFIC_CLASS_ANCILLARY_SPACE
            self.engine._register(self.test_sock.fileno(), _IN, self._on_test_socket)
            if self.target.stamp:
                self._start_stamp()
            elif self.target.light:
                self._start_test(Mode.UNAUTHENTICATED, self.address, None, "TWAMP Light")
            else:
                self._connect(family)
        except ClientError as error:
            self.finish(str(error), error.hint)

    def _start_stamp(self) -> None:
        """A STAMP session: its SSID, TLVs and key, then straight to the test.

        The key signs the authenticated layout and, with TLVs, seals an HMAC TLV; in the
        unauthenticated mode it is used only when the HMAC TLV is asked for.
        """
        assert self.address is not None and self.test_sock is not None
        test = self.test
        ip_version = 6 if self.test_sock.family == socket.AF_INET6 else 4
        try:
            names = parse_tlv_choices(test.stamp_tlvs)
            keyed = test.secret is not None
            mode = stamp_mode(test.mode, keyed=keyed, tlvs=names) or Mode.UNAUTHENTICATED
            authenticated = mode == Mode.AUTHENTICATED
            setup = StampSetup(
                ssid=random.randint(1, 0xFFFF) if test.ssid is None else test.ssid,  # noqa: S311
                tlvs=sender_tlvs(names, dscp=test.dscp),
                authenticated=authenticated,
                key=test.secret if authenticated or "hmac" in names else None,
            )
        except ValueError as error:  # a Test built by a library caller, not by the options
            raise ClientError(f"cannot measure STAMP: {error}") from None
        self.schedule = schedule_for(test, mode, ip_version, setup)
        name = "STAMP authenticated" if authenticated else "STAMP"
        self._start_test(mode, self.address, None, name, setup)

    def _connect(self, family: int) -> None:
        assert self.address is not None
        sock = self.control_sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self.test.source is not None:
            try:
                sock.bind((self.test.source[0], 0))
            except OSError as error:
                raise ClientError(
                    f"cannot bind the control connection to {self.test.source[0]}: {error.strerror}"
                ) from None
        result = sock.connect_ex(self.address)
        if result not in (0, errno.EINPROGRESS):
            raise self._connect_error(result)
        self.connecting = True
        self.setup_deadline = time.monotonic_ns() + int(self.test.connect_timeout * 1e9)
        self.engine._register(sock.fileno(), _OUT, self._on_control)
        self.engine._schedule(self, self.setup_deadline)

    def _connect_error(self, code: int) -> ClientError:
        if code == errno.ECONNREFUSED:
            return ClientError(
                f"connection refused by {self.where}",
                "is twamp-server running there, and TCP port"
                f" {self.target.effective_port} open in its firewall?",
            )
        return ClientError(f"cannot connect to {self.where}: {os.strerror(code)}")

    def _on_control(self, mask: int) -> None:
        try:
            if self.connecting:
                self._connected()
            elif self.sender is not None:
                self._watch_control()
                return
            if mask & _OUT and self.outbox:
                self._flush()
            if mask & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP):
                self._read_control()
        except ClientError as error:
            self.finish(str(error), error.hint)

    def _connected(self) -> None:
        assert self.control_sock is not None
        code = self.control_sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise self._connect_error(code)
        self.connecting = False
        self.engine._modify(self.control_sock.fileno(), _IN, self._on_control)
        self.control = ClientControl(max_count=self.test.max_count)
        test_sock = self.test_sock
        assert test_sock is not None
        test = self.test
        self.steps = dialogue(
            self.control,
            mode=test.mode,
            key_id=test.key_id,
            secret=test.secret,
            local=self.control_sock.getsockname()[0],
            remote=self.control_sock.getpeername()[0],
            request=SessionRequest(
                sender_port=test_sock.getsockname()[1],
                receiver_port=test.reflector_port,
                padding=self._choose_schedule,
                dscp=test.dscp,
                timeout=test.wait + STOP_MARGIN,
            ),
            now_ns=time.time_ns,
        )
        self._advance()

    def _choose_schedule(self, mode: Mode) -> int:
        """The session's schedule, now that the mode is known; the padding to request (the
        largest any packet carries)."""
        assert self.test_sock is not None
        ip_version = 6 if self.test_sock.family == socket.AF_INET6 else 4
        self.schedule = schedule_for(self.test, mode, ip_version)
        return self.schedule.max_padding

    def _read_control(self) -> None:
        assert self.control_sock is not None and self.control is not None
        try:
            data = self.control_sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as error:
            raise ClientError(f"the control connection failed: {error.strerror}") from None
        self.control.receive_data(data)
        self._advance()

    def _advance(self) -> None:
        """Run the dialogue until it waits for a message that has not come yet."""
        assert self.steps is not None
        try:
            step = self.step if self.step is not None else self.steps.send(None)
            while True:
                if isinstance(step, bytes):
                    self._write(step)
                    step = self.steps.send(None)
                    continue
                self.step, self.awaiting = step, step.name
                event = self._next_event()
                if event is NEED_DATA:
                    return
                self.step = None
                step = self.steps.send(event)
        except StopIteration as done:
            started: Started = done.value
            assert self.address is not None and self.control is not None
            destination = (self.address[0], started.port, *self.address[2:])
            self._start_test(
                started.mode,
                destination,
                self.control.test_protection(started.sid),
                mode_name(started.mode),
            )

    def _next_event(self) -> object:
        assert self.control is not None
        try:
            event = self.control.next_event()
        except AuthenticationError as error:
            raise ClientError(
                f"the server's {error.message} failed its HMAC", "the shared secret differs"
            ) from None
        except ProtocolError as error:
            raise ClientError(f"protocol error from the server: {error}") from None
        if isinstance(event, ConnectionClosed):
            raise ClientError(
                f"the server closed the connection instead of sending {self.awaiting}"
            )
        return event

    def _write(self, data: bytes) -> None:
        self.outbox += data
        self._flush()

    def _flush(self) -> None:
        assert self.control_sock is not None
        try:
            sent = self.control_sock.send(self.outbox)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise ClientError(f"the control connection failed: {error.strerror}") from None
        del self.outbox[:sent]
        mask = _IN | _OUT if self.outbox else _IN
        self.engine._modify(self.control_sock.fileno(), mask, self._on_control)

    # The test ----------------------------------------------------------------------------

    def _start_test(
        self,
        mode: Mode,
        destination: Address,
        protection: TestPacketProtection | None,
        mode_text: str,
        stamp: StampSetup | None = None,
    ) -> None:
        test = self.test
        if self.schedule is None:  # TWAMP Light: no set-up has chosen it
            self._choose_schedule(mode)
        schedule = self.schedule
        assert self.address is not None and schedule is not None and self.clock is not None
        padding = schedule.max_padding
        self.destination = destination
        plan = SenderPlan(
            count=test.count,
            schedule=schedule,
            mode=mode,
            protection=protection,
            padding=bytes(padding) if test.zero_padding else os.urandom(padding),
            error_estimate=self.clock.error_estimate().to_wire(),
            wait_ns=int(test.wait * 1e9),
            reflector=(destination[0], destination[1]),
            stamp=stamp,
        )
        header_size = (
            SENDER_HEADER_SIZE[bool(mode & AUTHENTICATED_TEST_MODES)]
            if stamp is None
            else stamp_header_size(stamp)
        )
        self.header = Header(
            host=self.target.host,
            address=self.address[0],
            port=self.target.effective_port,
            mode=mode_text,
            count=test.count,
            interval_ms=test.interval_ms if test.traffic is None else schedule.gap(0) / 1e6,
            packet_sizes=tuple(header_size + padding for padding in schedule.paddings),
            started=self.started,
            test_port=destination[1],
            sender_port=self.test_sock.getsockname()[1] if self.test_sock else 0,
            local_address=self._local_address(destination),
            ssid=None if stamp is None else stamp.ssid,
        )
        if self.test_sock is not None:
            size_receive_buffer(
                self.test_sock, self.header.interval_ms * 1e6, max(self.header.packet_sizes)
            )
        now = time.monotonic_ns()
        self.sender = SessionSender(plan, now=now)
        if self.stop_requested:
            self.sender.stop()
        self.observer.started(self.header)
        self.engine._schedule(self, now)

    def _local_address(self, destination: Address) -> str:
        """The address test packets leave from: the control connection's, else the test
        socket's own, else the one the routing table picks for ``destination``."""
        if self.control_sock is not None:
            return str(self.control_sock.getsockname()[0])
        assert self.test_sock is not None
        bound = str(self.test_sock.getsockname()[0])
        if bound not in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            return bound
        with socket.socket(self.test_sock.family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(destination)  # a UDP connect sends nothing: it asks the route
            except OSError:  # no route yet: each send then fails and is counted with its reason
                return bound
            return str(probe.getsockname()[0])

    def sends_at(self, at: int) -> bool:
        """Whether the deadline ``at`` is a packet's send."""
        return self.sender is not None and self.sender.next_send_at() == at

    def on_timer(self, now: int, lead: int = 0) -> None:
        """A deadline has come: send what is due, give up what has waited too long.  With
        ``lead`` (precise mode, a send's deadline) the packet may be that far ahead still: it
        is sent once a spin has reached its time."""
        sender = self.sender
        if not self.begun:
            self.begin()
            return
        if sender is None:
            self._set_up_too_slow()
            return
        sock, destination = self.test_sock, self.destination
        assert sock is not None and destination is not None
        sent = 0
        # The hot path first, names bound once: the packet was prepared after the one before
        # it left, so that between the deadline (the spin's end, in precise mode) and sendto
        # nothing is left but reading T1.
        time_ns, sendto, clock = time.time_ns, sock.sendto, time.monotonic_ns
        while (due := sender.next_send_at()) is not None and due <= now + lead:
            packet = self.prepared or sender.outgoing()
            self.prepared = None
            assert packet is not None
            if lead:  # one spin a call: later packets go now only if they are due already
                while (now := clock()) < due:
                    pass
                lead = 0
            t1 = time_ns()
            wire = packet.wire(t1)
            try:
                sendto(wire, destination)
            except OSError as error:
                sender.send_failed(error.strerror or type(error).__name__, now)
                continue
            sender.sent(t1, now)
            sent += 1
        # On most paths the kernel has stamped the packet before sendto returned: reading the
        # reports now saves the wake-up that their arrival on the error queue would cost.
        if sent:
            self._read_error_queue(sent)
        if sender.overdue(now):
            # Replies queued while this loop was busy came in time: read them before giving up.
            self._read_error_queue()
            while self._read_reply(sender, sock):
                pass
        for lost in sender.handle_timer(now):
            self.observer.lost(lost)
        if sent:
            self.prepared = sender.outgoing()
        self._after_events()

    def _set_up_too_slow(self) -> None:
        """The set-up's deadline has come before the test began."""
        if self.connecting:
            self.finish(
                f"no answer from {self.where} within {self.test.connect_timeout:g} s",
                f"a firewall may be dropping TCP port {self.target.effective_port}",
            )
        else:
            self.finish(
                f"the server sent no {self.awaiting} within"
                f" {self.test.connect_timeout:g} s of connecting"
            )

    def _after_events(self) -> None:
        sender = self.sender
        assert sender is not None
        deadline = sender.next_deadline()
        if deadline is None:  # finished
            self.finish(None)
        else:  # after most replies it has not moved, and nothing is pushed
            self.engine._schedule(self, deadline)

    def _on_test_socket(self, mask: int) -> None:
        """One datagram per readiness report: epoll is level-triggered, so the next is reported
        at once, and no read ends in EAGAIN (an exception and a system call per wake-up)."""
        sender, sock = self.sender, self.test_sock
        if sender is None or sock is None:
            return
        if mask & select.EPOLLERR:
            self._read_error_queue()
        if mask & select.EPOLLIN:
            self._read_reply(sender, sock)
        self._after_events()

    def _read_reply(self, sender: SessionSender, sock: socket.socket) -> bool:
        """Read one datagram off the test socket; False when none was there."""
        try:
            data, ancdata, _flags, source = sock.recvmsg(65535, self.ancillary_space)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as error:
            # An ICMP error reported on the socket itself: nothing was reflected.
            sender.handle_icmp_error(error.strerror or type(error).__name__)
            return True
        received_ns, _ttl = parse_ancillary(ancdata)
        t4 = received_ns if received_ns is not None else time.time_ns()
        tos = received_traffic_class(ancdata) if self.receive_dscp else None
        event = sender.handle_reply(data, t4=t4, source=source[:2], traffic_class=tos)
        if self.observes_replies and type(event) is Answered:
            self.observer.answered(event.reply, event.duplicate)
        return True

    def _read_error_queue(self, most: int = -1) -> None:
        """Take the kernel's send times and ICMP errors off the error queue (which must be
        emptied anyway: while it holds anything, epoll reports the socket readable); ``most``
        reports at the most, when that many are expected."""
        sender, sock = self.sender, self.test_sock
        assert sender is not None and sock is not None
        recvmsg = sock.recvmsg
        while most:
            most -= 1
            try:
                _data, ancdata, _flags, _address = recvmsg(0, TX_ANCILLARY_SPACE, _ERRQUEUE)
            except OSError:  # EAGAIN: the queue is empty
                return
            stamp = parse_tx_timestamp(ancdata)
            if stamp is not None:
                sender.handle_send_time(*stamp)
            elif (icmp := parse_icmp_error(ancdata)) is not None:
                sender.handle_icmp_error(icmp)

    def _watch_control(self) -> None:
        """During the test the server has nothing to say: data is read and dropped (so that it
        cannot keep the socket readable), and the end of the connection ends the run."""
        assert self.control_sock is not None and self.sender is not None
        try:
            data = self.control_sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            for lost in self.sender.give_up():
                self.observer.lost(lost)
            self.finish("the server closed the control connection during the test")

    def stop_sending(self) -> None:
        self.stop_requested = True
        if self.sender is not None:
            self.sender.stop()
            self._after_events()
        elif not self.done:
            self.finish("interrupted before the test started")

    # The end -----------------------------------------------------------------------------

    def finish(self, error: str | None, hint: str | None = None) -> None:
        """End the run: its sockets close now, and the engine's loop delivers its result soon
        after."""
        if self.done:
            return
        self._close(stop=error is None)
        self.error, self.hint = error, hint
        self.engine._finished_runs.append(self)

    def deliver(self) -> None:
        """Hand the finished run's :class:`Measurement` to its callback."""
        if self.sender is None or self.header is None:
            result = Measurement.failed(
                self.target, self.test, self.error or "no result", self.hint
            )
        else:
            result = Measurement.of(
                self.target,
                self.test,
                self.header,
                self.sender.outcome,
                sender_synchronized=self.clock is not None and self.clock.synchronized,
                error=self.error,
            )
        self.on_done(result)

    def cancel(self) -> None:
        """End now and deliver nothing: Stop-Sessions if the test has started (the set-up's
        messages have no stop: closing the connection ends them), then the sockets."""
        if not self.done:
            self._close(stop=self.sender is not None)

    def _close(self, *, stop: bool) -> None:
        """Done: ``stop`` sends Stop-Sessions first (on a control connection), then every socket
        is closed and the engine forgets the run."""
        self.done = True
        engine = self.engine
        if self.control_sock is not None:
            if stop and self.control is not None:
                # If this fails, the reflector's Timeout ends the session anyway.
                with contextlib.suppress(OSError):
                    self.control_sock.send(stop_sessions(self.control))
            engine._unregister(self.control_sock.fileno())
            self.control_sock.close()
        if self.test_sock is not None:
            if self.sender is not None:
                self.sender.outcome.host_dropped = socket_drops(self.test_sock)
            engine._unregister(self.test_sock.fileno())
            self.test_sock.close()
        engine._finished(self)
