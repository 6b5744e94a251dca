"""The client engine at scale: many concurrent sessions against one local twamp-server.

Each scenario runs N sessions of 50 packets/s (20 ms, the G.711 rate) for ``--seconds`` in one
Engine, in this process, their starts spread over one interval (as a monitor's random offsets
spread them: N sessions started in the same microsecond would queue behind each other at every
interval), and reads:

* client CPU per packet (send + reply): this process's CPU time over the packets sent, against
  the same figure for one session (the baseline, measured in the same run); goal at 500
  sessions: <= 1.2x;
* send lateness: the T1 each packet carried against its session's schedule (packet k due at
  T1_0 + k x 20 ms, the session's earliest packet taken as on time); goal p99 <= 1 ms;
* loss, and whether every session's books balance (sent = received + lost).

Set-up: the CPU time to set up 500 control sessions at once (count 1) against 500 x the CPU
time of one set-up alone; goal <= 2x.

The floor: the same sessions driven by the barest loop CPython allows that makes the same
system calls per packet (the send, its kernel send time off the error queue, the reply with its
kernel T4) and nothing else: no decoding, no books.  Its CPU per packet and lateness say what
this machine leaves for the engine's own work at that rate.

    .venv/bin/python bench/engine.py [--seconds 10] [--sessions 1 10 100 500]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import (
    Row,
    emit,
    open_sessions,
    percentile,
    raise_fd_limit,
    sender_packet,
    server,
    title,
)
from twamp_client import Engine, Measurement, Target, Test
from twamp_client.sockets import open_test_socket
from twamp_client.timer import Timer
from twamp_common.udp_options import ANCILLARY_SPACE, TX_ANCILLARY_SPACE

BENCH = "engine"
INTERVAL_MS = 20.0


def run_sessions(
    port: int, sessions: int, test: Test, spread: float = 0.0
) -> tuple[list[Measurement], float]:
    """``sessions`` measurements at once, their starts spread evenly over ``spread`` seconds
    (as a monitor's random offsets spread them); (results, CPU seconds of this process)."""
    engine = Engine()
    results: list[Measurement] = []
    for k in range(sessions):
        engine.submit(Target("127.0.0.1", port), test, results.append, delay=spread * k / sessions)
    cpu = time.process_time()
    engine.run()
    cpu = time.process_time() - cpu
    engine.close()
    return results, cpu


def lateness_us(measurement: Measurement) -> list[float]:
    """Each packet's lateness against its session's schedule, from the T1 it carried."""
    assert measurement.outcome is not None
    carried = sorted(
        (reply.sender_seq, reply.t1_packet)
        for reply in measurement.outcome.replies
        if reply.t1_packet is not None
    )
    interval_ns = INTERVAL_MS * 1e6
    offsets = [t1 - seq * interval_ns for seq, t1 in carried]
    if not offsets:
        return []
    origin = min(offsets)
    return [(offset - origin) / 1000 for offset in offsets]


def scenario(port: int, sessions: int, seconds: float) -> dict[str, float]:
    count = round(seconds * 1000 / INTERVAL_MS)
    results, cpu = run_sessions(
        port, sessions, Test(count=count, interval_ms=INTERVAL_MS), spread=INTERVAL_MS / 1000
    )
    sent = received = lost = 0
    exact = len(results) == sessions
    late: list[float] = []
    errors = [m.error for m in results if m.error]
    for measurement in results:
        summary = measurement.summary
        if summary is None:
            exact = False
            continue
        sent, received, lost = sent + summary.sent, received + summary.received, lost + summary.lost
        exact = exact and summary.sent == count and summary.sent == summary.received + summary.lost
        late += lateness_us(measurement)
    figures = {
        "cpu_us_per_packet": cpu * 1e6 / sent if sent else float("nan"),
        "lateness_p50": percentile(late, 50),
        "lateness_p99": percentile(late, 99),
        "loss_percent": 100 * lost / sent if sent else 100.0,
        "exact": float(exact),
        "errors": float(len(errors)),
    }
    print(
        f"  {sessions:4d} sessions: {sent} sent, {received} received, CPU"
        f" {figures['cpu_us_per_packet']:.1f} µs/packet, lateness p50"
        f" {figures['lateness_p50']:.0f} µs p99 {figures['lateness_p99']:.0f} µs,"
        f" books {'exact' if exact else 'NOT exact'}"
        + (f", {len(errors)} errors: {errors[0]}" if errors else ""),
        flush=True,
    )
    return figures


def floor(port: int, sessions: int, seconds: float) -> dict[str, float]:
    """The barest loop with the engine's system calls per packet, ``sessions`` test sessions
    of 50 packets/s on one control connection, their starts spread over one interval; its CPU
    per packet (user and system) and send lateness (against each packet's due time)."""
    socks = [open_test_socket(Test(), socket.AF_INET) for _ in range(sessions)]
    control, ports = open_sessions(port, socks)
    interval = int(INTERVAL_MS * 1e6)
    count = round(seconds * 1000 / INTERVAL_MS)
    poller, timer = select.epoll(), Timer()
    poller.register(timer.fileno(), select.EPOLLIN)
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    packets = [sender_packet() for _ in socks]
    seq_field, stamp_field = struct.Struct("!I"), struct.Struct("!Q")
    start = time.monotonic_ns()
    due = [(start + k * interval // sessions, k) for k in range(sessions)]
    sent, received, late = [0] * sessions, 0, []
    before = resource.getrusage(resource.RUSAGE_SELF)
    while due or received < sum(sent):
        now = time.monotonic_ns()
        while due and due[0][0] <= now:
            at, k = heapq.heappop(due)
            late.append((now - at) / 1000)
            sock, packet = socks[k], packets[k]
            seq_field.pack_into(packet, 0, sent[k])
            stamp_field.pack_into(packet, 4, time.time_ns())
            sock.sendto(packet, ("127.0.0.1", ports[k]))
            with contextlib.suppress(BlockingIOError):
                sock.recvmsg(0, TX_ANCILLARY_SPACE, socket.MSG_ERRQUEUE)
            sent[k] += 1
            if sent[k] < count:
                heapq.heappush(due, (at + interval, k))
        if not due:
            timeout = 1.0  # the last replies: a reply lost here would hang the loop for good
        elif due[0][0] - time.monotonic_ns() > 20_000:
            timer.arm(due[0][0])
            timeout = -1
        else:
            timeout = 0
        events = poller.poll(timeout)
        if not due and not events:
            break
        for fd, _mask in events:
            sock = by_fd.get(fd)
            if sock is not None:
                sock.recvmsg(65535, ANCILLARY_SPACE)
                received += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    control.close()
    for sock in socks:
        sock.close()
    poller.close()
    timer.close()
    packets_sent = sum(sent)
    figures = {
        "user_us": (after.ru_utime - before.ru_utime) * 1e6 / packets_sent,
        "system_us": (after.ru_stime - before.ru_stime) * 1e6 / packets_sent,
        "lateness_p50": percentile(late, 50),
        "lateness_p99": percentile(late, 99),
    }
    print(
        f"  floor, {sessions} sessions: {packets_sent} sent, {received} received, CPU"
        f" {figures['user_us']:.1f} + {figures['system_us']:.1f} µs/packet (user + system),"
        f" lateness p50 {figures['lateness_p50']:.0f} µs p99 {figures['lateness_p99']:.0f} µs",
        flush=True,
    )
    return figures


def set_up_cpu(port: int, sessions: int) -> float:
    """CPU seconds for ``sessions`` one-packet measurements at once (mostly set-up)."""
    results, cpu = run_sessions(port, sessions, Test(count=1, interval_ms=1, wait=0.2))
    failed = [m.error for m in results if m.error]
    if failed:
        print(f"  {len(failed)} set-ups failed: {failed[0]}", flush=True)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 100, 500])
    args = parser.parse_args()
    most = max(args.sessions)
    raise_fd_limit(4 * most + 64)
    rows: list[Row] = []
    limits = {
        "max_connections": 2 * most,
        "max_connections_per_client": 2 * most,
        "max_sessions": 2 * most,
        "max_sessions_per_client": 2 * most,
    }
    with server(**limits) as srv:
        title(f"sessions of 50 packets/s for {args.seconds:g} s, one engine")
        figures = {n: scenario(srv.control_port, n, args.seconds) for n in args.sessions}
        base = figures[min(args.sessions)]
        for n, got in figures.items():
            rows.append(
                Row(
                    BENCH,
                    f"client CPU per packet, {n} sessions",
                    got["cpu_us_per_packet"],
                    "µs",
                    base["cpu_us_per_packet"],
                    f"{min(args.sessions)} session",
                    "<= 1.2x" if n == 500 else "",
                    got["cpu_us_per_packet"] <= 1.2 * base["cpu_us_per_packet"]
                    if n == 500
                    else None,
                )
            )
            rows.append(
                Row(
                    BENCH,
                    f"send lateness p99, {n} sessions",
                    got["lateness_p99"] / 1000,
                    "ms",
                    goal="<= 1 ms" if n == 500 else "",
                    passed=got["lateness_p99"] <= 1000 if n == 500 else None,
                    note=f"p50 {got['lateness_p50']:.0f} µs",
                )
            )
            rows.append(
                Row(
                    BENCH,
                    f"loss and books, {n} sessions",
                    got["loss_percent"],
                    "%",
                    goal="0 %, sent = received + lost",
                    passed=got["loss_percent"] == 0 and bool(got["exact"]),
                    note="exact" if got["exact"] else "NOT exact",
                )
            )
        title(f"the floor: {most} sessions in the barest loop with the same system calls")
        bare = floor(srv.control_port, most, args.seconds)
        rows.append(
            Row(
                BENCH,
                f"client CPU per packet against the floor, {most} sessions",
                figures[most]["cpu_us_per_packet"],
                "µs",
                bare["user_us"] + bare["system_us"],
                "the floor",
            )
        )
        rows.append(
            Row(
                BENCH,
                f"the floor's send lateness p99, {most} sessions",
                bare["lateness_p99"] / 1000,
                "ms",
                note=f"p50 {bare['lateness_p50']:.0f} µs",
            )
        )
        title(f"set-up of {most} sessions at once against {most} x one")
        one = min(set_up_cpu(srv.control_port, 1) for _ in range(5))
        many = set_up_cpu(srv.control_port, most)
        print(f"  one: {one * 1e3:.2f} ms CPU; {most}: {many * 1e3:.0f} ms CPU", flush=True)
        rows.append(
            Row(
                BENCH,
                f"set-up CPU of {most} sessions",
                many,
                "s",
                most * one,
                f"{most} x one set-up",
                "<= 2x",
                many <= 2 * most * one,
            )
        )
    emit(rows)


if __name__ == "__main__":
    main()
