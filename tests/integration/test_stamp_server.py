"""twamp-server's STAMP Session-Reflector, as a real process, over UDP on loopback.

The sender is independent of our code where it can be: ``scapy.contrib.stamp`` builds the
unauthenticated packets and reads the replies.  scapy has no authenticated layout, so those are
built and checked with ``twamp_common.stamp`` (the HMAC verified against the keys file's
secret).  tshark reads a capture of a real exchange.  scapy's TLV flags are compared as numbers
(see tests/integration/test_stamp_scapy.py for why).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from scapy.contrib import stamp as scapy_stamp
from support import (
    TSHARK,
    ServerProcess,
    capture_lo,
    free_port,
    log_lines,
    running_server,
    server_config,
    tshark_lines,
    wait_log,
)
from twamp_common import stamp_tlv
from twamp_common.errors import AuthenticationError
from twamp_common.stamp import build_sender_packet, parse_reply
from twamp_common.stamp_tlv import (
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Location,
    LocationSubType,
    TimestampInformation,
    TlvFlags,
)
from twamp_common.timestamp import NTP_UNIX_OFFSET, ErrorEstimate
from twamp_common.udp_options import (
    IPV6_RECVTCLASS,
    IPV6_TCLASS,
    TRAFFIC_CLASS_ANCILLARY_SPACE,
    parse_ancillary,
    receive_options,
    received_traffic_class,
)

Sender = scapy_stamp.STAMPSessionSenderTestUnauthenticated
Reflector = scapy_stamp.STAMPSessionReflectorTestUnauthenticated
ScapyTlv = scapy_stamp.STAMPTestTLV
HOSTS = ["127.0.0.1", "::1"]
KEY = support.SECRET.encode()
EE = ErrorEstimate(synchronized=True, scale=3, multiplier=9)
#: The sender's generic requests for both addresses, answered in the packet's family.
LOCATION = Location.asking(LocationSubType.SOURCE_IP, LocationSubType.DESTINATION_IP)
#: A type no registry holds: answered with U set.
UNKNOWN_TYPE = 200


def _tlvs(seq: int) -> list[stamp_tlv.TlvValue]:
    """One TLV of every kind the reflector answers (the HMAC TLV: see the authenticated test)."""
    return [
        ExtraPadding(bytes(8)),
        LOCATION,
        TimestampInformation(),
        ClassOfService(46),
        DirectMeasurement(seq + 1),
        AccessReport(2, 1),
        FollowUpTelemetry(),
    ]


def _scapy(values: list[stamp_tlv.TlvValue]) -> list[object]:
    found = [
        ScapyTlv(flags=0x80, type=v.TYPE, len=len(v.pack_value()), value=v.pack_value())
        for v in values
    ]
    return [*found, ScapyTlv(flags=0x80, type=UNKNOWN_TYPE, len=4, value=b"\x01\x02\x03\x04")]


def _sender(host: str, tos: int = 0) -> socket.socket:
    """A Session-Sender's socket: kernel receive times, and the reply's TOS / Traffic Class."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in receive_options(family):
        sock.setsockopt(*option)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    return sock


def _exchange(
    sock: socket.socket, packet: bytes, port: int, timeout: float = 2.0
) -> tuple[bytes, int, int | None] | None:
    """Send ``packet`` to our STAMP port; (reply, T4 in ns, reply TOS) or None."""
    host = sock.getsockname()[0]
    sock.sendto(packet, (host, port))
    sock.settimeout(timeout)
    try:
        data, ancdata, _flags, _address = sock.recvmsg(65535, TRAFFIC_CLASS_ANCILLARY_SPACE)
    except TimeoutError:
        return None
    t4, _ttl = parse_ancillary(ancdata)
    assert t4 is not None
    return data, t4, received_traffic_class(ancdata)


@contextlib.contextmanager
def _stamp_server(tmp_path: Path, **settings: object) -> Iterator[ServerProcess]:
    """A twamp-server with one STAMP port (on both loopback addresses), for loopback senders."""
    port = free_port(socket.SOCK_DGRAM)
    config = server_config(
        tmp_path,
        stamp_ports=port,
        stamp_allow="127.0.0.0/8 ::1",
        **settings,
    )
    with running_server(tmp_path, config) as process:
        yield process


def _port(server: ServerProcess) -> int:
    return support.config_port(server, "stamp_ports")


@pytest.fixture(params=["stateful", "stateless"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    with _stamp_server(tmp_path, stamp_mode=request.param) as process:
        yield process


@pytest.mark.parametrize("host", HOSTS)
def test_scapy_sender_gets_every_tlv_answered(server: ServerProcess, host: str) -> None:
    stateful = "stamp_mode = stateful" in server.config_path.read_text()
    port = _port(server)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    previous: tuple[int, int, int] | None = None  # our reply seq, its T3, when we got it
    with _sender(host, tos=10 << 2) as sock:
        for seq in range(100, 104):
            values = _tlvs(seq)
            sent = Sender(
                seq=seq, ts=time.time() + NTP_UNIX_OFFSET, ssid=0x5353, tlv_objects=_scapy(values)
            )
            request = bytes(sent)
            answer = _exchange(sock, request, port)
            assert answer is not None, server.log()
            data, t4, reply_tos = answer
            assert len(data) == len(request)  # symmetric, never larger
            reply = Reflector(data)
            ours = parse_reply(data)
            assert (reply.seq_sender, reply.ssid, reply.ttl_sender) == (seq, 0x5353, 64)
            assert reply.seq == (seq - 100 if stateful else seq)
            assert int(reply.getfieldval("ts_sender")) == int(sent.getfieldval("ts"))
            assert ours.t2_ns <= ours.t3_ns <= t4
            assert [int(t.flags) for t in reply.tlv_objects] == [0] * len(values) + [0x80]
            assert ours.tlvs[-1].value == stamp_tlv.Unknown(UNKNOWN_TYPE, b"\x01\x02\x03\x04")
            cos = ours.class_of_service
            assert cos is not None and (cos.dscp1, cos.dscp2, cos.ecn, cos.rp) == (46, 10, 0, 0)
            assert reply_tos == 46 << 2  # the reply went out with the DSCP the TLV asked for
            counted = seq - 99
            assert ours.direct_measurement == DirectMeasurement(seq + 1, counted, counted)
            location = ours.location
            assert location is not None
            assert (location.destination_port, location.source_port) == (
                port,
                sock.getsockname()[1],
            )
            kinds = [sub.type for sub in location.sub_tlvs]
            six = family == socket.AF_INET6
            assert kinds == [  # each generic request answered with its family's type
                LocationSubType.SOURCE_IPV6 if six else LocationSubType.SOURCE_IPV4,
                LocationSubType.DESTINATION_IPV6 if six else LocationSubType.DESTINATION_IPV4,
            ]
            packed = socket.inet_pton(family, host)
            assert [location.answer(LocationSubType(kind)) for kind in kinds] == [packed, packed]
            information = ours.timestamp_information
            assert information is not None and information.method_in == information.method_out == 2
            follow_up = ours.follow_up
            if previous is None or not stateful:
                # No earlier reply, or a stateless reflector (RFC 8972 §4.7): all zeros.
                assert follow_up is None
                assert ours.find(FollowUpTelemetry) == FollowUpTelemetry()
            else:
                # The kernel's send time of our previous reply: after its T3, before its T4.
                assert follow_up is not None and follow_up.method == 2
                assert follow_up.seq == previous[0]
                assert previous[1] <= follow_up.t3_ns <= previous[2]
            previous = (ours.seq, ours.t3_ns, t4)
    assert server.process.poll() is None


@pytest.mark.parametrize("host", HOSTS)
def test_authenticated_stamp_with_the_keys_file_secret(tmp_path: Path, host: str) -> None:
    with _stamp_server(tmp_path, stamp_key_id="alice") as server:
        port = _port(server)
        with _sender(host) as sock:
            for seq in range(3):
                request = build_sender_packet(
                    seq,
                    time.time_ns(),
                    error_estimate=EE,
                    ssid=7,
                    tlvs=[ClassOfService(0), DirectMeasurement(seq + 1), LOCATION],
                    authenticated=True,
                    key=KEY,
                )
                answer = _exchange(sock, request, port)
                assert answer is not None, server.log()
                data = answer[0]
                assert len(data) == len(request)
                with pytest.raises(AuthenticationError):
                    parse_reply(data, authenticated=True, key=b"another key")
                reply = parse_reply(data, authenticated=True, key=KEY)
                assert (reply.seq, reply.sender_seq, reply.ssid) == (seq, seq, 7)
                assert reply.tlv_integrity is True  # the HMAC TLV the reflector sealed
                assert reply.direct_measurement == DirectMeasurement(seq + 1, seq + 1, seq + 1)
            forged = build_sender_packet(
                9, time.time_ns(), error_estimate=EE, authenticated=True, key=b"not the secret"
            )
            assert _exchange(sock, forged, port, timeout=0.5) is None
            wait_log(server, "stamp packet dropped", reason="HMAC does not match")
            unauthenticated = build_sender_packet(10, time.time_ns(), error_estimate=EE)
            assert _exchange(sock, unauthenticated, port, timeout=0.5) is None
            reason = "44 octets, shorter than a base STAMP packet (112)"
            wait_log(server, "stamp packet dropped", reason=reason)
        assert server.process.poll() is None


def _tlv(kind: int, length: int, value: bytes) -> bytes:
    return bytes((0x80, kind)) + length.to_bytes(2, "big") + value


def test_malformed_packets_are_answered_flagged_or_dropped_never_amplified(
    server: ServerProcess,
) -> None:
    port = _port(server)
    base = build_sender_packet(1, time.time_ns(), error_estimate=EE)
    answered = {
        "cut TLV header": base + b"\x80\x04",
        "TLV running past the packet": base + _tlv(4, 40, bytes(4)),
        "wrong length for the type": base + _tlv(4, 8, bytes(8)) + _tlv(5, 12, bytes(12)),
        "sub-TLV running past its TLV": base + _tlv(2, 8, bytes(4) + b"\x80\x04\x00\x10"),
        "HMAC TLV without a key": base + _tlv(8, 16, bytes(16)),
        "oversized padding": base + _tlv(1, 60000, bytes(60000)),
        "garbage after the base": base + os.urandom(301),
    }
    dropped = {
        "empty": b"",
        "one octet": b"\x01",
        "43 octets": base[:43],
    }
    with _sender("127.0.0.1") as sock:
        for name, packet in answered.items():
            answer = _exchange(sock, packet, port)
            assert answer is not None, name
            data = answer[0]
            assert len(data) == len(packet), name
            flags = [tlv.flags for tlv in parse_reply(data).tlvs]
            if name in ("cut TLV header", "TLV running past the packet"):
                assert flags == [TlvFlags.MALFORMED], name
            elif name == "wrong length for the type":
                # Processing stops at a malformed TLV; the rest comes back as sent, U still set
                # (RFC 8972 §4).
                assert flags == [TlvFlags.MALFORMED, TlvFlags.UNRECOGNIZED], name
            elif name == "HMAC TLV without a key":
                assert flags == [TlvFlags.INTEGRITY], name
        for name, packet in dropped.items():
            assert _exchange(sock, packet, port, timeout=0.3) is None, name
        assert _exchange(sock, base, port) is not None  # still serving
    for size in (0, 43):
        reason = f"{size} octets, shorter than a base STAMP packet (44)"
        wait_log(server, "stamp packet dropped", reason=reason)
    assert server.process.poll() is None


def test_stateful_numbers_count_per_session_and_ssid(tmp_path: Path) -> None:
    with _stamp_server(tmp_path, stamp_mode="stateful") as server:
        port = _port(server)
        with _sender("127.0.0.1") as one, _sender("127.0.0.1") as two:
            seen: dict[tuple[int, int], list[int]] = {}
            for round_ in range(3):
                for sock, ssid in ((one, 1), (one, 2), (two, 1)):
                    request = build_sender_packet(
                        1000 + round_, time.time_ns(), error_estimate=EE, ssid=ssid
                    )
                    answer = _exchange(sock, request, port)
                    assert answer is not None
                    reply = parse_reply(answer[0])
                    assert reply.sender_seq == 1000 + round_
                    seen.setdefault((sock.getsockname()[1], ssid), []).append(reply.seq)
            assert list(seen.values()) == [[0, 1, 2]] * 3
        assert server.process.poll() is None


def test_a_sender_above_its_address_cap_is_refused_while_another_address_is_served(
    tmp_path: Path,
) -> None:
    with _stamp_server(tmp_path, stamp_sessions_per_address=2) as server:
        port = _port(server)
        packet = build_sender_packet(0, time.time_ns(), error_estimate=EE)
        with (
            _sender("127.0.0.1") as first,
            _sender("127.0.0.1") as second,
            _sender("127.0.0.1") as third,
            _sender("127.0.0.2") as other,
        ):
            assert _exchange(first, packet, port) is not None
            assert _exchange(second, packet, port) is not None
            assert _exchange(third, packet, port, timeout=0.5) is None
            reason = "2 stamp sessions from this address already"
            wait_log(server, "stamp packet dropped", peer="127.0.0.1", reason=reason)
            other.sendto(packet, ("127.0.0.1", port))
            assert other.recv(2048)  # another address is served
            assert _exchange(first, packet, port) is not None  # admitted ones still are
            server.notify.wait_for("3 stamp sessions")  # 127.0.0.1 twice, 127.0.0.2


def test_sessions_end_after_session_timeout_and_log_their_counts(tmp_path: Path) -> None:
    with _stamp_server(tmp_path, session_timeout=0.02) as server:
        port = _port(server)
        with _sender("::1") as sock:
            for seq in range(3):
                packet = build_sender_packet(seq, time.time_ns(), error_estimate=EE, ssid=9)
                assert _exchange(sock, packet, port) is not None
            started = wait_log(server, "stamp session started", peer="::1")
            assert (started["peer_port"], started["ssid"]) == (sock.getsockname()[1], 9)
            server.notify.wait_for("1 stamp sessions")
            ended = wait_log(server, "stamp session ended", timeout=5, peer="::1")
            assert (ended["reason"], ended["reflected"], ended["dropped"]) == (
                "no packet for 1.2 s",
                3,
                0,
            )


def test_sighup_applies_stamp_allow_and_leaves_admitted_sessions_alone(tmp_path: Path) -> None:
    with _stamp_server(tmp_path) as server, _sender("127.0.0.1") as admitted:
        port = _port(server)
        packet = build_sender_packet(0, time.time_ns(), error_estimate=EE)
        assert _exchange(admitted, packet, port) is not None
        text = server.config_path.read_text()
        changed = text.replace("stamp_allow = 127.0.0.0/8 ::1", "stamp_allow = ::1")
        server.config_path.write_text(changed + "stamp_mode = stateless\n")
        server.notify.messages.clear()
        server.signal(signal.SIGHUP)
        server.notify.wait_for("READY=1")
        wait_log(server, "these settings apply only after a restart", settings="stamp_mode")
        with _sender("127.0.0.1") as newcomer:
            assert _exchange(newcomer, packet, port, timeout=0.5) is None
        reply = _exchange(admitted, packet, port)
        assert reply is not None and parse_reply(reply[0]).seq == 1  # still stateful


def test_sender_outside_stamp_allow_is_not_answered(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    config = server_config(tmp_path, stamp_ports=port, stamp_allow="127.0.0.2/32")
    with running_server(tmp_path, config) as server, _sender("127.0.0.1") as sock:
        packet = build_sender_packet(0, time.time_ns(), error_estimate=EE)
        assert _exchange(sock, packet, port, timeout=0.5) is None
        wait_log(server, "stamp packet dropped", reason="sender not in stamp_allow")
        assert not [line for line in log_lines(server) if line["event"] == "stamp session started"]


def test_tshark_decodes_a_captured_exchange_without_malformed_packets(tmp_path: Path) -> None:
    assert TSHARK is not None, "tshark is missing: `make venv` installs it (Debian package tshark)"
    if os.geteuid() != 0:
        pytest.skip("capturing on lo needs root")
    with _stamp_server(tmp_path) as server:
        port = _port(server)
        capture = tmp_path / "stamp.pcapng"
        count = 6
        tshark = capture_lo(capture, f"udp port {port}", 2 * count)
        with _sender("127.0.0.1") as sock:
            for seq in range(count):
                tlvs = [] if seq % 2 else [ClassOfService(0), DirectMeasurement(seq + 1)]
                packet = build_sender_packet(
                    100 + seq, time.time_ns(), error_estimate=EE, ssid=0x5300, tlvs=tlvs
                )
                assert _exchange(sock, packet, port) is not None
        assert tshark.wait(20) == 0
        decode = ["-d", f"udp.port=={port},twamp.test"]

        def run(*args: str) -> list[str]:
            return tshark_lines(capture, decode, *args)

        assert run("-Y", '_ws.malformed || _ws.expert.severity >= "Error"') == []
        fields = ["udp.srcport", "twamp.test.seq_number", "twamp.test.sender_seq_number"]
        rows = [row.split("\t") for row in run("-T", "fields", *(f"-e{f}" for f in fields))]
        replies = [row for row in rows if int(row[0]) == port]
        assert len(rows) == 2 * count and len(replies) == count
        # Stateful by default: our numbers from 0; the request's number copied beside them.
        assert [(int(r[1]), int(r[2])) for r in replies] == [(n, 100 + n) for n in range(count)]


#: A Session-Sender inside the namespace (argv: port): four requests asking for Follow-Up
#: Telemetry; nft drops the server's second reply on its way out, so that its send fails.
_FAILED_SEND_SENDER = """
import json, socket, subprocess, sys, time
from twamp_common.stamp import build_sender_packet, parse_reply
from twamp_common.stamp_tlv import FollowUpTelemetry
from twamp_common.timestamp import ErrorEstimate
from twamp_common.udp_options import ANCILLARY_SPACE, parse_ancillary, receive_options

port = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for option in receive_options(socket.AF_INET):
    sock.setsockopt(*option)
sock.settimeout(1.0)
rows = []
for seq in range(4):
    if seq == 1:
        subprocess.run(["nft", "add", "rule", "inet", "test", "out", "udp", "sport", str(port),
                        "drop"], check=True)
    packet = build_sender_packet(seq, time.time_ns(), error_estimate=ErrorEstimate(True, 0, 1),
                                 tlvs=[FollowUpTelemetry()])
    sock.sendto(packet, ("127.0.0.1", port))
    try:
        data, ancdata, _flags, _address = sock.recvmsg(2048, ANCILLARY_SPACE)
    except TimeoutError:
        rows.append(None)
    else:
        reply, t4 = parse_reply(data), parse_ancillary(ancdata)[0]
        follow_up = reply.follow_up
        rows.append([reply.seq, reply.t3_ns, t4, follow_up and [follow_up.seq, follow_up.t3_ns]])
    if seq == 1:
        subprocess.run(["nft", "flush", "chain", "inet", "test", "out"], check=True)
print(json.dumps(rows))
"""


def test_follow_up_telemetry_stays_right_after_a_failed_send(tmp_path: Path) -> None:
    """A reply the kernel refused leaves its transmit counter in doubt: the server restarts it,
    and the next replies still name the right earlier reply and its real send time."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    assert shutil.which("nft") is not None, "nft is missing: `make venv` installs nftables"
    namespace = f"twamp-stamp-{os.getpid()}"
    inside = ["ip", "netns", "exec", namespace]
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True, timeout=10)
        for rule in (
            "add table inet test",
            "add chain inet test out { type filter hook output priority 0; }",
        ):
            subprocess.run([*inside, "nft", *rule.split()], check=True, timeout=10)
        port = free_port(socket.SOCK_DGRAM)
        config = server_config(
            tmp_path, listen="127.0.0.1", stamp_ports=port, stamp_allow="127.0.0.1"
        )
        server = ServerProcess(tmp_path, config, prefix=inside)
        try:
            server.wait_ready()
            result = subprocess.run(
                [*inside, sys.executable, "-c", _FAILED_SEND_SENDER, str(port)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        finally:
            server.stop()
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False, timeout=10)
    first, refused, after, last = json.loads(result.stdout)
    seq0, t3_0, t4_0, before_first = first
    seq2, t3_2, t4_2, (named2, sent2) = after
    _seq3, _t3, _t4, (named3, sent3) = last
    assert before_first is None and refused is None
    assert named2 == seq0 and t3_0 <= sent2 <= t4_0  # the last reply that did leave
    assert named3 == seq2 and t3_2 <= sent3 <= t4_2  # matched by the restarted counter
    (ended,) = [line for line in log_lines(server) if line["event"] == "stamp session ended"]
    assert (ended["reason"], ended["reflected"], ended["dropped"]) == ("server stopping", 3, 1)
