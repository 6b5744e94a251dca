"""``twamp-monitor``: the daemon, ``--check-config``, and ``--once`` (the "Run" button).

``twamp-monitor history [TARGET] [--since TIME] [--json]`` prints the last runs.

Exit status: 0; 78 (EX_CONFIG) for a configuration that cannot be used; 2 for usage errors and,
with ``--once``, when a target failed with an error; 1 with ``--once`` when every packet to some
target was lost.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from twamp_common.service import EX_CONFIG, ConfigError

from ..control_session import ClientError
from ..engine import Engine
from ..measurement import Measurement
from ..reports import table
from ..reports.text import write_block
from ..sockets import reserve_descriptors
from . import config as config_module
from . import history
from .config import TargetConfig
from .daemon import Daemon


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="twamp-monitor",
        description="Measure many paths with TWAMP on their schedules (see twamp-monitor(8)).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=config_module.DEFAULT_PATH,
        metavar="FILE",
        help=f"configuration file (default {config_module.DEFAULT_PATH})",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="check the configuration and exit"
    )
    parser.add_argument(
        "--once",
        nargs="*",
        metavar="TARGET",
        help="run the named targets (default: all) once in the foreground and print summaries",
    )
    return parser.parse_args(argv)


def run_once(targets: Sequence[TargetConfig]) -> list[Measurement]:
    """Every target measured once, at the same time; the results in the order given."""
    reserve_descriptors(len(targets), per_measurement=2)
    engine = Engine(precise=len(targets) == 1)
    results: dict[int, Measurement] = {}
    try:
        for index, target in enumerate(targets):

            def done(result: Measurement, at: int = index) -> None:
                results[at] = result

            engine.submit(target.target, target.test, done)
        engine.run()
    finally:
        engine.close()
    return [results[index] for index in range(len(targets))]


def _once(config: config_module.MonitorConfig, names: list[str]) -> int:
    unknown = [name for name in names if name not in config.targets]
    if unknown:
        known = ", ".join(config.targets) or "none"
        print(
            f"twamp-monitor: no enabled target {', '.join(unknown)}; targets: {known}",
            file=sys.stderr,
        )
        return 2
    chosen = [config.targets[name] for name in names or config.targets]
    if not chosen:
        print("twamp-monitor: no enabled target to run", file=sys.stderr)
        return 2
    measurements = run_once(chosen)
    for target, measurement in zip(chosen, measurements, strict=True):
        sys.stdout.write(f"[{target.name}]\n")
        write_block(measurement, sys.stdout)
        sys.stdout.write("\n")
    if len(measurements) > 1:
        table.write(measurements, sys.stdout)
    sys.stdout.flush()
    return max(measurement.status for measurement in measurements)


def _history(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="twamp-monitor history", description="Print the last runs from the history."
    )
    parser.add_argument("target", nargs="?", help="only this target")
    parser.add_argument("--since", metavar="TIME", help="ISO 8601 time, or a duration: 2h, 30m")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs")
    parser.add_argument("--json", action="store_true", help="one JSON array of runs")
    parser.add_argument("--config", type=Path, default=config_module.DEFAULT_PATH, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        config = config_module.read(args.config)
    except ConfigError as error:
        print(f"twamp-monitor: {error}", file=sys.stderr)
        return EX_CONFIG
    if config.history is None:
        print("twamp-monitor: history is off (history = empty)", file=sys.stderr)
        return 2
    try:
        since = None if args.since is None else history.parse_since(args.since)
    except ValueError:
        print(f"twamp-monitor: --since {args.since!r}: not a time or a duration", file=sys.stderr)
        return 2
    try:
        found = history.rows(config.history, args.target, since, args.limit)
    except sqlite3.Error as error:
        print(f"twamp-monitor: history {config.history}: {error}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(found, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for run in found:
        result = run["result"]
        rtt = result.get("rtt_us") or {}
        figures = (
            f"{result['error']}"
            if result.get("sent") is None
            else f"{result['sent']} sent, {result['received']} received,"
            f" {result['loss_percent']}% loss, rtt avg {rtt.get('avg', '-')} us"
        )
        print(f"{run['started']}  {run['target']}  {figures}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["history"]:
        return _history(argv[1:])
    args = _arguments(argv)
    try:
        config = config_module.read(args.config)
    except ConfigError as error:
        print(f"twamp-monitor: {error}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        print(f"{args.config}: {len(config.targets)} enabled targets, configuration OK")
        return 0
    try:
        if args.once is not None:
            return _once(config, args.once)
        return Daemon(config).run()
    except ClientError as error:
        print(f"twamp-monitor: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
