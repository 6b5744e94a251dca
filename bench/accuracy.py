"""Round-trip accuracy: twamp-client's median against ping's on the same veth path.

Two network namespaces joined by a veth pair (needs root): twamp-server runs in one
(``ip netns exec``), twamp-client and ``ping`` (iputils-ping) in the other.  At each interval
twamp-client sends 1000 packets and ``ping -c 1000 -i`` the same interval; the figure is the
difference of the medians (goal: within 20 µs).  ping's receive times come from the kernel
(SO_TIMESTAMP), its send times from user space just before sending, and are printed to the µs;
the like-for-like figure is twamp-client's round trip from the T1 its packets carried (read the
same way), and the one twamp-client reports, from the kernel's send time, is shown beside it.
The namespaces are removed whatever happens.

    sudo .venv/bin/python bench/accuracy.py [--count 1000] [--intervals 2,10]
"""

from __future__ import annotations

import argparse
import csv
import io
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


def twamp_round_trips_us(
    port: int, count: int, interval_ms: float
) -> tuple[list[float], list[float]]:
    """twamp-client's round trips in µs, from --raw: (with the kernel's send time, as the
    client reports them; with the T1 the packet carried, read in user space as ping does)."""
    run = subprocess.run(
        [
            *in_ns(NS_CLIENT),
            str(BIN / "twamp-client"),
            f"{ADDR_SERVER}:{port}",
            "-c",
            str(count),
            "-i",
            f"{interval_ms:g}",
            "--raw",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if not run.stdout:
        raise RuntimeError(f"twamp-client failed: {run.stderr}")
    kernel, carried = [], []
    for row in csv.DictReader(io.StringIO(run.stdout)):
        if not row["rtt_ns"]:
            continue
        t2, t3, t4 = int(row["t2_ns"]), int(row["t3_ns"]), int(row["t4_ns"])
        kernel.append(int(row["rtt_ns"]) / 1000)
        carried.append(((t4 - int(row["t1_packet_ns"])) - (t3 - t2)) / 1000)
    return kernel, carried


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
                kernel, carried = twamp_round_trips_us(srv.control_port, args.count, interval)
                pings = ping_times_us(args.count, interval)
                theirs, ours, exact = median(pings), median(carried), median(kernel)
                print(
                    f"  twamp-client: median {exact:.1f} µs with the kernel's send time, "
                    f"{ours:.1f} µs with the T1 the packet carried; {len(kernel)}/{args.count} back"
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
                        note=f"difference {ours - theirs:+.1f} µs; like ping, from a send time"
                        " read in user space (the T1 the packet carried)",
                    )
                )
                rows.append(
                    Row(
                        BENCH,
                        f"RTT median, {interval:g} ms, kernel send time",
                        exact,
                        "µs",
                        theirs,
                        "ping",
                        "(what twamp-client reports)",
                        note=f"difference {exact - theirs:+.1f} µs: without this host's send path,"
                        " which ping counts",
                    )
                )
    finally:
        cleanup()
    emit(rows)


if __name__ == "__main__":
    main()
