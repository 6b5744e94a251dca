"""What the integration tests share: a real twamp-server process and a small client.

:class:`ServerProcess` starts ``python -m twamp_server`` with a temporary configuration and a
NOTIFY_SOCKET bound by the test, so the test sees exactly what systemd would (READY=1,
STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1).  :class:`ControlClient` is a plain blocking
TWAMP client built on ``twamp_common`` (not on the twamp-client package): the server's tests
drive the server with the protocol library alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from twamp_common.codes import Accept, Mode
from twamp_common.control import NEED_DATA, ClientCommand, ClientControl
from twamp_common.control_messages import (
    AcceptSession,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    StartAck,
    StartSessions,
    StopSessions,
)
from twamp_common.crypto import TestPacketProtection
from twamp_common.test_packets import ReflectorPacket, SenderPacket
from twamp_common.timestamp import ns_to_ntp, ns_to_ntp_interval
from twamp_common.udp_options import ANCILLARY_SPACE, parse_ancillary, receive_options

#: The twamp-client command as this test run's Python runs it.
CLIENT = [sys.executable, "-m", "twamp_client"]


def run_client(
    *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``twamp-client ARGS`` to its end: exit status, stdout and stderr as text."""
    return subprocess.run(
        [*CLIENT, *args], capture_output=True, text=True, timeout=timeout, check=False, input=stdin
    )


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the kernel just had free on ``host`` (TCP or UDP)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


#: tshark, the independent decoder of what we put on the wire (`make venv` installs it).
TSHARK = shutil.which("tshark")


def tshark_lines(capture: Path, decode: Sequence[str], *args: str) -> list[str]:
    """The non-empty lines tshark prints reading ``capture`` with ``decode`` ("-d" options)
    and ``args`` (a display filter, fields)."""
    assert TSHARK is not None, "tshark is missing: `make venv` installs it (Debian package tshark)"
    result = subprocess.run(
        [TSHARK, "-r", str(capture), *decode, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def capture_lo(capture: Path, capture_filter: str, packets: int) -> subprocess.Popen[str]:
    """tshark writing the first ``packets`` packets on lo that match ``capture_filter`` to
    ``capture``, returned once the capture really runs; ``wait()`` for it to end."""
    assert TSHARK is not None, "tshark is missing: `make venv` installs it (Debian package tshark)"
    tshark = subprocess.Popen(
        [TSHARK, "-i", "lo", "-f", capture_filter, "-c", str(packets), "-w", str(capture)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tshark.stderr is not None
    for line in tshark.stderr:  # "Capturing on 'lo'" comes before the capture really runs
        if "Capture started" in line:
            break
    return tshark


#: The shared secret of KeyID "alice" in every test server's keys file.
SECRET = "s3cret phrase for tests"


def server_config(workdir: Path, **settings: object) -> str:
    """A twamp-server configuration on free loopback ports, with a keys file holding alice's
    SECRET; ``settings`` add or override keys."""
    keys = workdir / "twamp-server.keys"
    keys.write_text(f"alice {SECRET}\n")
    keys.chmod(0o600)
    values: dict[str, object] = {
        "control_port": free_port(),
        "test_port": free_port(socket.SOCK_DGRAM),
        "listen": "127.0.0.1, ::1",
        "keys_file": keys,
        "max_sessions": 10,
        "test_ports": "any",
        "session_timeout": 5,
        "status_interval": 0.2,
    }
    values.update(settings)
    # One client per test: it may hold every session unless the test says otherwise.
    values.setdefault("max_sessions_per_client", values["max_sessions"])
    return "".join(f"{key} = {value}\n" for key, value in values.items())


def config_port(server: ServerProcess, key: str = "control_port") -> int:
    """A port from the running server's configuration file."""
    for line in server.config_path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return int(value)
    raise KeyError(key)


class NotifySocket:
    """The systemd side of sd_notify: an AF_UNIX datagram socket the daemon writes to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        """The first message (seen before or arriving now) that contains ``needle``."""
        for message in self.messages:
            if needle in message:
                return message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if needle in message:
                return message
        raise AssertionError(f"no {needle!r} from the daemon; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


#: What systemd does for a socket-activated service, as a prefix command: move the file
#: descriptors named in argv (up to the first one that is not a number) to 3, 4, …, set
#: LISTEN_FDS and LISTEN_PID (this process's pid, which exec keeps) and exec the rest.
_SOCKET_ACTIVATE = """
import fcntl, os, sys
arguments = sys.argv[1:]
count = next(index for index, arg in enumerate(arguments) if not arg.isdigit())
fds, command = [int(arg) for arg in arguments[:count]], arguments[count:]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
os.execv(command[0], command)
"""


class ServerProcess:
    """A real twamp-server process on loopback with a configuration written for the test."""

    def __init__(
        self,
        workdir: Path,
        config: str,
        *,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        handed: Sequence[socket.socket] = (),
    ) -> None:
        """``prefix`` goes before the command, e.g. ``ip netns exec NAME``; ``handed`` sockets are
        passed the way systemd's socket activation does (file descriptors 3…, LISTEN_FDS)."""
        self.workdir = workdir
        self.config_path = workdir / "twamp-server.conf"
        self.config_path.write_text(config)
        self.notify = NotifySocket(workdir / "notify.sock")
        self.stderr_path = workdir / "server.log"
        environ = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        environ.pop("JOURNAL_STREAM", None)
        self._stderr = self.stderr_path.open("wb")
        self.started_ns = time.monotonic_ns()
        if handed:
            prefix = [
                *prefix,
                sys.executable,
                "-c",
                _SOCKET_ACTIVATE,
                *(str(s.fileno()) for s in handed),
            ]
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "twamp_server",
                "--config",
                str(self.config_path),
                "--log-format",
                "json",
            ],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=[sock.fileno() for sock in handed],
        )

    def wait_ready(self, timeout: float = 15.0) -> float:
        """Seconds from exec to READY=1."""
        try:
            self.notify.wait_for("READY=1", timeout)
        except AssertionError:
            raise AssertionError(f"server not ready; its log:\n{self.log()}") from None
        return (time.monotonic_ns() - self.started_ns) / 1e9

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._stderr.close()
            self.notify.close()


@contextlib.contextmanager
def running_server(workdir: Path, config: str, **kwargs: dict[str, str]) -> Iterator[ServerProcess]:
    server = ServerProcess(workdir, config, **kwargs)  # type: ignore[arg-type]
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def log_lines(server: ServerProcess) -> list[dict[str, object]]:
    """The server's JSON log lines so far; a line still being written is left for later."""
    complete = server.log().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]


def wait_log(server: ServerProcess, event: str, timeout: float = 5.0, **fields: object) -> dict:
    """The first log line of ``event`` whose fields have these values, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_lines(server):
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line {event!r} {fields}; log:\n{server.log()}")


class ControlClient:
    """A blocking TWAMP Control-Client and Session-Sender, for driving the server in tests."""

    def __init__(
        self, host: str, port: int, *, timeout: float = 5.0, source: str | None = None
    ) -> None:
        """``source``: the local address to connect and send test packets from (another
        loopback address, say, to play a second client)."""
        self.host = host
        self.source = source
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.family = family
        self.tcp = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.control = ClientControl()
        self.greeting: ServerGreeting | None = None

    def close(self) -> None:
        self.tcp.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _event(self) -> object:
        while (event := self.control.next_event()) is NEED_DATA:
            self.control.receive_data(self.tcp.recv(65536))
        return event

    def set_up(
        self, mode: Mode = Mode.UNAUTHENTICATED, key_id: bytes = b"", secret: bytes | None = None
    ) -> ServerStart:
        greeting = self._event()
        assert isinstance(greeting, ServerGreeting)
        self.greeting = greeting
        self.tcp.sendall(self.control.set_up(mode, key_id, secret))
        start = self._event()
        assert isinstance(start, ServerStart)
        return start

    def request(
        self,
        sender_port: int,
        *,
        receiver_port: int = 0,
        padding: int = 27,
        timeout: float = 1.0,
        type_p: int = 0,
        **fields: object,
    ) -> AcceptSession:
        """Request-TW-Session from this connection's addresses; ``fields`` override any other
        field of the request as sent (e.g. ``conf_sender=1``, zero addresses)."""
        local = ipaddress.ip_address(self.tcp.getsockname()[0])
        remote = ipaddress.ip_address(self.tcp.getpeername()[0])
        self.tcp.sendall(
            self.control.send(
                dataclasses.replace(
                    RequestTWSession(
                        sender_address=local,
                        receiver_address=remote,
                        sender_port=sender_port,
                        receiver_port=receiver_port,
                        padding_length=padding,
                        start_time=ns_to_ntp(time.time_ns()),
                        timeout=ns_to_ntp_interval(int(timeout * 1e9)),
                        type_p=type_p,
                    ),
                    **fields,
                )
            )
        )
        answer = self._event()
        assert isinstance(answer, AcceptSession)
        return answer

    def start(self) -> StartAck:
        self.tcp.sendall(self.control.send(StartSessions()))
        answer = self._event()
        assert isinstance(answer, StartAck)
        return answer

    def stop(self) -> None:
        self.tcp.sendall(self.control.send(StopSessions(Accept.OK, len(self.control.running))))

    def command(self, message: ClientCommand) -> object:
        """Send any command and return the server's answer (Individual Session Control)."""
        self.tcp.sendall(self.control.send(message))
        return self._event()

    def test_socket(self) -> socket.socket:
        return sender_socket(self.source or self.host)


def sender_socket(host: str) -> socket.socket:
    """A UDP socket for a Session-Sender on ``host``, with kernel timestamps and TTL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for level, option, value in receive_options(family):
        sock.setsockopt(level, option, value)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    return sock


def ping(
    sock: socket.socket,
    destination: tuple[str, int],
    seq: int,
    *,
    padding: int = 27,
    protection: TestPacketProtection | None = None,
    timeout: float = 2.0,
) -> tuple[ReflectorPacket, int, int] | None:
    """Send one sender packet and wait for its reflection: (packet, T4 ns, TTL) or None."""
    authenticated = protection is not None
    packet = SenderPacket(seq, ns_to_ntp(time.time_ns()), 0x8001, bytes(padding)).pack(
        authenticated
    )
    if protection is not None:
        packet = protection.seal_sender(packet)
    sock.sendto(packet, destination)
    sock.settimeout(timeout)
    try:
        data, ancdata, _flags, _address = sock.recvmsg(65535, ANCILLARY_SPACE)
    except TimeoutError:
        return None
    received_ns, ttl = parse_ancillary(ancdata)
    if protection is not None:
        data = protection.open_reflector(data)
    assert received_ns is not None
    return ReflectorPacket.unpack(data, authenticated), received_ns, ttl
