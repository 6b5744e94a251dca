"""What the benchmarks share: a twamp-server process, /proc readings, a paced UDP load
generator, and the result rows (figure, baseline, ratio, goal, PASS/MISS).

Machines are shared and noisy, so every benchmark measures its own baseline in the same run and
reports ratios; the only absolute goals are the ones the project set (rates, sizes, times), and
they are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from support import ControlClient, ServerProcess, free_port  # noqa: E402
from twamp_common.test_packets import SenderPacket  # noqa: E402
from twamp_common.udp_options import grow_buffers  # noqa: E402

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
BUFFER = 8 * 1024 * 1024


# -- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure against its baseline and its goal."""

    bench: str
    name: str
    figure: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    #: True PASS, False MISS, None: nothing to judge (informational or not measured).
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.figure is None or not self.baseline:
            return None
        return self.figure / self.baseline

    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "-"}[self.passed]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: Sequence[Row]) -> str:
    header = ("benchmark", "figure", "value", "baseline", "ratio", "goal", "result")
    lines = [header]
    for row in rows:
        base = f"{fmt(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline_name else ""
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        value = fmt(row.figure, row.unit) if row.figure is not None else (row.note or "n/a")
        lines.append((row.bench, row.name, value, base, ratio, row.goal, row.verdict()))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [
        f"- {row.bench} / {row.name}: {row.note}"
        for row in rows
        if row.note and row.figure is not None
    ]
    return "\n".join(out + (["", *notes] if notes else []))


def emit(rows: Sequence[Row]) -> None:
    """Print the table; with BENCH_RESULTS set, also append the rows there as JSON lines."""
    print(table(rows), flush=True)
    target = os.environ.get("BENCH_RESULTS")
    if target:
        with open(target, "a") as out:
            for row in rows:
                out.write(json.dumps(asdict(row)) + "\n")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- processes -----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first: index 0 is field 3)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _ticks_ns(fields: list[str]) -> int:
    return sum(int(field) for field in fields) * 1_000_000_000 // CLOCK_TICK


def cpu_ns(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads), in nanoseconds (clock-tick resolution)."""
    return _ticks_ns(_stat(pid)[11:13])


def tree_cpu_ns(pid: int) -> int:
    """CPU time of ``pid`` and every process it started, in nanoseconds.

    A forking server (twampd: a process per control connection, and one per test session under
    it) spends its CPU in descendants that ``pid``'s own times leave out.  Each process counts
    with its reaped children's times (cutime + cstime), so one that ends between two readings
    still counts once it is waited for.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):  # ended since the scan
            total += _ticks_ns(_stat(current)[11:15])
        todo.extend(children.get(current, ()))
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pin(pid: int, cpu: int) -> None:
    """Keep every thread of ``pid`` on one CPU (when the machine has more than one).

    sched_setaffinity applies to one thread: twamp-server's reflector thread exists by READY=1
    and would otherwise roam onto the load generator's CPU.
    """
    if not (os.cpu_count() and os.cpu_count() > 1):  # type: ignore[operator]
        return
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    for tid in [int(entry.name) for entry in tasks.iterdir()] if tasks.exists() else [pid]:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {cpu})


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class Server(ServerProcess):
    """A twamp-server on loopback, started the way systemd would (NOTIFY_SOCKET), in a
    directory of its own that :meth:`stop` removes."""

    def __init__(self, prefix: Sequence[str] = (), **settings: object) -> None:
        self.control_port = free_port()
        self.test_port = free_port(socket.SOCK_DGRAM)
        config = {
            "control_port": self.control_port,
            "test_port": self.test_port,
            "listen": "127.0.0.1",
            "keys_file": "",
            "log_level": "warning",
            **settings,
        }
        text = "".join(f"{key} = {value}\n" for key, value in config.items())
        super().__init__(Path(tempfile.mkdtemp(prefix="twamp-bench-")), text, prefix=prefix)
        self.pid = self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        try:
            return super().stop(timeout)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def server(prefix: Sequence[str] = (), **settings: object) -> Iterator[Server]:
    running = Server(prefix, **settings)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_socket(size: int = BUFFER) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    grow_buffers(sock, size, size)
    sock.bind(("127.0.0.1", 0))
    return sock


def open_sessions(
    control_port: int, socks: Sequence[socket.socket], padding: int = 27
) -> tuple[ControlClient, list[int]]:
    """One control connection to a TWAMP server on loopback (twamp-server or another) with a
    started session per socket: (control, reflector ports)."""
    control = ControlClient("127.0.0.1", control_port)
    control.set_up()
    ports = []
    for sock in socks:
        answer = control.request(sock.getsockname()[1], padding=padding)
        if answer.accept != 0:
            raise RuntimeError(f"session refused: Accept {answer.accept}")
        ports.append(answer.port)
    control.start()
    return control, ports


# -- load generator ------------------------------------------------------------------------------


def sender_packet(padding: int = 27) -> bytearray:
    return bytearray(SenderPacket(0, 0, 0x8001, bytes(padding)).pack(False))


def _send(
    socks: Sequence[socket.socket],
    destinations: Sequence[tuple[str, int]],
    rate: float,
    count: int,
    padding: int,
    cpu: int | None,
    result: multiprocessing.Queue,
) -> None:
    """Send ``count`` packets round-robin over ``socks`` at ``rate`` per second.

    Absolute schedule: packet k is due at start + k / rate.  The loop sends every packet that is
    due, then sleeps a little when it has caught up (wake-ups are ~100 µs late here, so packets
    leave in micro-bursts of a few; the average rate is exact).
    """
    if cpu is not None:
        pin(0, cpu)
    pairs = list(zip(socks, destinations, strict=False))
    n = len(pairs)
    packet = sender_packet(padding)
    pack_into = struct.Struct("!I").pack_into
    period = 1e9 / rate
    start = time.monotonic_ns() + 2_000_000
    monotonic_ns = time.monotonic_ns
    sent = errors = 0
    k = 0
    while k < count:
        due = min(count, int((monotonic_ns() - start) / period) + 1)
        if due <= k:
            wait = (start + k * period - monotonic_ns()) / 1e9
            if wait > 0.0002:
                time.sleep(wait - 0.0001)
            continue
        while k < due:
            sock, destination = pairs[k % n]
            pack_into(packet, 0, k // n)
            try:
                sock.sendto(packet, destination)
                sent += 1
            except OSError:
                errors += 1
            k += 1
    elapsed = (monotonic_ns() - start) / 1e9
    result.put(("sent", sent, errors, elapsed))


def _receive(
    socks: Sequence[socket.socket],
    stop_after: float,
    cpu: int | None,
    result: multiprocessing.Queue,
    ready: multiprocessing.Event,
) -> None:
    """Count replies per socket until no reply came for ``stop_after`` seconds (after the first)."""
    if cpu is not None:
        pin(0, cpu)
    poller = select.epoll(len(socks) + 1)
    by_fd = {}
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = (index, sock)
    counts = [0] * len(socks)
    total = 0
    ready.set()
    deadline = time.monotonic() + 30.0  # nothing at all: give up
    while time.monotonic() < deadline:
        events = poller.poll(stop_after if total else 1.0)
        if not events:
            if total:
                break
            continue
        for fd, _mask in events:
            index, sock = by_fd[fd]
            recv = sock.recv
            while True:
                try:
                    recv(2048)
                except BlockingIOError:
                    break
                counts[index] += 1
                total += 1
    result.put(("received", counts))


@dataclass
class LoadResult:
    rate: float
    sent: int
    received: int
    send_errors: int
    send_seconds: float
    per_socket: list[int]
    cpu_ns: int

    @property
    def loss_percent(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0

    @property
    def cpu_us_per_packet(self) -> float:
        return self.cpu_ns / 1000 / self.received if self.received else float("nan")


def run_load(
    socks: Sequence[socket.socket],
    destinations: Sequence[tuple[str, int]],
    rate: float,
    count: int,
    measure_pid: int,
    *,
    padding: int = 27,
    senders: int = 1,
    quiet: float = 0.5,
    cpu: int | None = None,
) -> LoadResult:
    """Send ``count`` packets at ``rate`` from ``senders`` processes, count the replies, and read
    the CPU time of ``measure_pid`` and its descendants around it."""
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = ctx.Queue()
    ready = ctx.Event()
    receiver = ctx.Process(target=_receive, args=(socks, quiet, cpu, queue, ready))
    receiver.start()
    ready.wait(10)
    groups = [list(range(i, len(socks), senders)) for i in range(senders)]
    if len(socks) < senders:
        raise ValueError("one socket per sender process at least")
    before = tree_cpu_ns(measure_pid)
    procs = []
    for group in groups:
        share = count // senders
        procs.append(
            ctx.Process(
                target=_send,
                args=(
                    [socks[i] for i in group],
                    [destinations[i] for i in group],
                    rate / senders,
                    share,
                    padding,
                    cpu,
                    queue,
                ),
            )
        )
    for proc in procs:
        proc.start()
    sent = errors = 0
    seconds = 0.0
    counts: list[int] = []
    for _ in range(len(procs) + 1):
        message = queue.get(timeout=600)
        if message[0] == "sent":
            sent += message[1]
            errors += message[2]
            seconds = max(seconds, message[3])
        else:
            counts = message[1]
    after = tree_cpu_ns(measure_pid)
    for proc in [*procs, receiver]:
        proc.join()
    return LoadResult(rate, sent, sum(counts), errors, seconds, counts, after - before)


# -- misc ----------------------------------------------------------------------------------------


def wall(command: Sequence[str], repeat: int = 5, **kwargs: object) -> float:
    """Median wall time of running ``command`` to completion, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.monotonic_ns()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
        times.append((time.monotonic_ns() - start) / 1e9)
    return median(times)


def client(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "twamp-client"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def title(text: str) -> None:
    print(f"\n== {text}", flush=True)


Check = Callable[[float], bool]
