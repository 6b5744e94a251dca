"""twamp-client end to end: the real command against the real twamp-server process.

Every mode, IPv4 and IPv6, TWAMP Light, the output formats (text, --json against its schema,
--raw, whose t1_ns is the kernel's send time), the options, and the error paths: refused
connection, unknown name, wrong key, a server that stops mid-session (partial results, no hang)
and usage errors.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    CLIENT,
    SECRET,
    ServerProcess,
    config_port,
    free_port,
    running_server,
    server_config,
    wait_log,
)
from support import run_client as client
from twamp_common.test_packets import (
    SENDER_HEADER_SIZE,
    SYMMETRIC_SENDER_PADDING,
    ReflectorPacket,
    SenderPacket,
)
from twamp_common.timestamp import ns_to_ntp, ntp_to_ns
from twamp_common.udp_options import ANCILLARY_SPACE, parse_ancillary, receive_options


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, server_config(tmp_path)) as process:
        yield process


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.key"
    path.write_text(SECRET + "\n")
    return path


def test_the_classic_command(server: ServerProcess) -> None:
    started = time.monotonic()
    result = client(f"127.0.0.1:{config_port(server)}", "-c", "5", "-i", "500", "-s")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 sent, 5 received, 0.0% loss (forward 0, reverse 0)" in out
    assert "round trip min/avg/max/stddev" in out
    assert "seq=" not in out  # -s: summary only
    assert elapsed < 2.5 + 1 + 3  # 5 packets 500 ms apart, a short wait, process start-up


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
@pytest.mark.parametrize("mode", ["unauthenticated", "authenticated", "encrypted", "mixed"])
def test_every_mode_and_family(server: ServerProcess, host: str, mode: str, key_file: Path) -> None:
    args = [f"{host}:{config_port(server)}", "-c", "3", "-i", "20", "-m", mode]
    if mode != "unauthenticated":
        args += ["-u", "alice", "--key-file", str(key_file)]
    result = client(*args)
    assert result.returncode == 0, result.stderr
    assert f"{mode} mode" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines() if line.startswith("seq=")] == [
        "seq=0",
        "seq=1",
        "seq=2",
    ]
    assert "3 sent, 3 received" in result.stdout


def test_key_without_mode_picks_the_strictest(server: ServerProcess, key_file: Path) -> None:
    result = client(
        f"127.0.0.1:{config_port(server)}", "-c", "1", "-u", "alice", "--key-file", str(key_file)
    )
    assert result.returncode == 0, result.stderr
    assert "encrypted mode" in result.stdout


def test_json_schema(server: ServerProcess) -> None:
    result = client(f"127.0.0.1:{config_port(server)}", "-c", "4", "-i", "10", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    for key in (
        "sent",
        "received",
        "loss_percent",
        "rtt_us",
        "outbound_us",
        "inbound_us",
        "jitter_us",
        "duplicates",
        "reordered",
        "peer",
        "mode",
        "start_time",
    ):
        assert key in document, key
    assert document["sent"] == document["received"] == 4
    assert document["loss_percent"] == 0
    rtt = document["rtt_us"]
    assert set(rtt) == {"min", "avg", "max", "stddev", "median", "p95", "p99"}
    assert 0 < rtt["min"] <= rtt["median"] <= rtt["p95"] <= rtt["p99"] <= rtt["max"]
    assert document["peer"] == {
        "host": "127.0.0.1",
        "address": "127.0.0.1",
        "port": config_port(server),
    }
    assert document["mode"] == "unauthenticated"


def test_json_round_trip_average_is_outbound_plus_inbound(server: ServerProcess) -> None:
    result = client(f"127.0.0.1:{config_port(server)}", "-c", "20", "-i", "5", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    rtt, out, back = document["rtt_us"], document["outbound_us"], document["inbound_us"]
    # Each average is written to the nanosecond (0.001 µs): three roundings at most.
    assert abs(rtt["avg"] - (out["avg"] + back["avg"])) <= 0.0015 + 1e-9, document


def test_intervals_shorter_than_the_spin_still_read_replies(server: ServerProcess) -> None:
    """At 0.2 ms the sender never sleeps in select: replies must still be read as they come,
    not left in the socket buffer until the run is over and counted late."""
    result = client(f"127.0.0.1:{config_port(server)}", "-c", "2000", "-i", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["sent"] == 2000
    assert document["late"] == 0
    assert document["received"] >= 1900  # loopback; a loaded machine may drop a few
    assert document["sent"] == document["received"] + document["lost"]


@pytest.mark.skipif(
    os.geteuid() != 0 and int(Path("/proc/sys/net/core/rmem_max").read_text()) < 4 * 1024 * 1024,
    reason="a test socket may grow past net.core.rmem_max only as root",
)
def test_a_reflector_answering_in_a_burst_loses_no_reply(server: ServerProcess) -> None:
    """A reflector stalled for 0.2 s answers 1000 packets at once; the client's receive buffer
    (its replies and its transmit-time reports) holds them, where the default one (208 KiB,
    about 25 ms of 5000 packets/s) dropped about 800 and reported them as reverse loss."""
    command = [*CLIENT, f"127.0.0.1:{config_port(server)}", "-c", "5000", "-i", "0.2"]
    with subprocess.Popen([*command, "--json"], stdout=subprocess.PIPE, text=True) as running:
        wait_log(server, "session started")
        time.sleep(0.2)
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        server.process.send_signal(signal.SIGCONT)
        output, _ = running.communicate(timeout=30)
    document = json.loads(output)
    assert document["sent"] == 5000
    assert document["received"] == 5000, document
    assert document["late"] == 0


@pytest.mark.parametrize("output", ["--json", "-s"])
def test_datagrams_this_host_dropped_are_reported_apart(server: ServerProcess, output: str) -> None:
    """While the client is stopped, a flood at its test port overfills the socket's receive
    buffer: what the kernel dropped there is told as this host's, not left to pass for loss."""
    port = free_port(socket.SOCK_DGRAM)
    flood = 3000
    command = [*CLIENT, f"127.0.0.1:{config_port(server)}", "-c", "1000", "-i", "2"]
    command += ["--source", f"127.0.0.1:{port}", output]
    with (
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as running,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder,
    ):
        wait_log(server, "session started")
        running.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        for _ in range(flood):
            flooder.sendto(bytes(1400), ("127.0.0.1", port))
        running.send_signal(signal.SIGCONT)
        output_text, _ = running.communicate(timeout=30)
    if output == "-s":
        dropped = re.search(r"^(\d+) datagrams dropped by this host", output_text, re.M)
        assert dropped is not None and int(dropped.group(1)) > 0, output_text
        return
    document = json.loads(output_text)
    assert document["sent"] == 1000
    # The flood was read (invalid: not from the reflector) or dropped; replies may have been
    # dropped too, and then count as lost on the way back.
    assert document["host_dropped"] > 0, document
    read_or_dropped = document["invalid"] + document["host_dropped"]
    assert flood <= read_or_dropped <= flood + document["reverse_lost"], document


def test_raw_rows_hold_four_timestamps(server: ServerProcess) -> None:
    result = client(f"127.0.0.1:{config_port(server)}", "-c", "3", "-i", "10", "--raw")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["seq"] for row in rows] == ["0", "1", "2"]
    for row in rows:
        t1, t2, t3, t4 = (int(row[f"t{n}_ns"]) for n in range(1, 5))
        assert t2 <= t3  # same host, same clock
        assert t1 < t4
        assert int(row["rtt_ns"]) == (t4 - t1) - (t3 - t2)


def test_raw_t1_is_when_the_kernel_sent_the_packet() -> None:
    """t1_ns is the kernel's send time, not the user-space T1 read before ``sendto`` and written
    into the packet: later than the T1 on the wire (by the send path, microseconds; the NTP
    round trip of the wire value is exact to 1 ns) and no later than the kernel's receive time
    at a reflector on the same host and clock, which this test reports back as T2."""
    wire_t1: dict[int, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as reflector:
        reflector.bind(("127.0.0.1", 0))
        reflector.settimeout(0.2)
        for level, option, value in receive_options(socket.AF_INET):
            reflector.setsockopt(level, option, value)
        done = threading.Event()

        def reflect() -> None:
            while not done.is_set():
                try:
                    data, ancdata, _flags, peer = reflector.recvmsg(4096, ANCILLARY_SPACE)
                except TimeoutError:
                    continue
                received_ns, ttl = parse_ancillary(ancdata)
                assert received_ns is not None
                packet = SenderPacket.unpack(data, False)
                wire_t1[packet.seq] = ntp_to_ns(packet.timestamp)
                reply = ReflectorPacket(
                    seq=packet.seq,
                    timestamp=ns_to_ntp(time.time_ns()),
                    error_estimate=packet.error_estimate,
                    receive_timestamp=ns_to_ntp(received_ns),
                    sender_seq=packet.seq,
                    sender_timestamp=packet.timestamp,
                    sender_error_estimate=packet.error_estimate,
                    sender_ttl=ttl,
                )
                reflector.sendto(reply.pack(False), peer)

        thread = threading.Thread(target=reflect)
        thread.start()
        try:
            port = reflector.getsockname()[1]
            result = client(f"127.0.0.1:{port}", "--light", "-c", "20", "-i", "5", "--raw")
        finally:
            done.set()
            thread.join()
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 20
    for row in rows:
        t1, t2 = int(row["t1_ns"]), int(row["t2_ns"])
        wire = wire_t1[int(row["seq"])]
        assert wire + 1 < t1 <= t2 + 1, row
        assert abs(int(row["t1_packet_ns"]) - wire) <= 1, row  # the T1 the packet carried


def test_light_against_the_light_reflector(tmp_path: Path) -> None:
    light = free_port(socket.SOCK_DGRAM)
    config = server_config(tmp_path, light_ports=light, light_allow="127.0.0.0/8")
    with running_server(tmp_path, config):
        result = client(f"127.0.0.1:{light}", "--light", "-c", "3", "-i", "10")
    assert result.returncode == 0, result.stderr
    assert "TWAMP Light mode" in result.stdout
    assert "3 sent, 3 received" in result.stdout


def session_padding(*options: str) -> bytes:
    """The padding the real client puts on the wire in a 3-packet TWAMP Light session, caught by
    a bare UDP socket (nothing reflects: all lost); the same in every packet, of the usual length.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as catcher:
        catcher.bind(("127.0.0.1", 0))
        port = catcher.getsockname()[1]
        result = client(
            f"127.0.0.1:{port}", "--light", "-c", "3", "-i", "10", "--wait", "0.2", *options
        )
        assert result.returncode == 1, result.stderr
        catcher.settimeout(2.0)
        packets = [SenderPacket.unpack(catcher.recv(65535), False) for _ in range(3)]
    assert [packet.seq for packet in packets] == [0, 1, 2]
    paddings = {packet.padding for packet in packets}
    assert len(paddings) == 1
    (padding,) = paddings
    assert len(padding) == SYMMETRIC_SENDER_PADDING[False] == 41 - SENDER_HEADER_SIZE[False]
    return padding


def test_padding_is_pseudo_random_and_drawn_once_per_session() -> None:
    """RFC 4656 §4.1.2: the padding SHOULD be pseudo-random: not all zeros, the same in every
    packet of the session (drawn once, not per packet)."""
    padding = session_padding()
    assert padding != bytes(len(padding))


def test_zero_padding_makes_the_padding_all_zeros() -> None:
    """RFC 4656 §4.1.2, RFC 5357 §4.2.1: implementations MUST offer all-zero padding."""
    padding = session_padding("--zero-padding")
    assert padding == bytes(len(padding))


def test_reflector_port_is_asked_for(server: ServerProcess) -> None:
    wanted = free_port(socket.SOCK_DGRAM)
    result = client(
        f"127.0.0.1:{config_port(server)}",
        "-c",
        "2",
        "-i",
        "10",
        "--reflector-port",
        str(wanted),
        "-s",
    )
    assert result.returncode == 0, result.stderr
    log = server.log()
    assert f'"reflector_port": {wanted}' in log


def test_options_shape_the_packets(server: ServerProcess) -> None:
    result = client(
        f"127.0.0.1:{config_port(server)}",
        "-c",
        "3",
        "-i",
        "10",
        "--size",
        "200",
        "--dscp",
        "EF",
        "--ttl",
        "9",
        "--df",
        "--schedule",
        "poisson",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["packet_size"] == 200
    assert document["received"] == 3
    assert document["hops"] == {"min": 0, "max": 0}  # loopback: the TTL arrives as sent
    assert '"dscp": 46' in server.log()


def test_quiet_prints_nothing(server: ServerProcess) -> None:
    result = client(f"127.0.0.1:{config_port(server)}", "-c", "1", "-q")
    assert result.returncode == 0
    assert result.stdout == ""


def test_refused_connection() -> None:
    closed = free_port()
    result = client(f"127.0.0.1:{closed}", "-c", "1")
    assert result.returncode == 2
    assert "connection refused" in result.stderr
    assert f"is twamp-server running there, and TCP port {closed} open" in result.stderr


def test_unknown_name() -> None:
    result = client("no-such-host.invalid", "-c", "1")
    assert result.returncode == 2
    assert "cannot resolve 'no-such-host.invalid'" in result.stderr


def test_wrong_key(server: ServerProcess, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not the secret\n")
    result = client(
        f"127.0.0.1:{config_port(server)}", "-c", "1", "-u", "alice", "--key-file", str(wrong)
    )
    assert result.returncode == 2
    assert "refused" in result.stderr
    assert "check the KeyID and the shared secret" in result.stderr


def test_all_lost_exits_1(tmp_path: Path) -> None:
    silent = free_port(socket.SOCK_DGRAM)  # nothing listens: every packet is lost
    result = client(f"127.0.0.1:{silent}", "--light", "-c", "2", "-i", "10", "--wait", "0.2")
    assert result.returncode == 1, result.stderr
    assert "seq=0 lost" in result.stdout and "seq=1 lost" in result.stdout
    assert "2 sent, 0 received, 100.0% loss" in result.stdout


def test_server_stopping_mid_session_gives_partial_results(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, server_config(tmp_path))
    server.wait_ready()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twamp_client",
                f"127.0.0.1:{config_port(server)}",
                "-c",
                "100",
                "-i",
                "50",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        server.signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        server.stop()
    assert process.returncode == 2
    assert "closed the control connection" in stderr
    assert "100 sent" not in stdout
    assert " sent, " in stdout  # the partial summary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "-5"], "count (-c) -5 is outside 0..10000000"),
        (["-c", "ten"], "count (-c) 'ten' is not a whole number (allowed: 0 to 10000000)"),
        (["-i", "fast"], "interval (-i) 'fast' is not a number"),
        (["--ttl", "-1"], "--ttl -1 is outside 1..255"),
        (["--dscp", "XX"], "--dscp 'XX'"),
        (["--json", "--raw"], "--json and --raw are two output formats"),
        (["--ttl", "300"], "--ttl 300 is outside"),
        (["--padding", "1", "--size", "100"], "give one"),
        (["-m", "encrypted"], "needs a KeyID"),
        (["--light", "-m", "encrypted", "-u", "a"], "unauthenticated only"),
        (["--source", "127.0.0.1:x"], "--source: the port of '127.0.0.1:x'"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = client("127.0.0.1", *args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("127.0.0.1:", "ends in ':' but gives no port"),
        ("127.0.0.1:70000", "the port of '127.0.0.1:70000' 70000 is outside 1..65535"),
        ("[::1]:x", "is not a whole number"),
    ],
)
def test_bad_single_target_is_a_usage_error(target: str, message: str) -> None:
    result = client(target, "-c", "1")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_help_reads_like_a_synopsis() -> None:
    result = client("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: twamp-client HOST[:PORT]")
    assert "exit status" in result.stdout


def test_installed_entry_point() -> None:
    binary = Path(sys.executable).parent / "twamp-client"
    assert os.access(binary, os.X_OK)
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0


@pytest.mark.parametrize(
    ("content", "extra"),
    [
        (f"# twamp-server keys\nbob other secret\nalice {SECRET}  # the test key\n", []),
        (f"alice hex:{SECRET.encode().hex()}\n", []),
        (f"alice {SECRET.encode().hex()}\n", ["--key-format", "pfs"]),
        (f"{SECRET}\n", ["--key-format", "passphrase"]),
        (f"{SECRET}\r\nthe second line is not read\n", []),  # no line starts with the KeyID
    ],
    ids=[
        "server-keys-file",
        "server-keys-file-hex",
        "perfsonar-pfs",
        "bare-passphrase",
        "bare-passphrase-guessed",
    ],
)
def test_key_files_in_every_format(
    server: ServerProcess, tmp_path: Path, content: str, extra: list[str]
) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    result = client(
        f"127.0.0.1:{config_port(server)}",
        "-c",
        "1",
        "-u",
        "alice",
        "--key-file",
        str(path),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    assert "encrypted mode" in result.stdout


def test_a_pfs_line_is_never_guessed_to_be_hex(server: ServerProcess, tmp_path: Path) -> None:
    """Read as twamp-server reads its keys file, 'alice 7333…' is the passphrase '7333…'."""
    path = tmp_path / "key"
    path.write_text(f"alice {SECRET.encode().hex()}\n")
    result = client(
        f"127.0.0.1:{config_port(server)}", "-c", "1", "-u", "alice", "--key-file", str(path)
    )
    assert result.returncode == 2
    assert "check the KeyID and the shared secret" in result.stderr


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (
            "bob secret\nbob other\n",
            ["--key-format", "keys"],
            'line 2: KeyID "bob" is listed twice',
        ),
        ("bob secret\n", ["--key-format", "keys"], "has no line for KeyID 'alice'"),
        (
            "alice nothex\n",
            ["--key-format", "pfs"],
            "a pfs line is KEYID and the passphrase in hex",
        ),
        ("", [], "is empty"),
    ],
)
def test_key_file_errors_name_the_problem(
    tmp_path: Path, content: str, extra: list[str], message: str
) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    result = client("127.0.0.1", "-c", "1", "-u", "alice", "--key-file", str(path), *extra)
    assert result.returncode == 2
    assert message in result.stderr


def test_version() -> None:
    result = client("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("twamp-client ") and result.stdout.strip()[-1].isdigit()
