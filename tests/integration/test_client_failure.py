"""twamp-client under failure and against broken or hostile peers: it measures on and never
lies.

Real client processes against small fake peers (tests/peers.py), a real twamp-server behind a
proxy, and nftables drops inside a network namespace the test makes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import Dripper, FakeReflector, Proxy, Stamps, honest, reply
from support import (
    CLIENT,
    ServerProcess,
    config_port,
    free_port,
    running_server,
    server_config,
)
from support import run_client as client
from twamp_common.test_packets import ReflectorPacket
from twamp_common.timestamp import ns_to_ntp


def light(port: int, *args: str) -> dict:  # type: ignore[type-arg]
    result = client(f"127.0.0.1:{port}", "--light", "--json", *args)
    document = json.loads(result.stdout)
    document["returncode"] = result.returncode
    document["stderr"] = result.stderr
    return document  # type: ignore[no-any-return]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, server_config(tmp_path)) as process:
        yield process


# The reflector's timestamps ---------------------------------------------------------------


def test_swapped_timestamps_are_received_but_left_out_of_the_delays() -> None:
    def swapped(stamps: Stamps) -> bytes:
        return reply(stamps.seq, stamps.t2 + 50_000, stamps.t2, stamps.sender)  # T3 < T2

    with FakeReflector(swapped) as peer:
        document = light(peer.port, "-c", "5", "-i", "10")
    assert document["returncode"] == 0, document["stderr"]
    assert (document["sent"], document["received"], document["inconsistent"]) == (5, 5, 5)
    assert document["rtt_us"] is None and document["processing_us"] is None


def test_averages_add_up_over_the_same_packets_with_a_skewed_clock_and_bad_stamps() -> None:
    """A reflector 2 s ahead (one-way delays of about +2 s and -2 s) that swaps its stamps on
    every third reply, with T2 half a second later still: were those replies in one average
    and not in another, the round trip's would be off by a sixth of a second."""
    skew = 2 * 10**9

    def skewed(stamps: Stamps) -> bytes:
        if stamps.seq % 3 == 0:
            return reply(stamps.seq, stamps.t2 + skew + 5 * 10**8, stamps.t2 + skew, stamps.sender)
        return reply(stamps.seq, stamps.t2 + skew, stamps.t3 + skew, stamps.sender)

    with FakeReflector(skewed) as peer:
        document = light(peer.port, "-c", "30", "-i", "5")
    assert document["returncode"] == 0, document["stderr"]
    assert (document["received"], document["inconsistent"]) == (30, 10), document
    rtt, out, back = document["rtt_us"], document["outbound_us"], document["inbound_us"]
    assert out["avg"] > 1.9e6 and back["avg"] < -1.9e6  # the clock's offset, in both
    assert 0 < rtt["avg"] < 1e5
    # Each average is written to the nanosecond (0.001 µs): three roundings at most.
    assert abs(rtt["avg"] - (out["avg"] + back["avg"])) <= 0.0015 + 1e-6, document


def test_a_negative_round_trip_is_never_reported_as_valid() -> None:
    def slow_inside(stamps: Stamps) -> bytes:
        # Five seconds "inside" the reflector: the round trip would be about -5000 ms.
        return reply(stamps.seq, stamps.t2, stamps.t2 + 5 * 10**9, stamps.sender)

    with FakeReflector(slow_inside) as peer:
        result = client(f"127.0.0.1:{peer.port}", "--light", "-c", "3", "-i", "10")
        raw = client(f"127.0.0.1:{peer.port}", "--light", "-c", "3", "-i", "10", "--raw")
    assert "rtt=-" not in result.stdout
    assert "round trip min" not in result.stdout
    assert "3 replies carried impossible reflector timestamps" in result.stdout
    rows = [line.split(",") for line in raw.stdout.splitlines()[1:]]
    assert len(rows) == 3 and all(row[4] for row in rows)  # the timestamps, as they came
    assert [row[7] for row in rows] == ["", "", ""]  # and no round trip


def test_replies_that_all_come_after_the_wait_are_named_in_the_hint() -> None:
    """Every reply later than --wait: each packet is lost, and the hint says replies did come
    (a firewall would be the wrong thing to check).  The replies to the first packets come
    while the later ones are still waited for (the others after the run)."""
    with FakeReflector(honest, delay=0.3) as peer:
        document = light(peer.port, "-c", "20", "-i", "20", "--wait", "0.1")
    assert document["returncode"] == 1
    assert (document["received"], document["lost"]) == (0, 20), document
    late = document["late"]
    assert late >= 3, document
    assert document["hint"].startswith(
        f"no reply came back in time: {late} came after the wait of 0.1 s"
    )


def test_reflector_processing_time_is_shown() -> None:
    def steady(stamps: Stamps) -> bytes:
        return reply(stamps.seq, stamps.t2, stamps.t2 + 100_000, stamps.sender)  # 100 µs inside

    with FakeReflector(steady) as peer:
        document = light(peer.port, "-c", "3", "-i", "10")
        text = client(f"127.0.0.1:{peer.port}", "--light", "-c", "3", "-i", "10", "-s").stdout
    assert document["processing_us"]["min"] == document["processing_us"]["max"] == 100.0
    assert "reflector processing (T3 - T2) min/median/max = 0.100/0.100/0.100 ms" in text


# Numbering and layout ---------------------------------------------------------------------


def test_a_stateless_reflector_with_forward_drops_splits_no_loss() -> None:
    def stateless_dropping(stamps: Stamps) -> bytes | None:
        if stamps.sender.seq % 2:
            return None  # dropped on the way in
        return reply(stamps.sender.seq, stamps.t2, stamps.t3, stamps.sender)  # our seq copied

    with FakeReflector(stateless_dropping) as peer:
        document = light(peer.port, "-c", "20", "-i", "5", "--wait", "0.3")
        text = client(
            f"127.0.0.1:{peer.port}", "--light", "-c", "4", "-i", "5", "--wait", "0.3", "-s"
        ).stdout
    assert (document["lost"], document["forward_lost"], document["reverse_lost"]) == (
        10,
        None,
        None,
    )
    assert "stateless" in document["loss_split_note"]
    assert "(forward" not in text
    assert "loss per direction unknown: the reflector numbers its replies" in text


def test_a_stateful_light_reflector_still_splits_its_loss() -> None:
    def dropping_in(stamps: Stamps) -> bytes | None:
        return None if stamps.sender.seq in (3, 7) else honest(stamps)

    with FakeReflector(dropping_in) as peer:
        document = light(peer.port, "-c", "10", "-i", "5", "--wait", "0.3")
    assert (document["forward_lost"], document["reverse_lost"]) == (2, 0)


def test_loss_after_the_last_reply_is_told_as_either_way() -> None:
    """Packet 2 never reaches a stateful reflector and the last three go unanswered: its
    numbering places the first, and ends before the others whether they or their replies were
    lost, so neither direction is blamed for those."""

    def silent_at_the_end(stamps: Stamps) -> bytes | None:
        return None if stamps.sender.seq == 2 or stamps.sender.seq >= 7 else honest(stamps)

    with FakeReflector(silent_at_the_end) as peer:
        document = light(peer.port, "-c", "10", "-i", "5", "--wait", "0.3")
    with FakeReflector(silent_at_the_end) as peer:  # its numbering starts again at 0
        text = client(
            f"127.0.0.1:{peer.port}", "--light", "-c", "10", "-i", "5", "--wait", "0.3", "-s"
        ).stdout
    assert (document["lost"], document["forward_lost"], document["reverse_lost"]) == (4, 1, 0)
    assert document["unplaced_lost"] == 3
    assert "40.0% loss (forward 1, reverse 0, 3 either way)" in text


def test_38_octet_replies_are_measured_with_an_unknown_ttl() -> None:
    def short(stamps: Stamps) -> bytes:
        return honest(stamps)[:38]  # without MBZ and Sender TTL, as nokia/twampy sends

    with FakeReflector(short) as peer:
        document = light(peer.port, "-c", "3", "-i", "10")
        text = client(f"127.0.0.1:{peer.port}", "--light", "-c", "1").stdout
    assert (document["received"], document["invalid"]) == (3, 0)
    assert document["hops"] is None
    assert " ttl=?" in text


# Who may answer -------------------------------------------------------------------------


def test_forged_replies_from_elsewhere_are_invalid_not_received() -> None:
    silent = free_port(socket.SOCK_DGRAM)
    ours = free_port(socket.SOCK_DGRAM)
    stop = threading.Event()

    def forge() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            seq = 0
            while not stop.wait(0.005):
                now = ns_to_ntp(time.time_ns())
                packet = ReflectorPacket(seq % 5, now, 0, now, seq % 5, now, 0, 255).pack(False)
                forger.sendto(packet, ("127.0.0.1", ours))
                seq += 1

    thread = threading.Thread(target=forge)
    thread.start()
    try:
        document = light(
            silent, "-c", "5", "-i", "50", "--wait", "0.3", "--source", f"127.0.0.1:{ours}"
        )
    finally:
        stop.set()
        thread.join()
    assert document["returncode"] == 1
    assert document["received"] == 0 and document["loss_percent"] == 100
    assert document["invalid"] > 0
    assert set(document["invalid_reasons"]) == {
        "from an address or port the packets were not sent to"
    }


def test_port_unreachable_is_named_in_the_hint() -> None:
    closed = free_port(socket.SOCK_DGRAM)
    result = client(f"127.0.0.1:{closed}", "--light", "-c", "2", "-i", "10", "--wait", "0.2")
    assert result.returncode == 1
    assert f"UDP test port {closed}" in result.stdout  # the header names the port
    assert "ICMP errors: 2 port unreachable" in result.stdout
    assert f"answered 'port unreachable': nothing listens on UDP port {closed}" in result.stderr


# The control connection -----------------------------------------------------------------


def test_one_deadline_for_connection_greeting_and_set_up() -> None:
    with Dripper(every=0.3) as dripper:
        started = time.monotonic()
        result = client(f"127.0.0.1:{dripper.port}", "-c", "1", "--connect-timeout", "1.5")
        elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "the server sent no Server-Greeting within 1.5 s" in result.stderr
    assert elapsed < 1.5 + 2  # not 64 drips x 0.3 s


def test_json_still_prints_a_document_when_set_up_fails() -> None:
    closed = free_port()
    result = client(f"127.0.0.1:{closed}", "-c", "1", "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["error"] == f"connection refused by 127.0.0.1 port {closed}"
    assert document["peer"]["port"] == closed


def _cpu_seconds(process: subprocess.Popen[str]) -> float:
    _pid, _status, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    return usage.ru_utime + usage.ru_stime


def test_unsolicited_bytes_on_the_control_connection_cost_no_cpu(server: ServerProcess) -> None:
    with Proxy(("127.0.0.1", config_port(server))) as proxy:
        process = subprocess.Popen(
            [*CLIENT, f"127.0.0.1:{proxy.port}", "-c", "20", "-i", "100", "-s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proxy.connected.wait(10)
        time.sleep(0.5)
        proxy.inject(b"\x07")
        started = time.monotonic()
        cpu = _cpu_seconds(process)
        elapsed = time.monotonic() - started
    assert "20 sent, 20 received" in process.stdout.read()  # type: ignore[union-attr]
    assert cpu < 0.5 * (elapsed + 0.5)  # a spinning client would burn a core


@pytest.mark.parametrize("interval", ["0.2", "100"])  # a spinning sender, a sleeping one
def test_a_dead_control_connection_ends_a_run_within_a_second(
    server: ServerProcess, interval: str
) -> None:
    with Proxy(("127.0.0.1", config_port(server))) as proxy:
        process = subprocess.Popen(
            [*CLIENT, f"127.0.0.1:{proxy.port}", "-c", "1000000", "-i", interval, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proxy.connected.wait(10)
        time.sleep(1.0)
        proxy.cut()
        cut = time.monotonic()
        stdout, stderr = process.communicate(timeout=30)
        elapsed = time.monotonic() - cut
    assert process.returncode == 2
    assert "closed the control connection" in stderr
    document = json.loads(stdout)
    assert document["sent"] < 100_000
    assert document["sent"] == document["received"] + document["lost"]
    assert elapsed < 1 + 1.5  # noticed within a second, plus the process's exit


# Interrupts and closed output -----------------------------------------------------------


def test_ctrl_c_stops_sending_and_prints_the_summary(server: ServerProcess) -> None:
    process = subprocess.Popen(
        [*CLIENT, f"127.0.0.1:{config_port(server)}", "-c", "0", "-i", "20", "-s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "unlimited packets" in stdout
    sent = int(stdout.split("--- ")[1].splitlines()[1].split()[0])
    assert sent > 20
    assert f"{sent} sent, {sent} received, 0.0% loss" in stdout
    assert "Traceback" not in stderr


def test_a_second_ctrl_c_exits_at_once() -> None:
    silent = free_port(socket.SOCK_DGRAM)  # nothing answers: the first Ctrl-C waits 30 s
    process = subprocess.Popen(
        [*CLIENT, f"127.0.0.1:{silent}", "--light", "-c", "0", "-i", "20", "--wait", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert process.poll() is None  # waiting for the replies in flight
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=5)
    assert process.returncode == 130


def test_a_closed_stdout_ends_the_run_quietly(server: ServerProcess) -> None:
    process = subprocess.Popen(
        [*CLIENT, f"127.0.0.1:{config_port(server)}", "-c", "50", "-i", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # like `| head -1`
    process.stdout.close()
    started = time.monotonic()
    stderr = process.stderr.read()  # type: ignore[union-attr]
    process.wait(10)
    assert first.startswith("TWAMP 127.0.0.1")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert process.returncode == 0  # the replies that came say so
    assert time.monotonic() - started < 0.5 * 50 * 0.02 + 2  # it did not send all 50


# Send errors: a local firewall drop in a network namespace of our own --------------------


NFT = shutil.which("nft")


def in_namespace(tmp_path: Path, config: str, firewall: str, client_args: str) -> CompletedRun:
    """A twamp-server and a twamp-client in a network namespace of their own, with the nft
    commands ``firewall`` run once the server is ready (``&`` them to act later)."""
    (tmp_path / "server.conf").write_text(config)
    script = f"""
set -e
ip link set lo up
{sys.executable} -m twamp_server --config {tmp_path / "server.conf"} 2> {tmp_path / "log"} &
server=$!
for _ in $(seq 100); do grep -q 'twamp-server ready' {tmp_path / "log"} && break; sleep 0.1; done
nft add table inet test
nft add chain inet test out '{{ type filter hook output priority 0; }}'
nft add chain inet test in '{{ type filter hook input priority 0; }}'
{firewall}
status=0
{sys.executable} -m twamp_client {client_args} || status=$?
kill $server
exit $status
"""
    return subprocess.run(
        ["unshare", "--net", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CompletedRun = subprocess.CompletedProcess[str]
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or NFT is None, reason="needs root and nftables")


@NEEDS_ROOT
def test_a_firewall_drop_mid_run_is_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    config = server_config(tmp_path, light_ports=port, light_allow="127.0.0.0/8")
    result = in_namespace(
        tmp_path,
        config,
        f"( sleep 0.5; nft add rule inet test out udp dport {port} drop\n"
        "  sleep 0.3; nft flush chain inet test out ) &",
        f"127.0.0.1:{port} --light -c 50 -i 20 --json",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    failed = document["send_errors"].get("Operation not permitted", 0)
    assert 5 <= failed <= 25, document["send_errors"]
    assert document["sent"] == 50  # the run went on to its count
    assert document["lost"] == failed and document["received"] == 50 - failed
    assert document["error"] is None


@NEEDS_ROOT
def test_blocked_test_packets_with_a_working_control_connection_get_a_hint(
    tmp_path: Path,
) -> None:
    config = server_config(tmp_path)
    control = next(
        int(line.split("=")[1]) for line in config.splitlines() if line.startswith("control_port")
    )
    result = in_namespace(
        tmp_path,
        config,
        "nft add rule inet test in meta l4proto udp drop",  # the classic firewall mistake
        f"127.0.0.1:{control} -c 3 -i 10 --wait 0.3",
    )
    assert result.returncode == 1, result.stderr
    assert "3 sent, 0 received, 100.0% loss" in result.stdout
    port = int(result.stdout.split("UDP test port ")[1].split(":")[0])
    assert (
        "no reply came back though the control connection works: is UDP open in both"
        f" directions, to 127.0.0.1 port {port} and back to this host's port" in result.stderr
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
@pytest.mark.parametrize("kind", ["--light", "--stamp"])
@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("", "Network is unreachable"),
        ("ip route add unreachable 192.0.2.0/24", "No route to host"),
    ],
)
def test_no_route_from_the_start_is_counted_as_failed_sends(
    kind: str, route: str, reason: str
) -> None:
    """A connectionless run to a path with no route when it starts (a namespace with only
    loopback up) measures on: every packet sent and lost with the reason, a JSON document."""
    script = f"ip link set lo up; {route}\n{sys.executable} -m twamp_client"
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", f"{script} 192.0.2.1 {kind} -c 3 -i 10 --json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # every packet lost
    document = json.loads(result.stdout)
    assert document["error"] is None
    assert document["sent"] == 3 and document["lost"] == 3
    assert document["send_errors"] == {reason: 3}
