"""The history file: rows past ``history_days`` are dropped, secrets never stored."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from twamp_client import Measurement, Target, Test
from twamp_client.monitor.config import TargetConfig
from twamp_client.monitor.history import Writer, open_database, rows


def test_old_rows_are_dropped_and_new_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    now = time.time()
    connection = open_database(path)
    connection.execute(
        "INSERT INTO runs (target, started, settings, figures) VALUES"
        " ('old', ?, '{}', '{}'), ('recent', ?, '{}', '{}')",
        (now - 3 * 86400, now - 86400),
    )
    connection.close()
    config = TargetConfig("new", Target("h"), Test(key_id="k", secret=b"hush"), 60.0)
    writer = Writer(path, days=2)
    writer.record(config, Measurement.failed(config.target, config.test, "refused"), now)
    writer.close()
    found = rows(path, None, None, 10)
    assert [row["target"] for row in found] == ["recent", "new"]
    assert found[1]["result"]["error"] == "refused"
    with sqlite3.connect(path) as check:
        assert b"hush" not in b"".join(
            str(row).encode() for row in check.execute("SELECT * FROM runs")
        )
