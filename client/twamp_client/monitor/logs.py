"""One log line per event: journal fields under systemd, ``key=value`` text on stderr otherwise.

Under systemd every fact becomes a journal field of its own (``TWAMP_TARGET=paris``), so that
``journalctl TWAMP_TARGET=paris`` is one target's history; MESSAGE repeats them as ``key=value``
so a plain ``journalctl -u twamp-monitor`` shows them too.  ``systemd.journal`` is imported only
when stderr is the journal (JOURNAL_STREAM names fd 2, as systemd.exec(5) says).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from twamp_common.service import quoted, stderr_is_journal

IDENTIFIER = "twamp-monitor"
_PRIORITIES = {"error": 3, "warning": 4, "info": 6, "debug": 7}
_NOT_IN_FIELD = re.compile(r"[^A-Z0-9_]")


def line(event: str, facts: dict[str, Any]) -> str:
    """``event key=value ...``, values quoted only where they would be ambiguous."""
    return event + "".join(f" {name}={quoted(value)}" for name, value in facts.items())


class Log:
    """Where the daemon's events go; chosen once, at start."""

    def __init__(self) -> None:
        self._send: Callable[..., None] | None = None
        if stderr_is_journal():
            try:
                from systemd import journal  # noqa: PLC0415 - only under systemd
            except ImportError:
                pass
            else:
                self._send = journal.send

    def __call__(self, level: str, event: str, **facts: Any) -> None:
        shown = {name: value for name, value in facts.items() if value is not None}
        text = line(event, shown)
        if self._send is None:
            print(f"twamp-monitor: {level}: {text}", file=sys.stderr, flush=True)
            return
        fields = {
            "TWAMP_" + _NOT_IN_FIELD.sub("_", name.upper()): str(value)
            for name, value in shown.items()
        }
        self._send(text, PRIORITY=str(_PRIORITIES[level]), SYSLOG_IDENTIFIER=IDENTIFIER, **fields)
