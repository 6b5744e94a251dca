"""Logging: the format chosen for "auto", what each format writes, level filtering, redaction.

The JSON and console formats are read back from the real stderr (capfd).  "auto" is decided in
a child process whose stderr is a real file or a pseudo-terminal, as under systemd or a shell.
The journal format is checked three ways: journal_fields() as a pure function; end to end
against a datagram socket bound at /run/systemd/journal/socket inside a private mount namespace
(root only), which receives exactly what journald would; and, where journald runs, one real
entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from twamp_server import logs
from twamp_server.logs import configure_logging, get_logger, journal_fields, resolve_format


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _json_lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capfd.readouterr().err.splitlines()]


# --- resolve_format -------------------------------------------------------------------------

_PRINT_AUTO = "from twamp_server.logs import resolve_format; print(resolve_format('auto'))"


def _auto_format(stderr: int, journal_stream: str | None) -> str:
    env = {name: value for name, value in os.environ.items() if name != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    result = subprocess.run(
        [sys.executable, "-c", _PRINT_AUTO],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def _device_inode(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_dev}:{stat.st_ino}"


def test_auto_is_journal_when_journal_stream_is_stderr(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with stderr.open("w") as file:
        assert _auto_format(file.fileno(), _device_inode(stderr)) == "journal"


@pytest.mark.parametrize("journal_stream", [None, "other", "", "garbage", "1:2:3"])
def test_auto_is_json_when_stderr_is_some_other_file(
    tmp_path: Path, journal_stream: str | None
) -> None:
    stderr = tmp_path / "stderr"
    other = tmp_path / "other"
    other.touch()
    if journal_stream == "other":
        journal_stream = _device_inode(other)
    with stderr.open("w") as file:
        assert _auto_format(file.fileno(), journal_stream) == "json"


def test_auto_is_console_on_a_terminal() -> None:
    controller, terminal = os.openpty()
    try:
        assert _auto_format(terminal, None) == "console"
    finally:
        os.close(terminal)
        os.close(controller)


@pytest.mark.parametrize("fmt", ["journal", "console", "json"])
def test_explicit_formats_are_kept(fmt: str) -> None:
    assert resolve_format(fmt) == fmt


def test_unknown_format_and_level_are_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        resolve_format("xml")
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("json", "verbose")


# --- JSON and console -------------------------------------------------------------------------


def test_json_is_one_object_per_line_with_the_facts(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    structlog.contextvars.bind_contextvars(connection=7)
    log = get_logger(component="control").bind(peer="192.0.2.7")
    log.info("session started", sid="ab01", port=862)
    log.warning("second")
    first, second = _json_lines(capfd)
    timestamp = first.pop("timestamp")
    assert first == {
        "component": "control",
        "peer": "192.0.2.7",
        "sid": "ab01",
        "port": 862,
        "connection": 7,
        "event": "session started",
        "level": "info",
    }
    assert isinstance(timestamp, str)
    assert timestamp.endswith("Z")
    when = datetime.fromisoformat(timestamp)
    assert when.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)
    assert (second["event"], second["level"]) == ("second", "warning")


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["d", "i", "w", "e"]),
        ("info", ["i", "w", "e"]),
        ("warning", ["w", "e"]),
        ("error", ["e"]),
    ],
)
def test_level_filtering(capfd: pytest.CaptureFixture[str], level: str, shown: list[str]) -> None:
    configure_logging("json", level)
    log = get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [line["event"] for line in _json_lines(capfd)] == shown


def test_secrets_are_redacted_but_key_id_is_not(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "debug")
    log = get_logger(shared_secret=b"s3cret").bind(session_key=b"\x01" * 16)
    log.debug(
        "keys everywhere",
        key=b"k",
        AES_KEY="k",
        token="t",
        auth_token="t",
        passphrase="p",
        password="p",
        hmac_key="h",
        bad_hmac=3,
        hmac_key_id="h",
        key_id="alice",
        peer_key_id="bob",
        nested={"secret": "s", "mode": "authenticated"},
        mode="encrypted",
    )
    (line,) = _json_lines(capfd)
    del line["timestamp"]
    redacted = "[redacted]"
    assert line == {
        "shared_secret": redacted,
        "session_key": redacted,
        "key": redacted,
        "AES_KEY": redacted,
        "token": redacted,
        "auth_token": redacted,
        "passphrase": redacted,
        "password": redacted,
        "hmac_key": redacted,
        "bad_hmac": 3,
        "hmac_key_id": "h",
        "key_id": "alice",
        "peer_key_id": "bob",
        "nested": {"secret": redacted, "mode": "authenticated"},
        "mode": "encrypted",
        "event": "keys everywhere",
        "level": "debug",
    }


def test_redaction_leaves_the_callers_mapping_alone(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    settings = {"secret": "s"}
    get_logger().info("settings", settings=settings)
    assert _json_lines(capfd)[0]["settings"] == {"secret": "[redacted]"}
    assert settings == {"secret": "s"}


def test_json_carries_the_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        raise RuntimeError("bad state")
    except RuntimeError:
        get_logger().exception("handler failed")
    (line,) = _json_lines(capfd)
    assert line["level"] == "error"
    assert isinstance(line["exception"], str)
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: bad state")


def test_console_without_a_terminal_has_no_colours(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "info")
    get_logger(sid="ab01").info("session started", peer="192.0.2.7", token="t")
    (line,) = capfd.readouterr().err.splitlines()
    assert "\x1b[" not in line
    timestamp, rest = line.split(" ", 1)
    assert timestamp.endswith("Z")
    facts = ["peer=192.0.2.7", "sid=ab01", "token=[redacted]"]
    assert rest.split() == ["[info", "]", "session", "started", *facts]


# --- journal ----------------------------------------------------------------------------------


def test_journal_fields() -> None:
    fields = journal_fields(
        {
            "peer": "192.0.2.7",
            "peer-port": 862,
            "sid": "ab01",
            "mode": "open mode",
            "empty": "",
            "event": "session started",
            "level": "info",
        }
    )
    assert fields == {
        "MESSAGE": "session started peer=192.0.2.7 peer-port=862 sid=ab01"
        ' mode="open mode" empty=""',
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "twamp-server",
        "TWAMP_PEER": "192.0.2.7",
        "TWAMP_PEER_PORT": "862",
        "TWAMP_SID": "ab01",
        "TWAMP_MODE": "open mode",
        "TWAMP_EMPTY": "",
    }


@pytest.mark.parametrize(
    ("level", "priority"),
    [("debug", "7"), ("info", "6"), ("warning", "4"), ("error", "3"), ("critical", "2")],
)
def test_journal_priority(level: str, priority: str) -> None:
    assert journal_fields({"event": "e", "level": level})["PRIORITY"] == priority


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("_hidden", "TWAMP__HIDDEN"),
        ("9th", "TWAMP_9TH"),
        ("über", "TWAMP__BER"),
        ("a.b c", "TWAMP_A_B_C"),
        ("x" * 80, "TWAMP_" + "X" * 58),
    ],
)
def test_journal_field_names_are_valid(name: str, field: str) -> None:
    assert set(journal_fields({"event": "e", "level": "info", name: 1})) == {
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        field,
    }


def test_journal_message_ends_with_the_traceback() -> None:
    traceback = "Traceback (most recent call last):\nRuntimeError: bad"
    fields = journal_fields(
        {"peer": "192.0.2.7", "event": "failed", "level": "error", "exception": traceback}
    )
    assert fields["MESSAGE"] == f"failed peer=192.0.2.7\n{traceback}"
    assert fields["TWAMP_EXCEPTION"] == traceback


def test_journal_without_its_socket_falls_back_to_stderr(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", tmp_path / "absent")
    configure_logging("journal", "info")
    get_logger().info("session started", sid="ab01")
    warning, line = capfd.readouterr().err.splitlines()
    assert warning.split()[1:] == [
        "[warning",
        "]",
        "journal",
        "socket",
        "missing;",
        "logging",
        "to",
        "stderr",
        f"socket={tmp_path / 'absent'}",
    ]
    assert line.split()[1:] == ["[info", "]", "session", "started", "sid=ab01"]


# Run as root in a private mount namespace with a tmpfs on /run: plays journald on the socket
# libsystemd writes to, then closes it to make the next send fail.
_FAKE_JOURNALD = textwrap.dedent(
    """
    import json, os, socket
    from twamp_server.logs import configure_logging, get_logger

    os.makedirs("/run/systemd/journal")
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind("/run/systemd/journal/socket")
    configure_logging("journal", "info")
    log = get_logger(peer="192.0.2.7")
    log.debug("hidden")
    log.info("session started", sid="ab01", shared_secret="s", key_id="alice")
    journald.setblocking(False)
    received = []
    while True:
        try:
            received.append(journald.recv(65536).decode())
        except BlockingIOError:
            break
    journald.close()
    log.warning("journald gone", n=1)
    print(json.dumps(received))
    """
)


def test_journal_entries_as_journald_receives_them() -> None:
    pytest.importorskip("systemd.journal")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to put a socket at /run/systemd/journal")
    command = 'mount -n -t tmpfs tmpfs /run || exit 77; exec "$0" -c "$1"'
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", command, sys.executable, _FAKE_JOURNALD],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode == 77 or result.stderr.startswith("unshare:"):
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    (datagram,) = json.loads(result.stdout)
    assert dict(line.split("=", 1) for line in datagram.splitlines()) == {
        "MESSAGE": "session started peer=192.0.2.7 sid=ab01 shared_secret=[redacted] key_id=alice",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "twamp-server",
        "TWAMP_PEER": "192.0.2.7",
        "TWAMP_SID": "ab01",
        "TWAMP_SHARED_SECRET": "[redacted]",
        "TWAMP_KEY_ID": "alice",
    }
    assert result.stderr.splitlines() == [
        "journald gone peer=192.0.2.7 n=1 (journal: [Errno 111] Connection refused)"
    ]


@pytest.mark.skipif(not Path("/run/systemd/journal/socket").exists(), reason="no journald")
def test_one_real_journal_entry(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("systemd.journal")
    configure_logging("journal", "info")
    get_logger().info("twamp test entry", test="test_one_real_journal_entry")
    assert capfd.readouterr().err == ""
