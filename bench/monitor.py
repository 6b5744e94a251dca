"""twamp-monitor at scale: many g711 targets on back-to-back runs against one local twamp-server.

The daemon runs in a process of its own (this file with ``--daemon``: twamp-monitor's Daemon,
which in addition writes each finished run's send times to a file, since the daemon exports
no per-packet figures).  Every target runs ``--every`` seconds apart, each run sending
``(every - 1) x 50`` packets (so that runs follow each other with about a second between
them).  After a warm-up of one period (every target has begun), a window of ``--seconds``:

* daemon CPU per packet: its CPU time (all threads) over the window against the packets it
  sent in the window; baseline: the same daemon with one target, measured in the same run;
  goal <= 1.2x;
* send lateness: the T1 each packet carried against its run's grid (packet k due at
  T1_0 + k x 20 ms, the run's earliest packet taken as on time); goal p99 <= 1 ms;
* loss over every run that sent in the window; goal 0 %;
* RSS (the peak VmRSS sampled through the window, and VmHWM); goal <= 150 MB;
* ``/metrics`` answer time, fetched every ``--scrape`` seconds through the window (as a
  Prometheus would scrape it: a fetch takes CPU from the daemon too); goal <= 100 ms;
* SIGHUP with one target changed, half-way through the window: the largest gap between two
  consecutive packets of every other target within 1 s of the reload, against the largest in
  a quiet 2 s earlier in the same window; goal: the reload adds no gap (at most 1 ms more
  than the quiet window's), and no other target's run restarted or cut short.  The reload's
  time (SIGHUP to READY=1) is shown too, and whether the changed target's run in progress was
  cancelled (a cancelled run leaves no result, so the records cannot show it).

    .venv/bin/python bench/monitor.py [--seconds 30] [--targets 500] [--every 10] [--scrape 5]
"""

from __future__ import annotations

import argparse
import array
import contextlib
import dataclasses
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import Row, cpu_ns, emit, percentile, raise_fd_limit, server, title
from support import NotifySocket, free_port
from twamp_client.measurement import Measurement
from twamp_client.monitor import config as config_module
from twamp_client.monitor.daemon import Daemon
from twamp_client.monitor.scheduler import Slot

BENCH = "monitor"
INTERVAL_NS = 20_000_000  # g711
#: The target a SIGHUP changes.
CHANGED = "t0000"
#: Half-width of the window around the reload in which gaps are looked for (ns).
AROUND_NS = 1_000_000_000


# -- the daemon's side -----------------------------------------------------------------------


@dataclasses.dataclass
class RunRecord:
    """One finished run, as the benchmark reads it."""

    target: str
    error: str | None
    count: int
    sent: int
    lost: int
    #: Lost on the way out and back (None where not told apart), and replies that came after
    #: their packet was given up (counted lost).
    forward_lost: int | None
    reverse_lost: int | None
    late: int
    #: T1 of every packet sent, by sequence number (Unix ns; the kernel's send time).
    send_times: array.array[int]
    #: (sequence number, T1 the packet carried) of each first reply.
    carried: list[tuple[int, int]]


class RecordingDaemon(Daemon):
    """twamp-monitor's daemon that also writes each finished run to ``out`` (pickled
    RunRecords): the per-packet times the daemon itself does not export."""

    def __init__(self, config: config_module.MonitorConfig, out: BinaryIO) -> None:
        super().__init__(config)
        self._out = out

    def _finished(self, slot: Slot, measurement: Measurement, ended: float) -> None:
        outcome, summary = measurement.outcome, measurement.summary
        seen: set[int] = set()
        carried = []
        for reply in outcome.replies if outcome is not None else ():
            if reply.t1_packet is not None and reply.sender_seq not in seen:
                seen.add(reply.sender_seq)
                carried.append((reply.sender_seq, reply.t1_packet))
        record = RunRecord(
            slot.config.name,
            measurement.error,
            measurement.test.count,
            summary.sent if summary is not None else 0,
            summary.lost if summary is not None else 0,
            summary.forward_lost if summary is not None else None,
            summary.reverse_lost if summary is not None else None,
            outcome.late if outcome is not None else 0,
            array.array("q", outcome.send_times if outcome is not None else ()),
            carried,
        )
        pickle.dump(record, self._out)
        self._out.flush()
        super()._finished(slot, measurement, ended)


def run_daemon(config_path: Path, records: Path) -> int:
    with records.open("wb") as out:
        return RecordingDaemon(config_module.read(config_path), out).run()


# -- the benchmark's side --------------------------------------------------------------------


def write_config(path: Path, port: int, metrics: int, targets: int, every: float) -> None:
    count = max(1, round((every - 1) * 1e9 / INTERVAL_NS))
    text = (
        f"[monitor]\nmetrics_listen = 127.0.0.1:{metrics}\nhistory =\nmodel = g711\n"
        f"count = {count}\nevery = {every:g}\n\n"
    )
    text += "".join(f"[target t{k:04d}]\naddress = 127.0.0.1:{port}\n\n" for k in range(targets))
    path.write_text(text)


def rss_now(pid: int, field: str = "VmRSS") -> int:
    """``field`` of /proc/PID/status in KiB (0 once the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fetch_ms(port: int) -> float:
    start = time.monotonic_ns()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        response.read()
    return (time.monotonic_ns() - start) / 1e6


@dataclasses.dataclass
class Observed:
    """What one daemon run gave, over the window."""

    cpu_ns: int
    window: tuple[int, int]
    runs: list[RunRecord]
    metrics_ms: list[float]
    rss_kib: int
    hwm_kib: int
    reload_at: int | None
    #: SIGHUP to READY=1, ms.
    reload_ms: float | None
    log: str


def observe(
    port: int, targets: int, seconds: float, every: float, scrape: float, *, reload: bool
) -> Observed:
    """A daemon with ``targets`` targets: warm-up, the window (with a reload half-way when
    asked), then the runs in progress at its end are waited for and the daemon stopped."""
    work = Path(tempfile.mkdtemp(prefix="twamp-bench-monitor-"))
    config, records, log = work / "monitor.conf", work / "runs.pickle", work / "monitor.log"
    metrics = free_port()
    write_config(config, port, metrics, targets, every)
    notify = NotifySocket(work / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    with log.open("wb") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, __file__, "--daemon", str(config), str(records)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        notify.wait_for("READY=1", timeout=60)
        time.sleep(every)  # every target's first run has begun
        fetches: list[float] = []
        peak = 0
        reload_at = reload_ms = None
        start_wall, start_cpu = time.time_ns(), cpu_ns(daemon.pid)
        end = time.monotonic() + seconds
        scrape_at = time.monotonic()
        half = time.monotonic() + seconds / 2
        while (now := time.monotonic()) < end:
            if reload and reload_at is None and now >= half:
                changed = config.read_text().replace(
                    f"[target {CHANGED}]\n", f"[target {CHANGED}]\nlabels = bench=changed\n"
                )
                config.write_text(changed)
                notify.messages.clear()
                reload_at, sighup = time.time_ns(), time.monotonic()
                daemon.send_signal(signal.SIGHUP)
                notify.wait_for("READY=1", timeout=30)
                reload_ms = (time.monotonic() - sighup) * 1000
            # No fetch in the quiet window or around the reload: their gaps are the reload's.
            if now >= scrape_at and not (reload and half - 4.5 <= now <= half + 1.5):
                fetches.append(fetch_ms(metrics))
                scrape_at = now + scrape
            peak = max(peak, rss_now(daemon.pid))
            time.sleep(max(0.0, min(0.5, end - time.monotonic())))
        end_wall, end_cpu = time.time_ns(), cpu_ns(daemon.pid)
        hwm = rss_now(daemon.pid, "VmHWM")
        time.sleep(every + 2)  # the runs in progress at the window's end are recorded
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
            notify.close()
    runs = []
    with records.open("rb") as data:
        while True:
            try:
                runs.append(pickle.load(data))
            except EOFError:
                break
    text = log.read_text()
    shutil.rmtree(work, ignore_errors=True)
    return Observed(
        end_cpu - start_cpu,
        (start_wall, end_wall),
        runs,
        fetches,
        peak,
        hwm,
        reload_at,
        reload_ms,
        text,
    )


def in_window(run: RunRecord, begin: int, end: int) -> list[int]:
    return [t for t in run.send_times if begin <= t < end]


def lateness_us(run: RunRecord, begin: int, end: int) -> list[float]:
    """Each packet's lateness against its run's grid, from the T1 it carried (the packets
    sent in [begin, end))."""
    offsets = [(t1 - seq * INTERVAL_NS, t1) for seq, t1 in run.carried]
    if not offsets:
        return []
    origin = min(offset for offset, _ in offsets)
    return [(offset - origin) / 1000 for offset, t1 in offsets if begin <= t1 < end]


def largest_gap_ms(runs: list[RunRecord], begin: int, end: int) -> float:
    """The largest time between two consecutive packets of one run, both sent in [begin, end)."""
    gap = 0
    for run in runs:
        times = run.send_times
        for k in range(1, len(times)):
            if begin <= times[k - 1] and times[k] < end:
                gap = max(gap, times[k] - times[k - 1])
    return gap / 1e6


@dataclasses.dataclass
class Figures:
    cpu_us_per_packet: float
    packets: int
    lateness_p50: float
    lateness_p99: float
    loss_percent: float
    lost: int
    #: Where: "N out, M back, K late replies".
    lost_where: str
    failed: list[str]
    metrics_max_ms: float
    metrics_p50_ms: float
    rss_mib: float
    hwm_mib: float


def figures(seen: Observed, *, exclude: str | None = None) -> Figures:
    begin, end = seen.window
    packets = sum(len(in_window(run, begin, end)) for run in seen.runs)
    active = [
        run
        for run in seen.runs
        if run.target != exclude and (in_window(run, begin, end) or run.error)
    ]
    late = [value for run in active for value in lateness_us(run, begin, end)]
    sent = sum(run.sent for run in active)
    lost = sum(run.lost for run in active)
    return Figures(
        cpu_us_per_packet=seen.cpu_ns / 1000 / packets if packets else float("nan"),
        packets=packets,
        lateness_p50=percentile(late, 50),
        lateness_p99=percentile(late, 99),
        loss_percent=100 * lost / sent if sent else 100.0,
        lost=lost,
        lost_where=f"{sum(run.forward_lost or 0 for run in active)} on the way out,"
        f" {sum(run.reverse_lost or 0 for run in active)} back,"
        f" {sum(run.late for run in active)} replies late",
        failed=[f"{run.target}: {run.error}" for run in active if run.error],
        metrics_max_ms=max(seen.metrics_ms, default=float("nan")),
        metrics_p50_ms=percentile(seen.metrics_ms, 50),
        rss_mib=seen.rss_kib / 1024,
        hwm_mib=seen.hwm_kib / 1024,
    )


@dataclasses.dataclass
class Reload:
    quiet_gap_ms: float
    reload_gap_ms: float
    #: Unchanged targets whose run in progress at the reload did not send its count.
    disturbed: list[str]
    reload_ms: float | None
    reloaded: bool
    #: Whether the changed target's run in progress was cancelled.
    cancelled: bool


def reload_figures(seen: Observed) -> Reload:
    assert seen.reload_at is not None
    at = seen.reload_at
    others = [run for run in seen.runs if run.target != CHANGED]
    spanning = [
        run for run in others if run.send_times and run.send_times[0] < at < run.send_times[-1]
    ]
    disturbed = [
        f"{run.target} ({run.sent} of {run.count} sent, {run.error or 'no error'})"
        for run in spanning
        if run.sent != run.count or run.error
    ]
    return Reload(
        quiet_gap_ms=largest_gap_ms(others, at - 4 * AROUND_NS, at - 2 * AROUND_NS),
        reload_gap_ms=largest_gap_ms(others, at - AROUND_NS, at + AROUND_NS),
        disturbed=disturbed,
        reload_ms=seen.reload_ms,
        reloaded="reloaded targets=" in seen.log,
        cancelled=f"run cancelled target={CHANGED}" in seen.log,
    )


def show(name: str, got: Figures) -> None:
    print(
        f"  {name}: {got.packets} packets in the window, CPU {got.cpu_us_per_packet:.1f}"
        f" µs/packet, lateness p50 {got.lateness_p50:.0f} µs p99 {got.lateness_p99:.0f} µs,"
        f" {got.lost} lost, /metrics max {got.metrics_max_ms:.1f} ms, RSS {got.rss_mib:.1f} MiB"
        + (f", {len(got.failed)} failed runs: {got.failed[0]}" if got.failed else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="the window (at least 10)")
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--every", type=float, default=10, help="seconds between runs (> 2)")
    parser.add_argument("--scrape", type=float, default=5, help="seconds between /metrics fetches")
    parser.add_argument("--daemon", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daemon:
        sys.exit(run_daemon(*args.daemon))
    if args.seconds < 10 or args.every <= 2:
        parser.error("--seconds must be at least 10 and --every more than 2")
    raise_fd_limit(4 * args.targets + 64)
    limits = {
        "max_connections": 2 * args.targets,
        "max_connections_per_client": 2 * args.targets,
        "max_sessions": 2 * args.targets,
        "max_sessions_per_client": 2 * args.targets,
    }
    rows: list[Row] = []
    with server(**limits) as srv:
        title(f"twamp-monitor, g711, runs every {args.every:g} s, {args.seconds:g} s window")
        one = observe(srv.control_port, 1, args.seconds, args.every, args.scrape, reload=False)
        base = figures(one)
        show("1 target", base)
        many = observe(
            srv.control_port, args.targets, args.seconds, args.every, args.scrape, reload=True
        )
        got = figures(many, exclude=CHANGED)
        show(f"{args.targets} targets", got)
        hup = reload_figures(many)
    n = args.targets
    rows.append(
        Row(
            BENCH,
            f"daemon CPU per packet, {n} targets",
            got.cpu_us_per_packet,
            "µs",
            base.cpu_us_per_packet,
            "1 target",
            "<= 1.2x",
            got.cpu_us_per_packet <= 1.2 * base.cpu_us_per_packet,
            note=f"{got.packets} packets in the window; 1 target: {base.packets}",
        )
    )
    rows.append(
        Row(
            BENCH,
            f"send lateness p99, {n} targets",
            got.lateness_p99 / 1000,
            "ms",
            base.lateness_p99 / 1000,
            "1 target",
            "<= 1 ms",
            got.lateness_p99 <= 1000,
            note=f"p50 {got.lateness_p50:.0f} µs; 1 target: p50 {base.lateness_p50:.0f} µs",
        )
    )
    rows.append(
        Row(
            BENCH,
            f"loss, {n} targets",
            got.loss_percent,
            "%",
            goal="0 %",
            passed=got.lost == 0 and not got.failed,
            note=f"{got.lost} lost ({got.lost_where}); failed runs: {len(got.failed)}"
            + (f" ({got.failed[0]})" if got.failed else ""),
        )
    )
    rows.append(
        Row(
            BENCH,
            f"daemon RSS, {n} targets",
            got.rss_mib,
            "MiB",
            base.rss_mib,
            "1 target",
            "<= 150 MB",
            max(got.rss_mib, got.hwm_mib) * 1024 * 1024 <= 150e6,
            note=f"peak sampled; VmHWM {got.hwm_mib:.1f} MiB",
        )
    )
    rows.append(
        Row(
            BENCH,
            f"/metrics answer time, {n} targets (max)",
            got.metrics_max_ms,
            "ms",
            base.metrics_max_ms,
            "1 target",
            "<= 100 ms",
            got.metrics_max_ms <= 100,
            note=f"{len(many.metrics_ms)} fetches, p50 {got.metrics_p50_ms:.1f} ms",
        )
    )
    rows.append(
        Row(
            BENCH,
            "SIGHUP, one target changed: largest gap of the others",
            hup.reload_gap_ms,
            "ms",
            hup.quiet_gap_ms,
            "quiet 2 s before",
            "<= quiet + 1 ms, none restarted",
            hup.reloaded and hup.reload_gap_ms <= hup.quiet_gap_ms + 1 and not hup.disturbed,
            note=("reloaded" if hup.reloaded else "NOT reloaded (see the daemon's log)")
            + f"; {len(hup.disturbed)} other runs disturbed"
            + (f" ({hup.disturbed[0]})" if hup.disturbed else ""),
        )
    )
    rows.append(
        Row(
            BENCH,
            "SIGHUP to READY=1",
            hup.reload_ms,
            "ms",
            goal="(informational)",
            note="the changed target's run in progress: "
            + ("cancelled" if hup.cancelled else "none"),
        )
    )
    emit(rows)


if __name__ == "__main__":
    main()
