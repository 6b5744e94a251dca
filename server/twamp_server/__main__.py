"""``twamp-server``: the command line of the daemon.

Runs in the foreground (systemd supervises it; it never daemonises itself).  Exit status 0 on a
clean stop, 78 (EX_CONFIG) for a configuration error (also from ``--check-config``), 1 when a
socket cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import __doc__ as package_doc
from .config import DEFAULT_PATH, Config, ConfigError, load_config
from .daemon import Daemon
from .logs import configure_logging, get_logger

EX_CONFIG = 78


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="twamp-server",
        description=f"{package_doc} Serves TWAMP-Control on TCP and reflects TWAMP-Test on UDP.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PATH,
        metavar="PATH",
        help=f"configuration file (default {DEFAULT_PATH})",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration and exit: 0 if good, 78 if not",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "journal", "console", "json"),
        default="auto",
        help="journal under systemd, console on a terminal, json otherwise (default auto)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug lines as well")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"twamp-server: {error}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        for warning in config.warnings:
            print(f"twamp-server: warning: {warning}", file=sys.stderr)
        print(f"twamp-server: {args.config}: configuration is valid")
        return 0
    configure_logging(args.log_format, "debug" if args.verbose else config.log_level)
    return asyncio.run(_serve(config, args.config))


async def _serve(config: Config, config_path: Path) -> int:
    log = get_logger()
    daemon = Daemon(config, log)
    for warning in config.warnings:
        log.warning(warning)
    try:
        await daemon.bind()
    except OSError as error:
        log.error("cannot bind", error=str(error))
        daemon.reflector.close()
        return 1
    return await daemon.run(config_path)


if __name__ == "__main__":
    sys.exit(main())
