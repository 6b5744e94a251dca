"""Round-trip accuracy: twamp-client's median against ping's on the same veth path.

Two network namespaces joined by a veth pair (needs root): twamp-server runs in one
(``ip netns exec``), twamp-client and ``ping`` (iputils-ping) in the other.  At each interval
twamp-client sends 1000 packets and ``ping -c 1000 -i`` the same interval; the figure is the
difference of the medians (goal: within 20 µs).  ping's times come from the kernel (SO_TIMESTAMP)
and are printed to the µs.  The namespaces are removed whatever happens.

    sudo .venv/bin/python bench/accuracy.py [--count 1000] [--intervals 2,10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import BIN, Row, emit, median, server, title

BENCH = "accuracy"
NS_SERVER, NS_CLIENT = "twbench-srv", "twbench-cli"
ADDR_SERVER, ADDR_CLIENT = "10.213.7.1", "10.213.7.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def cleanup() -> None:
    for ns in (NS_SERVER, NS_CLIENT):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)


def set_up() -> None:
    cleanup()
    ip("netns", "add", NS_SERVER)
    ip("netns", "add", NS_CLIENT)
    ip(
        "link",
        "add",
        "twb0",
        "netns",
        NS_SERVER,
        "type",
        "veth",
        "peer",
        "name",
        "twb1",
        "netns",
        NS_CLIENT,
    )
    for ns, dev, addr in ((NS_SERVER, "twb0", ADDR_SERVER), (NS_CLIENT, "twb1", ADDR_CLIENT)):
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")


def in_ns(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


def ping_times_us(count: int, interval_ms: float) -> list[float]:
    run = subprocess.run(
        [
            *in_ns(NS_CLIENT),
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            f"{interval_ms / 1000:g}",
            ADDR_SERVER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return [float(m) * 1000 for m in re.findall(r"time=([0-9.]+) ms", run.stdout)]


def twamp_median_us(port: int, count: int, interval_ms: float) -> tuple[float, dict]:
    run = subprocess.run(
        [
            *in_ns(NS_CLIENT),
            str(BIN / "twamp-client"),
            f"{ADDR_SERVER}:{port}",
            "-c",
            str(count),
            "-i",
            f"{interval_ms:g}",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if not run.stdout:
        raise RuntimeError(f"twamp-client failed: {run.stderr}")
    report = json.loads(run.stdout)
    return report["rtt_us"]["median"], report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--intervals",
        default="2,10",
        help="ms, comma separated (ping allows >= 2 ms... as root, less)",
    )
    args = parser.parse_args()
    rows: list[Row] = []
    if os.geteuid() != 0 or not shutil.which("ping") or not shutil.which("ip"):
        rows.append(
            Row(
                BENCH,
                "RTT median vs ping",
                None,
                "µs",
                goal="within 20 µs",
                note="not measured: needs root, ip and ping (apt install iputils-ping)",
            )
        )
        emit(rows)
        return
    try:
        set_up()
        with server(in_ns(NS_SERVER), listen=ADDR_SERVER, max_sessions=10) as srv:
            for interval in (float(i) for i in args.intervals.split(",")):
                title(f"{args.count} packets every {interval:g} ms over veth")
                ours, report = twamp_median_us(srv.control_port, args.count, interval)
                pings = ping_times_us(args.count, interval)
                theirs = median(pings)
                print(
                    f"  twamp-client: median {ours:.1f} µs (min {report['rtt_us']['min']:.1f}, "
                    f"p99 {report['rtt_us']['p99']:.1f}),"
                    f" {report['received']}/{report['sent']} back"
                )
                print(
                    f"  ping:         median {theirs:.1f} µs (min {min(pings):.1f}, "
                    f"max {max(pings):.1f}), {len(pings)}/{args.count} back"
                )
                rows.append(
                    Row(
                        BENCH,
                        f"RTT median, {interval:g} ms interval",
                        ours,
                        "µs",
                        theirs,
                        "ping",
                        "within 20 µs of ping",
                        abs(ours - theirs) <= 20,
                        note=f"difference {ours - theirs:+.1f} µs",
                    )
                )
    finally:
        cleanup()
    emit(rows)


if __name__ == "__main__":
    main()
