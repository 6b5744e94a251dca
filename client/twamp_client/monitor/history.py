"""The history of runs in SQLite: one row per run with its settings and its ``--json`` figures.

Writes go through a queue to a thread of their own, so a slow disk never delays the schedule or
a packet; each row is committed on its own (WAL mode), so a killed daemon loses at most the run
in progress.  Rows older than ``history_days`` are dropped as new ones arrive.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

from twamp_common.codes import mode_name

from ..measurement import Measurement
from ..reports.json import document
from .config import TargetConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    started REAL NOT NULL,
    settings TEXT NOT NULL,
    figures TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_target ON runs (target, started);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started);
"""
#: Seconds between two retention sweeps.
_SWEEP_EVERY = 3600.0


def open_database(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(_SCHEMA)
    return connection


def settings(config: TargetConfig) -> dict[str, Any]:
    """What the run was asked to do (never the secret)."""
    test = dataclasses.asdict(config.test)
    test.pop("secret", None)
    test["mode"] = None if config.test.mode is None else mode_name(config.test.mode)
    return {
        "host": config.target.host,
        "port": config.target.port,
        "light": config.target.light,
        "stamp": config.target.stamp,
        "every": config.every,
        "labels": dict(config.labels),
        "model": None if config.test.traffic is None else dataclasses.asdict(config.test.traffic),
        "test": test,
    }


class Writer:
    """Rows in, committed by the writer thread; :meth:`close` writes what is queued first."""

    def __init__(self, path: Path, days: float) -> None:
        self.path = path
        self.days = days
        self._connection = open_database(path)
        self._queue: queue.SimpleQueue[tuple[str, float, str, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="history", daemon=True)
        self._thread.start()

    def record(self, config: TargetConfig, measurement: Measurement, started: float) -> None:
        """Queue one run (``started``: Unix time); returns at once."""
        row = (
            config.name,
            started,
            json.dumps(settings(config)),
            json.dumps(document(measurement)),
        )
        self._queue.put(row)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._connection.close()

    def _write(self) -> None:
        swept = 0.0
        while (row := self._queue.get()) is not None:
            self._connection.execute(
                "INSERT INTO runs (target, started, settings, figures) VALUES (?, ?, ?, ?)", row
            )
            if row[1] - swept >= _SWEEP_EVERY:
                swept = row[1]
                self._connection.execute(
                    "DELETE FROM runs WHERE started < ?", (row[1] - self.days * 86400,)
                )


def parse_since(text: str) -> float:
    """``--since``: an ISO 8601 time (local when it has no zone) or a duration like 2h, 30m."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.datetime.now(datetime.UTC).timestamp() - float(text[:-1]) * units[text[-1]]
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


def rows(path: Path, target: str | None, since: float | None, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` runs (of ``target``, since ``since``), oldest first."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        query = "SELECT target, started, settings, figures FROM runs WHERE 1"
        arguments: list[Any] = []
        if target is not None:
            query += " AND target = ?"
            arguments.append(target)
        if since is not None:
            query += " AND started >= ?"
            arguments.append(since)
        query += " ORDER BY started DESC LIMIT ?"
        arguments.append(limit)
        found = connection.execute(query, arguments).fetchall()
    finally:
        connection.close()
    return [
        {
            "target": name,
            "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
            "settings": json.loads(settings_text),
            "result": json.loads(figures),
        }
        for name, started, settings_text, figures in reversed(found)
    ]
