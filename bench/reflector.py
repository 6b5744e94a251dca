"""Reflector throughput and cost: twamp-server against a bare Python UDP echo and, where it is
on PATH, perfSONAR's twampd, same load, same run.

A fresh twamp-server on loopback gets a real TWAMP-Control session (unauthenticated, one started
test session per load-generator socket); separate processes send unauthenticated TWAMP-Test
packets (41 octets) at a fixed rate on an absolute schedule and count the replies.  The
reflector's CPU time (utime + stime from /proc/PID/stat, of the process and all it forked)
before and after gives CPU µs per reflected packet.  The baseline is bench/echo.py
(recvfrom/sendto, the same 4 MiB buffers), driven the same way in the same run.  A twampd
started in a directory of its own gets the same control session and the same load; it forks a
process per control connection and another per test session, whose CPU counts as its own.
Every reflector is pinned to CPU 0, the load generator to CPU 1.

Figures: at 20k pps, loss (goal 0) and CPU per packet relative to the echo (goal <= 1.3x) and
to twampd (goal <= twampd); the highest rate with < 0.1 % loss on one core (goal >= 60k pps, and
>= twampd's), stepping up 20k at a time.

    .venv/bin/python bench/reflector.py [--seconds 2] [--senders 1] [--max-rate 160000]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import (
    Row,
    emit,
    fmt,
    free_port,
    median,
    open_sessions,
    pin,
    run_load,
    server,
    test_socket,
    title,
)

BENCH = "reflector"
LOSS_FREE = 0.1  # percent: "loss-free" as in timing.md's reflector table


class Target:
    def __init__(self, name: str, pid: int, destinations: list[tuple[str, int]]) -> None:
        self.name, self.pid, self.destinations = name, pid, destinations


def measure(target: Target, socks: list, rate: float, seconds: float, senders: int):
    result = run_load(
        socks, target.destinations, rate, int(rate * seconds), target.pid, senders=senders, cpu=1
    )
    print(
        f"  {target.name:12} {fmt(rate):>8} pps asked, {fmt(result.achieved_rate):>8} sent/s, "
        f"{result.sent} sent, {result.received} back, loss {result.loss_percent:.3f} %, "
        f"{result.cpu_us_per_packet:.2f} µs CPU/packet",
        flush=True,
    )
    return result


def step_up(
    target: Target, socks: list, seconds: float, senders: int, max_rate: int
) -> tuple[int, str]:
    """Highest rate (20k steps) with < LOSS_FREE % loss in one of two tries, and why the
    stepping stopped."""
    best = 0
    for rate in range(20_000, max_rate + 1, 20_000):
        for _attempt in range(2):  # a shared machine stalls now and then: one retry per rate
            result = measure(target, socks, rate, seconds, senders)
            if result.achieved_rate < 0.97 * rate:
                return best, f"load generator reached only {fmt(result.achieved_rate)} pps"
            if result.loss_percent < LOSS_FREE:
                break
        else:
            return best, f"{result.loss_percent:.2f} % loss at {fmt(rate)} pps (twice)"
        best = rate
    return best, f"no loss up to the largest rate tried ({fmt(max_rate)} pps)"


TWAMPD_CONF = """\
srcnode 127.0.0.1:{port}
authmode O
rootfolly
controltimeout 3600
testtimeout 3600
dieby 5
"""
TWAMPD_LIMITS = "limit root with disk=0, bandwidth=0\nassign default root\n"


@contextlib.contextmanager
def twampd(command: str) -> Iterator[tuple[int, int]]:
    """perfSONAR's twampd on a free loopback port, in a directory of its own: (pid, port).

    Open mode and no limits, like the twamp-server it is compared with; ``rootfolly`` lets it
    run as whoever runs the benchmark (root included, as twamp-server does here), and the
    timeouts outlast the pauses between its turns.
    """
    workdir = Path(tempfile.mkdtemp(prefix="twampd-bench-"))
    port = free_port()
    (workdir / "twamp-server.conf").write_text(TWAMPD_CONF.format(port=port))
    (workdir / "twamp-server.limits").write_text(TWAMPD_LIMITS)
    log_path = workdir / "twampd.log"
    with log_path.open("wb") as output:
        proc = subprocess.Popen(
            # -Z: in the foreground; -c configuration, -R pid file, -d data files: all in workdir
            [command, "-Z", "-c", str(workdir), "-R", str(workdir), "-d", str(workdir)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except ConnectionRefusedError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = log_path.read_text(errors="replace")
                    raise RuntimeError(f"twampd is not listening; its log:\n{log}") from None
                time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def reflecting(
    name: str, pid: int, control_port: int, socks: list[socket.socket]
) -> Iterator[Target]:
    """A TWAMP server's reflector, pinned to CPU 0 (the processes it forks later inherit that),
    with a started session per load-generator socket."""
    pin(pid, 0)
    control, ports = open_sessions(control_port, socks)
    try:
        yield Target(name, pid, [("127.0.0.1", port) for port in ports])
    finally:
        control.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per rate step")
    parser.add_argument("--senders", type=int, default=1, help="sender processes")
    parser.add_argument("--max-rate", type=int, default=160_000)
    args = parser.parse_args()
    pin(0, 1)

    socks = [test_socket() for _ in range(args.senders)]
    echo_port = free_port(kind=2)  # SOCK_DGRAM
    echo = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "echo.py"), str(echo_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    techo_port = free_port(kind=2)
    techo = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "echo.py"), str(techo_port), "--epoll-thread"],
        stdout=subprocess.PIPE,
        text=True,
    )
    rows: list[Row] = []
    try:
        for proc in (echo, techo):
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            pin(proc.pid, 0)
        with contextlib.ExitStack() as stack:
            srv = stack.enter_context(server(max_sessions=100, session_timeout=10))
            twamp = stack.enter_context(
                reflecting("twamp-server", srv.pid, srv.control_port, socks)
            )
            bare = Target("echo", echo.pid, [("127.0.0.1", echo_port)] * len(socks))
            loop_echo = Target(
                "epoll-thread echo", techo.pid, [("127.0.0.1", techo_port)] * len(socks)
            )
            targets = [bare, loop_echo]
            if where := shutil.which("twampd"):
                pid, port = stack.enter_context(twampd(where))
                targets.append(stack.enter_context(reflecting("twampd", pid, port, socks)))
            targets.append(twamp)

            title(f"20k pps, 3 s, alternating {' / '.join(t.name for t in targets)}, 3 rounds")
            cpu: dict[str, list[float]] = {target.name: [] for target in targets}
            loss: dict[str, list[float]] = {target.name: [] for target in targets}
            for _ in range(3):
                for target in targets:
                    result = measure(target, socks, 20_000, 3.0, args.senders)
                    cpu[target.name].append(result.cpu_us_per_packet)
                    loss[target.name].append(result.loss_percent)
            ours = cpu["twamp-server"]
            rows.append(
                Row(
                    BENCH,
                    "loss at 20k pps (worst of 3)",
                    max(loss["twamp-server"]),
                    "%",
                    goal="0 %",
                    passed=max(loss["twamp-server"]) == 0,
                )
            )
            cpu_ours, cpu_base = median(ours), median(cpu["echo"])
            rows.append(
                Row(
                    BENCH,
                    "CPU per packet at 20k pps (median of 3)",
                    cpu_ours,
                    "µs",
                    cpu_base,
                    "bare echo",
                    "<= 1.3x echo",
                    cpu_ours <= 1.3 * cpu_base,
                    note=f"rounds: {rounds(ours)}; echo: {rounds(cpu['echo'])}",
                )
            )
            rows.append(
                Row(
                    BENCH,
                    "CPU per packet at 20k pps vs epoll-thread echo",
                    cpu_ours,
                    "µs",
                    median(cpu["epoll-thread echo"]),
                    "epoll-thread echo",
                    "(diagnostic)",
                    note="epoll-thread echo = the reflector's structure without TWAMP work",
                )
            )

            stepped = {}
            for target in [target for target in targets if target is not loop_echo]:
                title(f"stepping up, {args.seconds:g} s per step: {target.name}")
                stepped[target.name] = step_up(
                    target, socks, args.seconds, args.senders, args.max_rate
                )
            best, why = stepped["twamp-server"]
            echo_best, echo_why = stepped["echo"]
            rows.append(
                Row(
                    BENCH,
                    "highest rate < 0.1 % loss, one core",
                    best,
                    "pps",
                    echo_best,
                    "bare echo",
                    ">= 60k pps",
                    best >= 60_000,
                    note=f"twamp-server stopped: {why}; echo stopped: {echo_why}",
                )
            )
            rows.extend(twampd_rows(cpu, loss, stepped))
            rows.append(
                Row(
                    BENCH,
                    "workers = 2",
                    None,
                    "",
                    goal="(workers goal)",
                    note="not measured: twamp-server has no workers setting (bench/README.md)",
                )
            )
    finally:
        for proc in (echo, techo):
            proc.kill()
            proc.wait()
    emit(rows)


def rounds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def twampd_rows(
    cpu: dict[str, list[float]],
    loss: dict[str, list[float]],
    stepped: dict[str, tuple[int, str]],
) -> list[Row]:
    """perfSONAR's twampd as a second baseline where it is on PATH: the same load in the same
    run, the CPU of the processes it forks counted with its own."""
    names = ("CPU per packet at 20k pps vs twampd", "highest rate < 0.1 % loss vs twampd")
    if "twampd" not in cpu:
        return [
            Row(BENCH, name, None, "", goal=goal, note="not measured: twampd not on PATH")
            for name, goal in zip(names, ("<= twampd", ">= twampd"), strict=True)
        ]
    ours, theirs = median(cpu["twamp-server"]), median(cpu["twampd"])
    best, their_best = stepped["twamp-server"][0], stepped["twampd"][0]
    return [
        Row(
            BENCH,
            names[0],
            ours,
            "µs",
            theirs,
            "twampd",
            "<= twampd",
            ours <= theirs,
            note=f"twampd rounds: {rounds(cpu['twampd'])}, "
            f"its loss at 20k pps up to {max(loss['twampd']):.2f} %",
        ),
        Row(
            BENCH,
            names[1],
            best,
            "pps",
            their_best,
            "twampd",
            ">= twampd",
            best >= their_best,
            note=f"twampd stopped: {stepped['twampd'][1]}",
        ),
    ]


if __name__ == "__main__":
    main()
