"""What twamp-server and twamp-monitor share as systemd services: sd_notify(3), whether stderr
is the journal, ``key=value`` quoting, and the configuration error and its exit status.

Why here, in the sans-I/O library: the server and the client must never depend on each other,
and twamp-common is the one package both depend on, so this is the one place both daemons can
share.  It is the library's only module that talks to the system (a notification socket, the
environment, fd 2); nothing of the protocol imports it.  ``sdnotify`` is imported only when
NOTIFY_SOCKET is set: the two daemons' packages depend on it, twamp-common does not.

sd_notify: systemd starts each daemon as Type=notify (or notify-reload) and passes
NOTIFY_SOCKET; without it (a shell, a test) there is nobody to tell, and every method returns
at once.  sdnotify already turns an abstract ``@name`` address into its leading NUL and, with
debug=False, swallows every sending error: a vanished notification socket must never stop a
daemon.  The socket is non-blocking, so that a notification socket nobody reads (its queue
full) never blocks the daemon either (the monitor tells after every run): the datagram is
dropped (EAGAIN, swallowed like any other sending error) and the next status line replaces it
anyway.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import TwampError

#: The exit status of a configuration that cannot be used (sysexits.h EX_CONFIG).
EX_CONFIG = 78


class ConfigError(TwampError):
    """A configuration (or keys) file that cannot be used, said in one sentence.

    ``path`` and ``line`` locate the problem, ``key`` and ``value`` are what was written there
    (``value`` is never a secret) and ``allowed`` says what would have been accepted.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        key: str | None = None,
        value: str | None = None,
        allowed: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        subject = self.key or ""
        if self.key is not None and self.value is not None:
            shown = self.value.replace("\n", " ")
            subject = f'{self.key} = "{shown}"'
        text = ": ".join(part for part in (where, subject, self.reason) if part)
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


class InvalidValueError(Exception):
    """A value that breaks its key's rule, from a value parser; the configuration reader adds
    where it was and raises a :class:`ConfigError`."""

    def __init__(self, reason: str, allowed: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.allowed = allowed


def stderr_is_journal() -> bool:
    """Whether fd 2 still is the journal stream systemd connected (JOURNAL_STREAM names its
    ``device:inode``, systemd.exec(5)), not, say, a shell's redirection from the unit: only
    then are native journal fields worth sending."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(2)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def quoted(value: object) -> str:
    """``value`` as text, as is when it reads unambiguously after ``key=``, else JSON-quoted."""
    text = str(value)
    if text and not any(char.isspace() or char in '"=' for char in text):
        return text
    return json.dumps(text, ensure_ascii=False)


class Notifier:
    """A daemon's messages to systemd; the environment is read once, at construction."""

    def __init__(self) -> None:
        self._notifier: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify  # noqa: PLC0415 - only a daemon under systemd needs it

            self._notifier = sdnotify.SystemdNotifier(debug=False)
            if self._notifier.socket is not None:
                self._notifier.socket.setblocking(False)
        self._watchdog_interval = _watchdog_interval()

    def ready(self, status: str) -> None:
        """Startup (or a reload) is complete; ``status`` is what systemctl status shows."""
        self._send(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        """A reload begins; Type=notify-reload (systemd ≥ 253) needs MONOTONIC_USEC with it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown begins: systemd shows the unit as deactivating and expects the exit."""
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """Replace the one-line status systemctl status shows."""
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Keep-alive for WatchdogSec=; send it every watchdog_interval seconds."""
        self._send("WATCHDOG=1")

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, half of what systemd allows; None when not asked."""
        return self._watchdog_interval

    def _send(self, state: str) -> None:
        if self._notifier is not None:
            # sdnotify encodes as Latin-1 and silently drops anything else (a "→" in a status);
            # systemd reads UTF-8, so hand it the UTF-8 bytes spelled as Latin-1 characters.
            self._notifier.notify(state.encode().decode("latin-1"))


def _watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, if it is meant for us.

    WATCHDOG_PID names the process systemd watches; a child that inherited the environment
    must not ping for its parent.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
        pid = int(os.environ.get("WATCHDOG_PID", os.getpid()))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2_000_000
