"""Structured logging for the server: to the journal under systemd, else to stderr.

Every log call carries facts as keyword arguments (``peer=``, ``sid=``, ``mode=``).  Under
systemd they become journal fields of their own (``TWAMP_PEER=192.0.2.7``), so that
``journalctl TWAMP_PEER=192.0.2.7`` finds one peer's history; on a terminal they are rendered
for reading, and anywhere else as one JSON object per line for machines.

Whatever the output, values under names that look like key material are replaced before any
renderer sees them: a shared secret must not end up in a log because someone logged the wrong
variable.

This works with structlog 22.3 (Debian bookworm) as well as with current releases, so it uses
only what 22.3 already had.  ``systemd.journal`` is imported only when the journal is used.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import structlog
from twamp_common.service import quoted, stderr_is_journal

FORMATS = ("auto", "journal", "console", "json")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog priorities (sd-daemon(3)); critical is reachable through log.critical().
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
SYSLOG_IDENTIFIER = "twamp-server"
FIELD_PREFIX = "TWAMP_"
# Where libsystemd sends journal entries; when it is missing, sd_journal_send() silently drops
# them, so the journal format falls back to stderr instead (see configure_logging).
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
REDACTED = "[redacted]"
# "key_id" is the TWAMP KeyID, the name of a user: useful in a log and not secret.  An HMAC
# value is not secret either (its key is), and "bad_hmac" counts packets: both are shown.
_SECRET_NAME = re.compile(r"secret|key(?!_id)|token|passphrase|password", re.IGNORECASE)
_NOT_IN_FIELD_NAME = re.compile(r"[^A-Z0-9_]")
# journald drops fields whose names are longer than this.
_MAX_FIELD_NAME = 64


def resolve_format(requested: str) -> str:
    """The format to use for ``requested``, deciding "auto" the way systemd documents it.

    systemd sets JOURNAL_STREAM to the ``device:inode`` of the stream it connected to
    stdout/stderr; comparing it with fd 2 tells whether stderr still is that stream (and not,
    say, redirected by a shell started from the unit), which is when native journal fields are
    worth sending.
    """
    if requested not in FORMATS:
        raise ValueError(f"unknown log format {requested!r}; expected one of {FORMATS}")
    if requested != "auto":
        return requested
    if stderr_is_journal():
        return "journal"
    return "console" if os.isatty(2) else "json"


#: Characters that must not reach a terminal or a log line raw: C0 and C1 controls and DEL.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Lines per (peer, event) allowed in a burst, and how many seconds earn one more.
BURST = 10
REFILL_SECONDS = 1.0
#: Most (peer, event) pairs tracked at once; the oldest is forgotten first.
TRACKED = 4096
SUPPRESSED_EVENT = "log lines suppressed"


def printable(text: str | bytes) -> str:
    """``text`` (octets from the network as UTF-8) with every control character escaped as
    ``\\xNN``: a KeyID holding ESC or BEL must not drive the operator's terminal."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    return _UNPRINTABLE.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def escape(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Processor: escape control characters in every string value (the last line of defence;
    call sites pass network strings through :func:`printable` as well)."""
    for name, value in event_dict.items():
        if isinstance(value, str) and name != "exception" and _UNPRINTABLE.search(value):
            event_dict[name] = printable(value)
    return event_dict


class LogLimiter:
    """Processor: at most BURST lines per (peer, event), then one per REFILL_SECONDS.

    One fuzzing client must not write thousands of lines a second.  Lines without a ``peer``
    are never limited.  The next line let through after a suppression carries
    ``suppressed=N``; :meth:`flush` reports the pairs that went quiet still owing a count.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: (peer, event) -> [tokens, time of the last refill, lines suppressed]
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def __call__(self, _logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        peer = event_dict.get("peer")
        event = str(event_dict.get("event", ""))
        if peer is None or event == SUPPRESSED_EVENT:
            return event_dict
        now = self._clock()
        key = (str(peer), event)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(BURST), now, 0.0]
            while len(self._buckets) > TRACKED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(float(BURST), bucket[0] + (now - bucket[1]) / REFILL_SECONDS)
            bucket[1] = now
        if bucket[0] < 1.0:
            bucket[2] += 1
            raise structlog.DropEvent
        bucket[0] -= 1.0
        if bucket[2]:
            event_dict["suppressed"] = int(bucket[2])
            bucket[2] = 0.0
        return event_dict

    def flush(self) -> list[tuple[str, str, int]]:
        """``(peer, event, count)`` of every pair with suppressed lines not yet reported whose
        bucket has refilled (the flood is over); their counts restart."""
        now = self._clock()
        owed = []
        for (peer, event), bucket in self._buckets.items():
            if bucket[2] and now - bucket[1] >= REFILL_SECONDS * BURST:
                owed.append((peer, event, int(bucket[2])))
                bucket[2] = 0.0
        return owed


#: The limiter configure_logging installed, for the daemon's periodic flush.
LIMITER = LogLimiter()


def report_suppressed(log: Any) -> None:
    """Log one summary line per (peer, event) whose repeated lines were suppressed."""
    for peer, event, count in LIMITER.flush():
        log.warning(SUPPRESSED_EVENT, peer=peer, repeated=event, suppressed=count)


def redact(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Processor: replace the values of secret-looking keys, also inside nested mappings."""
    return _redacted(event_dict)


def _redacted(mapping: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in mapping.items():
        if _SECRET_NAME.search(name):
            mapping[name] = REDACTED
        elif isinstance(value, Mapping):
            mapping[name] = _redacted(dict(value))
    return mapping


def journal_fields(event_dict: Mapping[str, Any]) -> dict[str, str]:
    """The journal entry for one event: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, TWAMP_<KEY>.

    Every key becomes a field of its own so journalctl can match on it; MESSAGE repeats them
    as ``key=value`` so that a plain ``journalctl -u twamp-server`` shows the facts too.  A
    formatted traceback goes after MESSAGE's first line rather than into a ``key=value``.
    """
    facts = dict(event_dict)
    level = str(facts.pop("level", "info"))
    message = str(facts.pop("event", ""))
    traceback = facts.get("exception")
    message += "".join(
        f" {name}={quoted(value)}" for name, value in facts.items() if name != "exception"
    )
    if traceback:
        message += f"\n{traceback}"
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(PRIORITIES.get(level, PRIORITIES["info"])),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
    }
    for name, value in facts.items():
        field = FIELD_PREFIX + _NOT_IN_FIELD_NAME.sub("_", name.upper())
        fields[field[:_MAX_FIELD_NAME]] = str(value)
    return fields


def _render_journal(_logger: object, _method: str, event_dict: Mapping[str, Any]) -> Any:
    """Final processor: hands the journal fields to JournalLogger as keyword arguments."""
    return journal_fields(event_dict)


class JournalLogger:
    """structlog's output for the journal format: sends the fields journal_fields() made.

    It takes ``sendv`` (``systemd.journal.sendv``) rather than ``send`` because ``send`` adds
    CODE_FILE/CODE_LINE/CODE_FUNC of its caller, which would always name this class.  A failing
    send (journald refusing while it restarts) must not take the daemon down, so the entry
    goes to stderr instead, which under systemd is usually a journal stream as well.
    """

    def __init__(self, sendv: Callable[..., object]) -> None:
        self._sendv = sendv

    def msg(self, **fields: str) -> None:
        try:
            self._sendv(*(f"{name}={value}" for name, value in fields.items()))
        except OSError as error:
            print(f"{fields['MESSAGE']} (journal: {error})", file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = fatal = exception = msg


def configure_logging(fmt: str, level: str) -> None:
    """Configure structlog for the whole process: ``fmt`` as for resolve_format, ``level`` a
    name from LEVELS.

    The journal format falls back to console output on stderr, with one warning saying so,
    when the journal socket does not exist: libsystemd would drop every entry without an error.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {tuple(LEVELS)}")
    fmt = resolve_format(fmt)
    journal_missing = fmt == "journal" and not JOURNAL_SOCKET.exists()
    if journal_missing:
        fmt = "console"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if fmt != "journal":
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    processors += [LIMITER, redact, escape]
    output: Any
    if fmt == "journal":
        from systemd import journal  # noqa: PLC0415 - only the journal needs systemd-python

        output = JournalLogger(journal.sendv)
        processors += [structlog.processors.format_exc_info, _render_journal]
    else:
        output = structlog.PrintLogger(file=sys.stderr)
        if fmt == "console":
            processors.append(structlog.dev.ConsoleRenderer(colors=os.isatty(2)))
        else:
            processors += [
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_args: output,
        cache_logger_on_first_use=False,
    )
    if journal_missing:
        get_logger().warning(
            "journal socket missing; logging to stderr", socket=str(JOURNAL_SOCKET)
        )


def get_logger(**initial: object) -> Any:
    """A structlog logger with ``initial`` bound; it follows the latest configure_logging()."""
    return structlog.get_logger(**initial)
