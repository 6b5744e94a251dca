"""sd_notify(3) for the monitor: readiness, reloads, stopping, status and the watchdog.

The same as twamp-server's notify.py (the client cannot import the server): without
NOTIFY_SOCKET (a shell, a test) there is nobody to tell and every method returns at once;
sdnotify with debug=False swallows every sending error, so a vanished socket never stops us.
"""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    """The daemon's messages to systemd; the environment is read once, at construction."""

    def __init__(self) -> None:
        self._notifier = (
            sdnotify.SystemdNotifier(debug=False) if os.environ.get("NOTIFY_SOCKET") else None
        )
        if self._notifier is not None and self._notifier.socket is not None:
            # Unlike the server, the monitor tells after every run: a reader that does not keep
            # up (a full queue) must cost a dropped STATUS, never a stalled schedule.
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
