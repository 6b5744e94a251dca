"""``twamp-monitor``: the daemon, ``--check-config``, and ``--once`` (the "Run" button).

Exit status: 0; 78 (EX_CONFIG) for a configuration that cannot be used; 2 for usage errors and,
with ``--once``, when a target failed with an error; 1 with ``--once`` when every packet to some
target was lost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..control_session import ClientError
from ..engine import Engine
from ..measurement import Measurement
from ..reports import table
from ..reports.text import write_block
from ..sockets import reserve_descriptors
from . import config as config_module
from .config import EX_CONFIG, ConfigError, TargetConfig
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


def main(argv: Sequence[str] | None = None) -> int:
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
