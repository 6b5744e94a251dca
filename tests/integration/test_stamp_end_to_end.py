"""twamp-client --stamp against a real twamp-server process: our Session-Sender and our
Session-Reflector together.

Every figure is checked against what the test knows independently: the source port it made the
client send from, the DSCP it asked for, the packets nftables dropped in a network namespace of
its own, the host clock the server reads, the server's log of the sessions it saw, and tshark's
reading of a capture on lo.  Both sides read the same keys file: the KeyID's secret is the
HMAC key at both ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    TSHARK,
    ServerProcess,
    capture_lo,
    free_port,
    run_client,
    running_server,
    server_config,
    tshark_lines,
    wait_log,
)
from twamp_common.clock import read_clock_state
from twamp_common.stamp import build_sender_packet, parse_reply
from twamp_common.stamp_sender import TLV_CHOICES
from twamp_common.stamp_tlv import TlvType, decode
from twamp_common.timestamp import ErrorEstimate

HOSTS = ["127.0.0.1", "::1"]
MODES = ["stateless", "stateful"]
SECURITY = ["unauthenticated", "authenticated"]
#: Every TLV but HMAC, which the authenticated mode adds by itself.
ALL_TLVS = ",".join(name for name in TLV_CHOICES if name != "hmac")
COUNT = 5
AF41 = 34


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def stamp_server(
    workdir: Path, mode: str = "stateful", security: str = "unauthenticated", keys: str = ""
) -> Iterator[tuple[ServerProcess, int]]:
    """A twamp-server answering STAMP on one free UDP port of both loopback addresses;
    ``keys``: its keys file's text, if not alice's passphrase."""
    port = free_port(socket.SOCK_DGRAM)
    settings: dict[str, object] = {"stamp_key_id": "alice"} if security == "authenticated" else {}
    config = server_config(
        workdir, stamp_ports=port, stamp_allow="127.0.0.0/8 ::1", stamp_mode=mode, **settings
    )
    if keys:
        (workdir / "twamp-server.keys").write_text(keys)
    with running_server(workdir, config) as server:
        yield server, port


def keys_file(server: ServerProcess) -> Path:
    """The server's own keys file, which the client reads too."""
    return server.workdir / "twamp-server.keys"


def security_args(server: ServerProcess, security: str) -> list[str]:
    if security == "unauthenticated":
        return []
    return ["-m", "authenticated", "-u", "alice", "--key-file", str(keys_file(server))]


def measure(host: str, port: int, *args: str) -> dict[str, Any]:
    result = run_client(where(host, port), "--stamp", "-i", "10", *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def expected_timestamp_information() -> dict[str, str]:
    """What the server says of its timestamps: software stamps of the host clock it reads."""
    sync = "ntp" if read_clock_state().synchronized else "local-free-running"
    return {"sync_in": sync, "method_in": "sw-local", "sync_out": sync, "method_out": "sw-local"}


@pytest.mark.parametrize("security", SECURITY)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", HOSTS)
def test_every_tlv_between_our_client_and_our_server(
    tmp_path: Path, host: str, mode: str, security: str
) -> None:
    source = free_port(socket.SOCK_DGRAM, host)
    with stamp_server(tmp_path, mode, security) as (server, port):
        document = measure(
            host,
            port,
            *security_args(server, security),
            *("-c", str(COUNT), "--dscp", "AF41", "--ssid", "4660"),
            *("--source", where(host, source), "--stamp-tlv", ALL_TLVS),
        )
        started = wait_log(server, "stamp session started", peer=host, peer_port=source)
    assert started["ssid"] == 4660 and started["port"] == port
    expected_mode = "STAMP" if security == "unauthenticated" else "STAMP authenticated"
    assert document["mode"] == expected_mode
    assert (document["sent"], document["received"], document["lost"]) == (COUNT, COUNT, 0)
    assert (document["forward_lost"], document["reverse_lost"]) == (0, 0)
    assert (document["invalid"], document["duplicates"]) == (0, 0)
    stamp = document["stamp"]
    assert stamp["ssid"] == 4660
    assert stamp["tlv_flags"] == {} and stamp["tlv_integrity_failed"] == 0
    assert stamp["timestamp_information"] == expected_timestamp_information()
    assert stamp["class_of_service"] == {
        "dscp_requested": AF41,
        "dscp_at_reflector": {str(AF41): COUNT},  # what the server's socket saw arrive
        "ecn_at_reflector": {"0": COUNT},
        "dscp_of_replies": {str(AF41): COUNT},  # what ours saw come back
        "ecn_of_replies": {"0": COUNT},
        "refused": 0,
    }
    assert stamp["direct_measurement"] == {
        "s_txc": COUNT,
        "r_rxc": COUNT,
        "r_txc": COUNT,
        "forward_lost": 0,
        "reverse_lost": 0,
    }
    assert stamp["location"] == {
        "source_address": host,
        "source_port": source,
        "destination_address": host,
        "destination_port": port,
    }
    if mode == "stateful":
        # Each reply but the first names the one before it and its kernel send time.
        assert (stamp["follow_up_replies"], stamp["follow_up_method"]) == (COUNT - 1, "sw-local")
        corrected, uncorrected = stamp["follow_up_inbound_us"], document["inbound_us"]
        assert 0 < corrected["min"] <= corrected["max"] <= uncorrected["max"]
    else:
        # A stateless reflector zeroes the TLV (RFC 8972 §4.7): nothing to correct with.
        assert (stamp["follow_up_replies"], stamp["follow_up_method"]) == (0, None)
        assert stamp["follow_up_inbound_us"] is None


#: What each TLV alone adds to the client's figures.
ALONE = {
    "extra-padding": lambda stamp: stamp["tlv_flags"] == {},
    "location": lambda stamp: stamp["location"]["source_address"] == "127.0.0.1",
    "timestamp-information": lambda stamp: (
        stamp["timestamp_information"] == expected_timestamp_information()
    ),
    "class-of-service": lambda stamp: stamp["class_of_service"]["dscp_at_reflector"] == {"0": 3},
    "direct-measurement": lambda stamp: stamp["direct_measurement"]["r_rxc"] == 3,
    "access-report": lambda stamp: stamp["tlv_flags"] == {},
    "follow-up-telemetry": lambda stamp: stamp["follow_up_replies"] == 2,
    "hmac": lambda stamp: stamp["tlv_integrity_failed"] == 0,
}


@pytest.mark.parametrize("tlv", TLV_CHOICES)
def test_each_tlv_alone_is_answered(tmp_path: Path, tlv: str) -> None:
    with stamp_server(tmp_path, security="authenticated") as (server, port):
        document = measure(
            "127.0.0.1",
            port,
            *security_args(server, "authenticated"),
            *("-c", "3", "--stamp-tlv", tlv),
        )
    assert document["received"] == 3
    stamp = document["stamp"]
    assert stamp["tlv_flags"] == {} and stamp["tlv_integrity_failed"] == 0
    assert ALONE[tlv](stamp), stamp


def test_a_hex_secret_is_the_same_key_at_both_ends(tmp_path: Path) -> None:
    """A keys file's ``hex:`` octets are the HMAC key as they are, at both ends: a packet
    signed with those octets by hand is answered, and so is the client."""
    octets = "00ff10ef20df30cf40bf50af609f708f807f906fa05fb04fc03fd02fe01f"
    keys = f"bob s3cret\nalice hex:{octets}\n"
    with stamp_server(tmp_path, security="authenticated", keys=keys) as (server, port):
        by_hand = build_sender_packet(
            7,
            time.time_ns(),
            error_estimate=ErrorEstimate(False, 0, 1),
            authenticated=True,
            key=bytes.fromhex(octets),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(by_hand, ("127.0.0.1", port))
            reply = parse_reply(sock.recv(2048), authenticated=True, key=bytes.fromhex(octets))
        assert reply.sender_seq == 7
        document = measure("127.0.0.1", port, *security_args(server, "authenticated"), "-c", "2")
    assert (document["mode"], document["received"], document["invalid"]) == (
        "STAMP authenticated",
        2,
        0,
    )


def test_an_hmac_tlv_in_the_unauthenticated_mode_is_flagged_by_a_server_without_a_key(
    tmp_path: Path,
) -> None:
    """The server keys only authenticated ports: it cannot check the TLVs' HMAC here, so it
    sets I on every TLV and fills none (RFC 8972 §4.8), and the client reads none."""
    with stamp_server(tmp_path) as (server, port):
        document = measure(
            "127.0.0.1",
            port,
            *("-m", "unauthenticated", "-u", "alice", "--key-file", str(keys_file(server))),
            *("-c", "2", "--stamp-tlv", "class-of-service,hmac"),
        )
    assert document["received"] == 2
    assert document["stamp"]["tlv_flags"] == {"class-of-service": {"I": 2}, "hmac": {"I": 2}}
    assert document["stamp"]["class_of_service"] is None


@pytest.mark.parametrize(
    ("client_security", "secret", "reason"),
    [
        ("authenticated", "another secret", "HMAC does not match"),
        ("unauthenticated", None, "44 octets, shorter than a base STAMP packet (112)"),
    ],
)
def test_another_key_or_mode_than_the_servers_fails_clearly(
    tmp_path: Path, client_security: str, secret: str | None, reason: str
) -> None:
    wrong = tmp_path / "wrong.keys"
    wrong.write_text(f"alice {secret}\n")
    args = ["-m", "authenticated", "-u", "alice", "--key-file", str(wrong)] if secret else []
    with stamp_server(tmp_path, security="authenticated") as (server, port):
        result = run_client(
            f"127.0.0.1:{port}", "--stamp", *args, "-c", "2", "-i", "10", "--wait", "0.3"
        )
        wait_log(server, "stamp packet dropped", reason=reason)
    assert result.returncode == 1
    assert "2 sent, 0 received, 100.0% loss" in result.stdout
    mode = "authenticated" if secret else "unauthenticated"
    assert f"is a STAMP reflector listening on UDP port {port} in the {mode} mode" in result.stderr
    assert "another key" in result.stderr


#: A twamp-server and a twamp-client in a network namespace of their own, lo up, nftables
#: dropping requests by their Sequence Number (octets 0-3 of the UDP payload) and replies by
#: their Session-Sender Sequence Number (octets 24-27).
_NAMESPACE_SCRIPT = """
set -e
ip link set lo up
{python} -m twamp_server --config {config} 2> {log} &
server=$!
for _ in $(seq 100); do grep -q 'twamp-server ready' {log} && break; sleep 0.1; done
nft add table inet test
nft add chain inet test out '{{ type filter hook output priority 0; }}'
nft add rule inet test out udp dport {port} @th,64,32 '{{ {forward} }}' counter drop
nft add rule inet test out udp sport {port} @th,256,32 '{{ {reverse} }}' counter drop
status=0
{python} -m twamp_client {target} --stamp -c {count} -i 10 --wait 0.3 --json \
    --stamp-tlv direct-measurement || status=$?
nft list chain inet test out >&2
kill $server
exit $status
"""

NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root and nftables"
)


@NEEDS_ROOT
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", HOSTS)
def test_loss_per_direction_under_nftables_drops(tmp_path: Path, host: str, mode: str) -> None:
    port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "server.conf"
    config.write_text(
        server_config(tmp_path, stamp_ports=port, stamp_allow="127.0.0.1 ::1", stamp_mode=mode)
    )
    forward, reverse = {2, 7, 10}, {4, 8}  # the last reply (11) comes back
    script = _NAMESPACE_SCRIPT.format(
        python=sys.executable,
        config=config,
        log=tmp_path / "server.log",
        port=port,
        forward=", ".join(map(str, sorted(forward))),
        reverse=", ".join(map(str, sorted(reverse))),
        target=where(host, port),
        count=12,
    )
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr  # replies came
    # nftables says it dropped exactly these packets.
    assert f"packets {len(forward)} " in result.stderr.split(f"dport {port}")[1]
    assert f"packets {len(reverse)} " in result.stderr.split(f"sport {port}")[1]
    document = json.loads(result.stdout)
    lost = len(forward) + len(reverse)
    assert (document["sent"], document["received"], document["lost"]) == (12, 12 - lost, lost)
    if mode == "stateful":
        # The reflector's own numbers leave a gap for each reply lost on the way back.
        assert (document["forward_lost"], document["reverse_lost"]) == (len(forward), len(reverse))
        assert document["loss_split_note"] is None
    else:
        # Our own numbers copied back: the two directions cannot be told apart from them.
        assert (document["forward_lost"], document["reverse_lost"]) == (None, None)
        assert "cannot be told apart" in document["loss_split_note"]
    # The Direct Measurement counters are the reflector's own, in both modes.
    assert document["stamp"]["direct_measurement"] == {
        "s_txc": 12,
        "r_rxc": 12 - len(forward),
        "r_txc": 12 - len(forward),
        "forward_lost": len(forward),
        "reverse_lost": len(reverse),
    }


@pytest.mark.parametrize("security", SECURITY)
def test_tshark_decodes_a_client_server_exchange_and_sizes_are_symmetric(
    tmp_path: Path, security: str
) -> None:
    assert TSHARK is not None, "tshark is missing: `make venv` installs it (Debian package tshark)"
    if os.geteuid() != 0:
        pytest.skip("capturing on lo needs root")
    capture = tmp_path / "stamp.pcapng"
    with stamp_server(tmp_path, security=security) as (server, port):
        tshark = capture_lo(capture, f"udp port {port}", 2 * COUNT)
        document = measure(
            "127.0.0.1",
            port,
            *security_args(server, security),
            *("-c", str(COUNT), "--size", "300", "--ssid", "21248", "--stamp-tlv", ALL_TLVS),
        )
        assert tshark.wait(20) == 0
    assert document["received"] == COUNT
    decode_as = ["-d", f"udp.port=={port},twamp.test"]
    malformed = '_ws.malformed || _ws.expert.severity >= "Error"'
    assert tshark_lines(capture, decode_as, "-Y", malformed) == []
    fields = [
        "udp.srcport",
        "udp.length",
        "twamp.test.seq_number",
        "twamp.test.mbz1",
        "udp.payload",
    ]
    rows = [
        row.split("\t")
        for row in tshark_lines(capture, decode_as, "-T", "fields", *(f"-e{f}" for f in fields))
    ]
    assert len(rows) == 2 * COUNT
    # Every packet both ways is the size asked for: the reply never larger than the request.
    assert {int(row[1]) for row in rows} == {8 + 300}
    # The Access Report goes in the first request only, and comes back answered: the echo
    # disarmed its retransmission timer (RFC 8972 §4.6).  An Extra Padding TLV takes its place.
    base = 112 if security == "authenticated" else 44
    carried = [
        (int(row[0]) == port, row[2])
        for row in rows
        if TlvType.ACCESS_REPORT in [tlv.type for tlv in decode(bytes.fromhex(row[4]), base)]
    ]
    assert carried == [(False, "0"), (True, "0")], carried
    if security == "unauthenticated":  # TWAMP-Test's layout is STAMP's unauthenticated one
        replies = [row for row in rows if int(row[0]) == port]
        assert [(int(row[2]), int(row[3], 0)) for row in replies] == [
            (seq, 21248) for seq in range(COUNT)
        ]
