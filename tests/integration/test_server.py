"""The real twamp-server process, driven over loopback by a client built on twamp_common.

Each test starts ``python -m twamp_server`` with its own configuration file and a NOTIFY_SOCKET
bound by the test, waits for READY=1 and talks TWAMP-Control over TCP and TWAMP-Test over UDP,
IPv4 and IPv6: full sessions in every mode, the session limits, hostile control streams, the
systemd notifications, reload and stop, TWAMP Light, and the reflector's refusals.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from support import (
    ControlClient,
    ServerProcess,
    config_port,
    free_port,
    log_lines,
    ping,
    running_server,
    sender_socket,
    server_config,
    wait_log,
)
from twamp_common import udp_options
from twamp_common.codes import Accept, Mode
from twamp_common.control_messages import StartNAck, StartNSessions, StopNAck, StopNSessions

SECRET = support.SECRET.encode()
HOSTS = ["127.0.0.1", "::1"]
#: The Sender Address a client behind a NAT writes: its own private address.
PRIVATE = ipaddress.ip_address("10.0.0.5")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, server_config(tmp_path)) as process:
        yield process


def greeting_modes(sock: socket.socket) -> int:
    """The Modes field of the Server-Greeting on a fresh control connection (0: go away)."""
    greeting = b""
    while len(greeting) < 64 and (data := sock.recv(64 - len(greeting))):
        greeting += data
    return int.from_bytes(greeting[12:16], "big")


def measure(
    client: ControlClient, count: int = 5, *, padding: int = 27, type_p: int = 0
) -> list[tuple]:
    """One session: request, start, ``count`` packets, stop; the replies."""
    authenticated = bool(client.control.mode & (Mode.AUTHENTICATED | Mode.ENCRYPTED))
    with client.test_socket() as udp:
        accepted = client.request(udp.getsockname()[1], padding=padding, type_p=type_p)
        assert accepted.accept == Accept.OK, accepted
        assert client.start().accept == Accept.OK
        protection = client.control.test_protection(accepted.sid)
        assert (protection is not None) == authenticated
        replies = [
            ping(udp, (client.host, accepted.port), seq, padding=padding, protection=protection)
            for seq in range(count)
        ]
        client.stop()
    return replies


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(
    "mode", [Mode.UNAUTHENTICATED, Mode.AUTHENTICATED, Mode.ENCRYPTED, Mode.MIXED]
)
def test_full_session(server: ServerProcess, host: str, mode: Mode) -> None:
    with ControlClient(host, config_port(server)) as client:
        secret = None if mode == Mode.UNAUTHENTICATED else SECRET
        start = client.set_up(mode, b"alice" if secret else b"", secret)
        assert start.accept == Accept.OK
        padding = 64 if mode in (Mode.AUTHENTICATED, Mode.ENCRYPTED) else 27
        before = time.time_ns()
        replies = measure(client, padding=padding)
    assert all(reply is not None for reply in replies)
    for seq, (packet, t4, ttl) in enumerate(replies):  # type: ignore[misc]
        assert packet.seq == seq  # the reflector's own counter, from 0
        assert packet.sender_seq == seq
        assert packet.sender_ttl == 64  # Linux's default TTL of what we sent
        assert ttl == 255  # the reflector sends with TTL 255
        assert packet.receive_timestamp <= packet.timestamp  # T2 <= T3
        assert packet.sender_error_estimate == 0x8001
        assert packet.error_estimate & 0xFF != 0  # multiplier never 0
        assert before <= t4
    line = wait_log(server, "session ended", reflected=5)
    assert line["peer"] == host
    assert line["bad_hmac"] == 0


def test_reply_has_the_request_size(server: ServerProcess) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as udp:
            accepted = client.request(udp.getsockname()[1], padding=100)
            client.start()
            udp.sendto(bytes(14 + 100), ("127.0.0.1", accepted.port))
            assert len(udp.recv(2000)) == 114
            udp.sendto(bytes(14), ("127.0.0.1", accepted.port))  # no padding: the RFC minimum
            assert len(udp.recv(2000)) == 41


def test_nothing_is_reflected_before_start_or_to_strangers(server: ServerProcess) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as udp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            accepted = client.request(udp.getsockname()[1])
            assert ping(udp, ("127.0.0.1", accepted.port), 0, timeout=0.3) is None
            client.start()
            other.bind(("127.0.0.2", 0))
            other.settimeout(0.3)
            other.sendto(bytes(41), ("127.0.0.1", accepted.port))
            with pytest.raises(TimeoutError):
                other.recv(100)
            assert ping(udp, ("127.0.0.1", accepted.port), 1) is not None


def test_sender_behind_nat_is_latched_to_its_real_port(server: ServerProcess) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as announced, client.test_socket() as real:
            accepted = client.request(announced.getsockname()[1], sender_address=PRIVATE)
            client.start()
            reply = ping(real, ("127.0.0.1", accepted.port), 0)
            assert reply is not None
            assert ping(real, ("127.0.0.1", accepted.port), 1) is not None
            # The announced port is no longer the session's: nobody else can take it over.
            assert ping(announced, ("127.0.0.1", accepted.port), 2, timeout=0.3) is None


def test_only_sessions_without_packets_can_be_latched(server: ServerProcess) -> None:
    """A session that already hears from its announced port keeps it; a packet from an unknown
    port goes to the session that has heard nothing yet."""
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with (
            client.test_socket() as direct,
            client.test_socket() as announced,
            client.test_socket() as translated,
        ):
            first = client.request(direct.getsockname()[1])
            second = client.request(announced.getsockname()[1], sender_address=PRIVATE)
            assert first.port == second.port
            client.start()
            assert ping(direct, ("127.0.0.1", first.port), 0) is not None
            reply = ping(translated, ("127.0.0.1", first.port), 0)
            assert reply is not None and reply[0].seq == 0  # the second session's first reply
            reply = ping(direct, ("127.0.0.1", first.port), 1)
            assert reply is not None and reply[0].seq == 1  # the first session, undisturbed


def test_dscp_from_type_p(server: ServerProcess) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as udp:
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
            accepted = client.request(udp.getsockname()[1], type_p=46 << 24)
            client.start()
            udp.sendto(bytes(41), ("127.0.0.1", accepted.port))
            _data, ancdata, _flags, _addr = udp.recvmsg(100, 256)
    tos = [data[0] for level, kind, data in ancdata if kind == socket.IP_TOS]
    assert tos == [46 << 2]


def test_max_sessions_gives_accept_5_and_frees_on_stop(tmp_path: Path) -> None:
    config = server_config(tmp_path, max_sessions=2)
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        with ControlClient("127.0.0.1", port) as first:
            first.set_up()
            assert first.request(40001).accept == Accept.OK
            assert first.request(40002).accept == Accept.OK
            with ControlClient("127.0.0.1", port) as second:
                second.set_up()
                refused = second.request(40003)
                assert refused.accept == Accept.TEMPORARY_RESOURCE_LIMIT
                assert refused.port == 0  # a refusal suggests no alternate port
                wait_log(server, "session refused", accept=5)
                first.start()
                first.stop()  # Timeout 1 s: the slots free once it passes
                deadline = time.monotonic() + 5
                while second.request(40004).accept != Accept.OK:
                    assert time.monotonic() < deadline, "slots never freed after Stop-Sessions"
                    time.sleep(0.2)


@pytest.mark.parametrize(
    ("modes", "offered"),
    [("unauthenticated", 0b1_0001), ("unauthenticated, authenticated, encrypted, mixed", 0b1_1111)],
)
def test_greeting_offers_only_what_is_implemented(tmp_path: Path, modes: str, offered: int) -> None:
    """The configured security bits plus bit 4 (Individual Session Control); nothing else."""
    with (
        running_server(tmp_path, server_config(tmp_path, modes=modes)) as server,
        socket.create_connection(("127.0.0.1", config_port(server)), timeout=5) as sock,
    ):
        assert greeting_modes(sock) == offered


def test_every_greeting_has_a_fresh_salt_and_challenge(server: ServerProcess) -> None:
    greetings = []
    for _ in range(2):
        with ControlClient("127.0.0.1", config_port(server)) as client:
            client.set_up()
            greetings.append(client.greeting)
    first, second = greetings
    assert first is not None and second is not None
    assert first.salt != second.salt
    assert first.challenge != second.challenge


@pytest.mark.parametrize("field", ["conf_sender", "conf_receiver"])
def test_conf_sender_or_receiver_set_is_answered_with_accept_3(
    server: ServerProcess, field: str
) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        refused = client.request(40001, **{field: 1})
        assert refused.accept == Accept.NOT_SUPPORTED
        assert refused.port == 0
        assert client.request(40001).accept == Accept.OK  # the connection goes on


@pytest.mark.parametrize("host", HOSTS)
def test_zero_addresses_mean_the_control_connections(server: ServerProcess, host: str) -> None:
    unspecified = ipaddress.ip_address("::" if ":" in host else "0.0.0.0")
    with ControlClient(host, config_port(server)) as client:
        client.set_up()
        with client.test_socket() as udp:
            accepted = client.request(
                udp.getsockname()[1], sender_address=unspecified, receiver_address=unspecified
            )
            assert accepted.accept == Accept.OK
            client.start()
            assert ping(udp, (host, accepted.port), 0) is not None
    wait_log(server, "session accepted", reason="accepted")  # not taken for a NAT's address


def test_reflector_answers_until_the_stop_timeout_and_never_after(server: ServerProcess) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as udp:
            accepted = client.request(udp.getsockname()[1], timeout=1.0)
            client.start()
            reflector = ("127.0.0.1", accepted.port)
            assert ping(udp, reflector, 0) is not None
            client.stop()
            stopped = time.monotonic()
            time.sleep(0.2)  # let the server read Stop-Sessions: still well within the Timeout
            assert ping(udp, reflector, 1) is not None
            time.sleep(max(0.0, stopped + 2.5 - time.monotonic()))  # Timeout 1 s, and a margin
            assert ping(udp, reflector, 2, timeout=0.5) is None


def test_stop_n_sessions_ends_only_the_named_session_after_its_timeout(
    server: ServerProcess,
) -> None:
    """RFC 5938: with Individual Session Control, Stop-N-Sessions stops the listed session (and
    it alone) once its Timeout has passed."""
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
        with client.test_socket() as first_udp, client.test_socket() as second_udp:
            first = client.request(first_udp.getsockname()[1], timeout=1.0)
            second = client.request(second_udp.getsockname()[1], timeout=1.0)
            started = client.command(StartNSessions((first.sid, second.sid)))
            assert started == StartNAck((first.sid, second.sid))
            assert ping(first_udp, ("127.0.0.1", first.port), 0) is not None
            # The second session hears its sender first: a session that has heard nothing would
            # take the stopped one's packets as its own sender behind a NAT.
            assert ping(second_udp, ("127.0.0.1", second.port), 0) is not None
            stopped_answer = client.command(StopNSessions((first.sid,)))
            stopped = time.monotonic()
            assert stopped_answer == StopNAck((first.sid,))
            assert ping(first_udp, ("127.0.0.1", first.port), 1) is not None  # within Timeout
            time.sleep(max(0.0, stopped + 2.5 - time.monotonic()))  # Timeout 1 s, and a margin
            assert ping(first_udp, ("127.0.0.1", first.port), 2, timeout=0.5) is None
            assert ping(second_udp, ("127.0.0.1", second.port), 1) is not None


def test_session_timeout_frees_silent_sessions(tmp_path: Path) -> None:
    config = server_config(tmp_path, max_sessions=1, session_timeout=0.02)  # 1.2 s
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        with ControlClient("127.0.0.1", port) as client:
            client.set_up()
            assert client.request(40001).accept == Accept.OK
            assert client.request(40002).accept == Accept.TEMPORARY_RESOURCE_LIMIT
            line = wait_log(server, "session ended", timeout=5)
            assert "REFWAIT" in str(line["reason"])
            assert client.request(40003).accept == Accept.OK


def test_wrong_key_closes_only_that_connection(server: ServerProcess) -> None:
    port = config_port(server)
    with ControlClient("127.0.0.1", port) as good:
        good.set_up(Mode.ENCRYPTED, b"alice", SECRET)
        with good.test_socket() as udp:
            accepted = good.request(udp.getsockname()[1], padding=64)
            good.start()
            protection = good.control.test_protection(accepted.sid)
            with ControlClient("127.0.0.1", port) as bad:
                start = bad.set_up(Mode.ENCRYPTED, b"alice", b"wrong")
                assert start.accept == Accept.FAILURE
                assert bad.tcp.recv(100) == b""  # closed by the server
            # Another address: this one is backed off for a second after its failure.
            with ControlClient("127.0.0.1", port, source="127.0.0.3") as unknown:
                assert (
                    unknown.set_up(Mode.AUTHENTICATED, b"mallory", SECRET).accept == Accept.FAILURE
                )
            reply = ping(udp, ("127.0.0.1", accepted.port), 0, padding=64, protection=protection)
            assert reply is not None
    wait_log(server, "control connection refused", reason="authentication failed")


@pytest.mark.parametrize(
    "stream",
    [
        b"\x00\x00\x00\x01" + bytes(160) + b"\xff" * 200,  # set-up, then garbage
        b"\x00\x00\x00\x01" + bytes(160) + b"\x05" + bytes(50),  # truncated request
        b"\x00\x00\x00\x01" + bytes(160) + b"\x04" + bytes(31),  # an OWAMP-only command
    ],
)
def test_hostile_streams_close_only_their_connection(server: ServerProcess, stream: bytes) -> None:
    port = config_port(server)
    with ControlClient("127.0.0.1", port) as good:
        good.set_up()
        with good.test_socket() as udp:
            accepted = good.request(udp.getsockname()[1])
            good.start()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as hostile:
                assert len(hostile.recv(64)) == 64  # the greeting
                hostile.sendall(stream)
                hostile.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := hostile.recv(4096):
                    data += chunk
                assert len(data) in (48, 48 + 48)  # Server-Start, maybe an Accept-Session
            assert ping(udp, ("127.0.0.1", accepted.port), 0) is not None
    assert server.process.poll() is None


def test_unknown_command_is_answered_with_accept_3(server: ServerProcess) -> None:
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        client.tcp.sendall(b"\x04" + bytes(31))  # OWAMP's Fetch-Session
        client.tcp.settimeout(5)
        answer = client.tcp.recv(100)
        assert len(answer) == 48 and answer[0] == Accept.NOT_SUPPORTED
        assert client.tcp.recv(100) == b""  # then the server closes
    wait_log(server, "control connection ended", outcome="unknown command 4: answered Accept 3")


def test_slow_drip_is_served(server: ServerProcess) -> None:
    port = config_port(server)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as drip:
        assert len(drip.recv(64)) == 64
        for octet in b"\x00\x00\x00\x01" + bytes(160):
            drip.send(bytes([octet]))
        start = drip.recv(48)
        assert len(start) == 48 and start[15] == Accept.OK


def test_idle_control_connection_times_out(tmp_path: Path) -> None:
    """SERVWAIT (control_timeout): an idle connection with no session running is closed."""
    with running_server(tmp_path, server_config(tmp_path, control_timeout=1)) as server:
        with ControlClient("127.0.0.1", config_port(server)) as idle:
            idle.set_up()
            idle.tcp.settimeout(5)
            started = time.monotonic()
            assert idle.tcp.recv(100) == b""
            assert 0.9 < time.monotonic() - started < 4
        wait_log(server, "control connection ended", outcome="idle (no session, idle_timeout)")
        with socket.create_connection(("127.0.0.1", config_port(server)), timeout=5) as mute:
            assert len(mute.recv(64)) == 64  # the greeting, then nothing from the client
            assert mute.recv(100) == b""
        wait_log(server, "control connection ended", outcome="timed out (set-up)")


def test_servwait_waits_while_a_session_runs_and_resumes_after_refwait(tmp_path: Path) -> None:
    """RFC 5357 §3.1: SERVWAIT is suspended while sessions run and resumes once REFWAIT (here
    session_timeout = 0.03 minutes, 1.8 s) has ended them."""
    config = server_config(tmp_path, control_timeout=1, session_timeout=0.03)
    with running_server(tmp_path, config) as server:
        with ControlClient("127.0.0.1", config_port(server)) as client:
            client.set_up()
            assert client.request(40020).accept == Accept.OK
            client.start()
            started = time.monotonic()
            client.tcp.settimeout(10)
            assert client.tcp.recv(100) == b""
            assert 1.8 < time.monotonic() - started < 6
        wait_log(server, "session ended", reason="no packet for 1.8 s (REFWAIT)")
        wait_log(server, "control connection ended", outcome="idle (no session, idle_timeout)")


def test_max_connections_turns_away_the_one_too_many(tmp_path: Path) -> None:
    with running_server(tmp_path, server_config(tmp_path, max_connections=2)) as server:
        port = config_port(server)
        first = socket.create_connection(("127.0.0.1", port), timeout=5)
        second = socket.create_connection(("127.0.0.1", port), timeout=5)
        for served in (first, second):
            assert greeting_modes(served) != 0  # modes offered
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert greeting_modes(third) == 0  # RFC 4656: Modes 0, go away
            assert third.recv(100) == b""
        wait_log(server, "control connection ended", outcome="refused: max_connections (2) reached")
        first.close()
        wait_log(server, "control connection ended", outcome="closed by client")
        with ControlClient("127.0.0.1", port) as again:
            assert again.set_up().accept == Accept.OK
        second.close()


def test_max_connections_per_client_turns_away_only_that_client(tmp_path: Path) -> None:
    config = server_config(tmp_path, max_connections_per_client=2)
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        first = socket.create_connection(("127.0.0.1", port), timeout=5)
        second = socket.create_connection(("127.0.0.1", port), timeout=5)
        for served in (first, second):
            assert greeting_modes(served) != 0
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert greeting_modes(third) == 0
            assert third.recv(100) == b""
        wait_log(
            server,
            "control connection ended",
            peer="127.0.0.1",
            outcome="refused: max_connections_per_client (2) reached",
        )
        # Another client address still has its own two slots.
        other = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
        )
        assert greeting_modes(other) != 0
        first.close()
        wait_log(server, "control connection ended", peer="127.0.0.1", outcome="closed by client")
        with ControlClient("127.0.0.1", port) as again:
            assert again.set_up().accept == Accept.OK
        second.close()
        other.close()


def test_sighup_applies_a_new_connections_per_client_limit(tmp_path: Path) -> None:
    config = server_config(tmp_path, max_connections_per_client=1)
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as first:
            assert greeting_modes(first) != 0
            with socket.create_connection(("127.0.0.1", port), timeout=5) as refused:
                assert greeting_modes(refused) == 0
            server.config_path.write_text(
                config.replace("max_connections_per_client = 1", "max_connections_per_client = 2")
            )
            server.notify.messages.clear()
            server.signal(signal.SIGHUP)
            server.notify.wait_for("RELOADING=1")
            server.notify.wait_for("READY=1")
            with ControlClient("127.0.0.1", port) as second:
                assert second.set_up().accept == Accept.OK


def test_one_sender_port_serves_one_session(server: ServerProcess) -> None:
    """Two sessions from the same sender port to the same reflector port could not be told
    apart: the second is refused."""
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        assert client.request(40010).accept == Accept.OK
        assert client.request(40010).accept == Accept.FAILURE
        assert client.request(40011).accept == Accept.OK


def test_systemd_notifications(tmp_path: Path) -> None:
    config = server_config(tmp_path)
    process = ServerProcess(tmp_path, config, env={"WATCHDOG_USEC": "200000"})
    try:
        process.wait_ready()
        assert "STATUS=" in process.notify.wait_for("READY=1")
        assert "sessions" in process.notify.wait_for("STATUS=")
        process.notify.wait_for("WATCHDOG=1", timeout=3)
        process.signal(signal.SIGHUP)
        process.notify.wait_for("RELOADING=1")
        assert process.process.poll() is None
        process.signal(signal.SIGTERM)
        process.notify.wait_for("STOPPING=1")
        assert process.process.wait(10) == 0
    finally:
        process.stop()


def test_a_notify_socket_nobody_reads_does_not_stop_the_server(tmp_path: Path) -> None:
    """A notification socket that is never read, its queue (net.unix.max_dgram_qlen datagrams)
    filled before the server starts: READY=1 and every STATUS= after it must be dropped, never
    waited for (a blocking send once stopped the event loop)."""
    path = str(tmp_path / "unread.sock")
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unread,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler,
    ):
        unread.bind(path)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                filler.sendto(b"STATUS=filler", path)
        server = ServerProcess(tmp_path, server_config(tmp_path), env={"NOTIFY_SOCKET": path})
        try:
            port = config_port(server)
            deadline = time.monotonic() + 15
            while True:  # READY=1 went nowhere: wait for the port instead
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, server.log()
                    time.sleep(0.1)
            time.sleep(1.5)  # a status update or two more
            with ControlClient("127.0.0.1", port) as client:
                assert client.set_up().accept == Accept.OK
                assert all(reply is not None for reply in measure(client))
            assert server.process.poll() is None
        finally:
            server.stop()


def test_sighup_applies_a_new_limit(tmp_path: Path) -> None:
    config = server_config(tmp_path, max_sessions=1)
    with (
        running_server(tmp_path, config) as server,
        ControlClient("127.0.0.1", config_port(server)) as client,
    ):
        client.set_up()
        assert client.request(40001).accept == Accept.OK
        assert client.request(40002).accept == Accept.TEMPORARY_RESOURCE_LIMIT
        raised = config.replace("max_sessions = 1", "max_sessions = 2")
        server.config_path.write_text(raised.replace("per_client = 1", "per_client = 2"))
        server.notify.messages.clear()
        server.signal(signal.SIGHUP)
        server.notify.wait_for("RELOADING=1")
        server.notify.wait_for("READY=1")
        assert client.request(40003).accept == Accept.OK
        wait_log(server, "configuration reloaded", max_sessions=2)


def test_a_bad_reload_keeps_the_running_configuration(tmp_path: Path) -> None:
    with running_server(tmp_path, server_config(tmp_path)) as server:
        port = config_port(server)
        server.config_path.write_text("max_sessions = lots\n")
        server.signal(signal.SIGHUP)
        wait_log(server, "reload failed; keeping the running configuration")
        with ControlClient("127.0.0.1", port) as client:
            assert client.set_up().accept == Accept.OK


def test_sigterm_ends_sessions_and_exits_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, server_config(tmp_path))
    server.wait_ready()
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        client.request(40001)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
        assert time.monotonic() - started < 6
    server.stop()
    assert any(line.get("reason") == "control connection closed" for line in log_lines(server))


def test_bad_config_stops_before_binding(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "bad.conf"
    config.write_text(f"control_port = {port}\nmax_sessions = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "twamp_server", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 78
    assert f"{config}:2" in result.stderr
    assert "max_sessions" in result.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing was bound


def test_check_config(tmp_path: Path) -> None:
    good = tmp_path / "good.conf"
    good.write_text(
        "control_port = 862\ntest_port = 863\nmax_sessions = 100\nsession_timeout = 5\n"
    )
    run = [sys.executable, "-m", "twamp_server", "--check-config", "--config"]
    result = subprocess.run([*run, str(good)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("control_port = 99999\n")
    result = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 78
    assert "control_port" in result.stderr and "99999" in result.stderr


def test_twamp_light_reflects_for_allowed_peers_only(tmp_path: Path) -> None:
    light = free_port(socket.SOCK_DGRAM)
    config = server_config(tmp_path, light_ports=light, light_allow="127.0.0.1/32")
    with running_server(tmp_path, config):
        with sender_socket("127.0.0.1") as allowed:
            replies = [ping(allowed, ("127.0.0.1", light), seq) for seq in range(3)]
        assert [reply[0].seq for reply in replies if reply] == [0, 1, 2]
        assert [reply[0].sender_seq for reply in replies if reply] == [0, 1, 2]
        with sender_socket("127.0.0.2") as stranger:
            assert ping(stranger, ("127.0.0.1", light), 0, timeout=0.3) is None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tiny:
            tiny.bind(("127.0.0.1", 0))
            tiny.settimeout(0.3)
            tiny.sendto(bytes(14), ("127.0.0.1", light))  # a reply would be larger: none
            with pytest.raises(TimeoutError):
                tiny.recv(100)


def test_sessions_come_and_go_while_packets_flow(server: ServerProcess) -> None:
    """The control side opens and closes ports and sessions while the reflector thread is busy
    with another session: nothing is lost, nothing crashes."""
    port = config_port(server)
    stop = threading.Event()
    counts = {"sent": 0, "back": 0}

    def flow(udp: socket.socket, destination: tuple[str, int]) -> None:
        seq = 0
        while not stop.is_set():
            counts["back"] += ping(udp, destination, seq, timeout=1.0) is not None
            counts["sent"] += 1
            seq += 1

    with ControlClient("127.0.0.1", port) as steady, steady.test_socket() as udp:
        steady.set_up()
        accepted = steady.request(udp.getsockname()[1])
        steady.start()
        flowing = threading.Thread(target=flow, args=(udp, ("127.0.0.1", accepted.port)))
        flowing.start()
        try:
            for _ in range(20):
                with ControlClient("127.0.0.1", port) as brief, brief.test_socket() as own:
                    brief.set_up()
                    wanted = free_port(socket.SOCK_DGRAM)
                    answer = brief.request(own.getsockname()[1], receiver_port=wanted)
                    assert answer.accept == Accept.OK and answer.port == wanted
                    brief.start()
                    assert ping(own, ("127.0.0.1", wanted), 0) is not None
        finally:
            stop.set()
            flowing.join()
    assert counts["sent"] > 20 and counts["back"] == counts["sent"]
    assert server.process.poll() is None


def test_a_port_outside_test_ports_is_not_bound(tmp_path: Path) -> None:
    """Port squatting: a client asking for any port of the host gets test_port instead, so it
    cannot make the server hold ports that other programs need."""
    wanted = free_port(socket.SOCK_DGRAM)
    allowed = (61000, 61099)
    assert not allowed[0] <= wanted <= allowed[1]
    config = server_config(tmp_path, test_ports="61000-61099")
    with running_server(tmp_path, config) as server:
        test_port = config_port(server, "test_port")
        with ControlClient("127.0.0.1", config_port(server)) as client:
            client.set_up()
            with client.test_socket() as udp:
                answer = client.request(udp.getsockname()[1], receiver_port=wanted)
                assert answer.accept == Accept.OK and answer.port == test_port
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                    other.bind(("127.0.0.1", wanted))  # still free for its owner
                in_range = next(
                    port
                    for port in range(allowed[0], allowed[1] + 1)
                    if _udp_free("127.0.0.1", port)
                )
                answer = client.request(udp.getsockname()[1], receiver_port=in_range)
                assert answer.accept == Accept.OK and answer.port == in_range


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def test_one_client_holding_unstarted_sessions_does_not_refuse_others(tmp_path: Path) -> None:
    """Session exhaustion: with the default max_sessions_per_client (a tenth of max_sessions)
    a client that requests every session it can and never starts them leaves room for others."""
    config = server_config(tmp_path, max_sessions=20).replace("max_sessions_per_client = 20\n", "")
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        with ControlClient("127.0.0.1", port, source="127.0.0.2") as hog:
            hog.set_up()
            answers = [hog.request(41000 + index).accept for index in range(20)]
            assert answers == [Accept.OK] * 2 + [Accept.TEMPORARY_RESOURCE_LIMIT] * 18
            wait_log(server, "session refused", reason="max_sessions_per_client (2) reached")
            with ControlClient("127.0.0.1", port) as honest:
                honest.set_up()
                replies = measure(honest)
    assert all(reply is not None for reply in replies)


def test_many_addresses_of_one_network_do_not_take_every_session(tmp_path: Path) -> None:
    """Session exhaustion from one network: ten addresses of 127.0.0.0/24 request sessions and
    never start them; with the defaults (a tenth of max_sessions per client, four clients'
    worth per network) the network stops at 16 and a client of another network is served."""
    config = server_config(tmp_path, max_sessions=40).replace("max_sessions_per_client = 40\n", "")
    with running_server(tmp_path, config) as server, contextlib.ExitStack() as stack:
        port = config_port(server)
        answers = []
        for host in range(2, 12):
            hog = stack.enter_context(ControlClient("127.0.0.1", port, source=f"127.0.0.{host}"))
            hog.set_up()
            answers += [hog.request(41000 + 10 * host + index).accept for index in range(4)]
        assert answers == [Accept.OK] * 16 + [Accept.TEMPORARY_RESOURCE_LIMIT] * 24
        wait_log(server, "session refused", reason="max_sessions_per_network (16) reached")
        with ControlClient("127.0.0.1", port, source="127.0.1.1") as honest:
            honest.set_up()
            assert all(reply is not None for reply in measure(honest))


def _dscp_of_reply(sock: socket.socket) -> int:
    """The DSCP of the next datagram on ``sock`` (IP_RECVTOS must be on)."""
    _data, ancdata, _flags, _address = sock.recvmsg(2000, udp_options.TRAFFIC_CLASS_ANCILLARY_SPACE)
    dscp = udp_options.received_dscp(ancdata)
    assert dscp is not None
    return dscp


def test_twamp_light_table_cap_dscp_short_requests_and_shutdown(tmp_path: Path) -> None:
    """One host using many source ports cannot fill the Light table; replies keep the request's
    DSCP; short requests are dropped with a logged reason (or reflected when enabled); Light
    senders still open at shutdown are logged."""
    light = free_port(socket.SOCK_DGRAM)
    config = server_config(
        tmp_path,
        light_ports=light,
        light_allow="127.0.0.0/8",
        light_senders_per_address=3,
        max_sessions=2,  # a table of 20 Light senders
        status_interval=60,  # nobody reads STATUS= during this long test: do not fill the queue
    )
    server = ServerProcess(tmp_path, config)
    try:
        server.wait_ready()
        hog = [sender_socket("127.0.0.2") for _ in range(40)]
        try:
            answered = sum(
                ping(sock, ("127.0.0.1", light), 0, timeout=0.3) is not None for sock in hog
            )
        finally:
            for sock in hog:
                sock.close()
        assert answered == 3
        wait_log(server, "light packet dropped", reason="3 light senders from this address already")
        with sender_socket("127.0.0.1") as honest:
            honest.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 46 << 2)
            for level, option, value in udp_options.traffic_class_receive_options(socket.AF_INET):
                honest.setsockopt(level, option, value)
            honest.sendto(bytes(41), ("127.0.0.1", light))
            assert _dscp_of_reply(honest) == 46  # EF, copied
            honest.sendto(bytes(14), ("127.0.0.1", light))  # twampy's default: no reply
            with pytest.raises(TimeoutError):
                honest.settimeout(0.3)
                honest.recv(100)
        wait_log(
            server,
            "light packet dropped",
            reason="14 octets, shorter than the reply (41); light_short_requests is off",
        )
    finally:
        server.stop()
    ended = [line for line in log_lines(server) if line.get("event") == "light session ended"]
    assert {line["reason"] for line in ended} == {"server stopping"}
    assert len(ended) == 4


def test_twamp_light_short_requests_when_enabled(tmp_path: Path) -> None:
    light = free_port(socket.SOCK_DGRAM)
    config = server_config(
        tmp_path, light_ports=light, light_allow="127.0.0.1/32", light_short_requests="yes"
    )
    with running_server(tmp_path, config), sender_socket("127.0.0.1") as short:
        short.sendto(bytes(14), ("127.0.0.1", light))
        assert len(short.recv(100)) == 41


def test_network_strings_are_escaped_and_key_id_logged_only_when_secure(
    server: ServerProcess,
) -> None:
    """Log injection: a KeyID with ESC, BEL and NUL is escaped; in unauthenticated mode the
    KeyID the client sent is not logged at all."""
    hostile = b"\x1b[31mro\x00ot\x07"
    with ControlClient("127.0.0.1", config_port(server)) as client:
        start = client.set_up(Mode.AUTHENTICATED, hostile, b"wrong")
        assert start.accept != Accept.OK
    line = wait_log(server, "control connection refused")
    assert line["key_id"] == "\\x1b[31mro\\x00ot\\x07"
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.tcp.recv(64)
        setup = bytearray(164)
        setup[3] = int(Mode.UNAUTHENTICATED)
        setup[4 : 4 + len(hostile)] = hostile
        client.tcp.sendall(bytes(setup))
        assert len(client.tcp.recv(48)) == 48
    wait_log(server, "control connection set up")
    assert "\x1b" not in server.log() and "\x07" not in server.log()
    assert all(
        "key_id" not in line for line in log_lines(server) if line.get("mode") == "unauthenticated"
    )


def test_repeated_lines_from_one_peer_are_suppressed(server: ServerProcess) -> None:
    """Log floods: one client failing set-up over and over gets a bounded number of lines and
    a "suppressed N" count."""
    port = config_port(server)
    deadline = time.monotonic() + 20
    for _ in range(40):
        assert time.monotonic() < deadline
        with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
            bad.recv(64)
            bad.sendall(bytes([0, 0, 0, 0x40]) + bytes(160))  # a mode nobody offers
            bad.recv(48)
    time.sleep(0.3)
    refused = [
        line for line in log_lines(server) if line.get("event") == "control connection refused"
    ]
    assert 10 <= len(refused) < 20
    with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
        time.sleep(1.1)  # one more line is earned
        late.recv(64)
        late.sendall(bytes([0, 0, 0, 0x40]) + bytes(160))
        late.recv(48)
    line = wait_log(server, "control connection refused", suppressed=40 - len(refused))
    assert line["peer"] == "127.0.0.1"


def test_shutdown_is_logged_as_the_servers_doing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, server_config(tmp_path))
    try:
        server.wait_ready()
        with ControlClient("127.0.0.1", config_port(server)) as client:
            client.set_up()
            server.signal(signal.SIGTERM)
            assert server.process.wait(10) == 0
    finally:
        server.stop()
    outcomes = [
        line["outcome"]
        for line in log_lines(server)
        if line.get("event") == "control connection ended"
    ]
    assert outcomes == ["closed by server: server stopping"]


def test_many_addresses_of_one_network_do_not_lock_others_out(tmp_path: Path) -> None:
    """Connection lockout: 63 loopback addresses of 127.0.0.0/24 open connections until the
    server refuses them; the per-network limit keeps room for a client of another network,
    and connections that hold no session are closed after idle_timeout, not SERVWAIT."""
    config = server_config(
        tmp_path,
        max_connections=100,
        max_idle_connections=100,
        reserved_connections=0,
        idle_timeout=3,
        status_interval=60,
    )
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        held: list[socket.socket] = []
        try:
            for host in range(2, 65):  # 127.0.0.2 ... 127.0.0.64: 63 addresses, 2 each
                for _ in range(2):
                    sock = socket.create_connection(
                        ("127.0.0.1", port), timeout=5, source_address=(f"127.0.0.{host}", 0)
                    )
                    held.append(sock)
            served = sum(greeting_modes(sock) != 0 for sock in held)
            assert served == 64  # max_connections_per_network's default, of 126
            wait_log(
                server,
                "control connection ended",
                outcome="refused: max_connections_per_network (64) reached for 127.0.0.0/24",
            )
            with ControlClient("127.0.0.1", port, source="127.0.1.1") as honest:
                assert honest.set_up().accept == Accept.OK
                assert all(reply is not None for reply in measure(honest))
            started = time.monotonic()
            for sock in held:
                sock.settimeout(10)
                while sock.recv(100):
                    pass
            assert time.monotonic() - started < 8  # idle_timeout (3 s), not SERVWAIT (900 s)
        finally:
            for sock in held:
                sock.close()


def test_idle_connections_have_a_smaller_budget_and_newcomers_are_still_served(
    tmp_path: Path,
) -> None:
    """Connection lockout with idle connections: 30 addresses of 127.0.0.0/24 connect and ask
    for nothing; only max_idle_connections of them are held, and a client of a network that
    holds nothing is served although the idle budget is full."""
    config = server_config(
        tmp_path, max_connections=40, max_idle_connections=10, idle_timeout=30, status_interval=60
    )
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        held: list[socket.socket] = []
        try:
            for host in range(2, 32):
                sock = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(f"127.0.0.{host}", 0)
                )
                held.append(sock)
            assert sum(greeting_modes(sock) != 0 for sock in held) == 10
            wait_log(
                server,
                "control connection ended",
                outcome="refused: max_idle_connections (10) reached",
            )
            with ControlClient("127.0.0.1", port, source="127.0.1.1") as honest:
                assert honest.set_up().accept == Accept.OK
                assert all(reply is not None for reply in measure(honest))
        finally:
            for sock in held:
                sock.close()


def test_the_last_slots_are_kept_for_networks_holding_none(tmp_path: Path) -> None:
    """Connection lockout with busy connections: addresses of 127.0.0.0/24 that each hold a
    session fill max_connections but the reserved slots; a client of another network still
    gets one of those."""
    config = server_config(
        tmp_path,
        max_connections=12,
        reserved_connections=2,
        max_sessions=100,
        max_sessions_per_client=10,
        status_interval=60,
    )
    with running_server(tmp_path, config) as server, contextlib.ExitStack() as stack:
        port = config_port(server)
        for host in range(2, 12):  # ten connections, each holding a session
            busy = stack.enter_context(ControlClient("127.0.0.1", port, source=f"127.0.0.{host}"))
            busy.set_up()
            assert busy.request(41000 + host).accept == Accept.OK
        with socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.12", 0)
        ) as refused:
            assert greeting_modes(refused) == 0
        wait_log(
            server,
            "control connection ended",
            outcome="refused: reserved_connections (2) kept for other networks",
        )
        with ControlClient("127.0.0.1", port, source="127.0.1.1") as honest:
            assert honest.set_up().accept == Accept.OK
            assert all(reply is not None for reply in measure(honest))


def test_no_latching_without_a_nat_in_the_request(server: ServerProcess) -> None:
    """Hijack: another user of the client's address sends first from another port; a session
    whose request showed no NAT keeps its announced port, and its sender is served."""
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as sender, client.test_socket() as intruder:
            accepted = client.request(sender.getsockname()[1])
            client.start()
            assert ping(intruder, ("127.0.0.1", accepted.port), 0, timeout=0.3) is None
            assert ping(sender, ("127.0.0.1", accepted.port), 0) is not None


def test_a_stopped_sessions_sender_cannot_take_a_new_session(tmp_path: Path) -> None:
    """NAT latching: the sender of a stopped session keeps sending after its Timeout; a new
    session of the same address waiting for its first packet does not latch onto that port
    (it belonged to another session within REFWAIT) and latches onto its own sender's."""
    with (
        running_server(tmp_path, server_config(tmp_path)) as server,
        ControlClient("127.0.0.1", config_port(server)) as client,
    ):
        client.set_up()
        with client.test_socket() as old, client.test_socket() as new:
            first = client.request(old.getsockname()[1], timeout=0.1)
            client.start()
            assert ping(old, ("127.0.0.1", first.port), 0) is not None
            client.stop()
            wait_log(server, "session ended", reason="stopped", timeout=5)
            second = client.request(40999, sender_address=PRIVATE)  # announced, behind NAT
            assert second.port == first.port
            client.start()
            for seq in range(3):  # the stale sender, still sending
                assert ping(old, ("127.0.0.1", first.port), seq, timeout=0.2) is None
            reply = ping(new, ("127.0.0.1", second.port), 0)
            assert reply is not None and reply[0].seq == 0


def test_two_sessions_behind_one_nat_do_not_swap(server: ServerProcess) -> None:
    """Two waiting sessions of one address that a packet fits equally: neither takes it (one
    of them would be the wrong one); a packet only one of them fits (by length) is latched."""
    with ControlClient("127.0.0.1", config_port(server)) as client:
        client.set_up()
        with client.test_socket() as a, client.test_socket() as b:
            one = client.request(41001, sender_address=PRIVATE, padding=27)
            two = client.request(41002, sender_address=PRIVATE, padding=27)
            three = client.request(41003, sender_address=PRIVATE, padding=100)
            assert one.port == two.port == three.port
            client.start()
            assert ping(a, ("127.0.0.1", one.port), 0, timeout=0.3) is None
            reply = ping(b, ("127.0.0.1", three.port), 0, padding=100)
            assert reply is not None and reply[0].seq == 0


def test_failed_authentications_are_backed_off_and_others_still_served(
    server: ServerProcess,
) -> None:
    """Key-derivation flood: wrong keys from many addresses of one network are refused
    without a derivation once they have failed (Accept 5); a client of another network with
    the right key is served meanwhile."""
    port = config_port(server)
    refused_fast = 0
    deadline = time.monotonic() + 20
    for attempt in range(60):
        assert time.monotonic() < deadline
        host = f"127.0.0.{2 + attempt % 20}"
        with ControlClient("127.0.0.1", port, source=host) as attacker:
            start = attacker.set_up(Mode.AUTHENTICATED, b"alice", b"wrong secret")
            assert start.accept != Accept.OK
            refused_fast += start.accept == Accept.TEMPORARY_RESOURCE_LIMIT
    assert refused_fast >= 60 - 20  # each address pays for one derivation, then waits
    lines = [
        line for line in log_lines(server) if line.get("event") == "control connection refused"
    ]
    assert any(str(line.get("reason", "")).startswith("authentication failures") for line in lines)
    with ControlClient("127.0.0.1", port, source="127.0.1.1") as honest:
        assert honest.set_up(Mode.AUTHENTICATED, b"alice", SECRET).accept == Accept.OK
        assert all(reply is not None for reply in measure(honest))


def test_the_start_line_names_the_version(server: ServerProcess) -> None:
    version = (Path(__file__).resolve().parents[2] / "VERSION").read_text().strip()
    deadline = time.monotonic() + 5  # the line follows READY=1, which the fixture waited for
    while "twamp-server ready" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    ready = [line for line in server.log().splitlines() if "twamp-server ready" in line]
    assert len(ready) == 1 and f'"version": "{version}"' in ready[0], ready


def test_test_packets_dropped_by_this_host_are_logged_and_in_the_status(tmp_path: Path) -> None:
    """A flood at the TWAMP-Test and STAMP ports while the server is stopped overfills their
    receive buffers: the server says how many the kernel dropped, which no sender can tell
    from loss on the way out."""
    stamp_port = free_port(socket.SOCK_DGRAM)
    config = server_config(tmp_path, stamp_ports=stamp_port)
    with (
        running_server(tmp_path, config) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder,
    ):
        server.process.send_signal(signal.SIGSTOP)
        try:
            for port in (config_port(server, "test_port"), stamp_port):
                for _ in range(3000):  # 24 MB, beyond the 8 MiB a forced buffer takes
                    flooder.sendto(bytes(8000), ("127.0.0.1", port))
        finally:
            server.process.send_signal(signal.SIGCONT)
        line = wait_log(server, "test packets dropped by this host", timeout=10)
        assert line["level"] == "warning"
        # More than one port's flood alone could lose: both ports were counted.
        assert 3000 < line["dropped"] == line["since_start"] < 2 * 3000, line
        status = server.notify.wait_for("dropped by this host")
        assert f"{line['since_start']} dropped by this host" in status
