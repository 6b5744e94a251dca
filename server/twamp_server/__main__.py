"""``twamp-server``: the command line of the daemon.

Runs in the foreground (systemd supervises it; it never daemonises itself).  Exit status 0 on a
clean stop, 78 (EX_CONFIG) for a configuration error (also from ``--check-config``), 1 when a
socket cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from pathlib import Path

from twamp_common.service import EX_CONFIG
from twamp_common.version import VersionAction

from . import __doc__ as package_doc
from .activation import HandedSockets
from .config import DEFAULT_PATH, Config, ConfigError, load_config
from .daemon import Daemon
from .logs import configure_logging, get_logger


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
    parser.add_argument("--version", action=VersionAction)
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
        handed = HandedSockets.from_environment()
    except (ValueError, OSError) as error:
        log.error("cannot use the sockets systemd passed", error=str(error))
        daemon.reflector.close()
        daemon.stamp.close()
        return 1
    try:
        await daemon.bind(handed)
    except OSError as error:
        hint = _bind_hint(error)
        log.error("cannot bind", error=str(error), **({"hint": hint} if hint else {}))
        daemon.reflector.close()
        daemon.stamp.close()
        return 1
    return await daemon.run(config_path)


def _bind_hint(error: OSError) -> str | None:
    """What an operator can do about a socket that could not be bound."""
    if error.errno == errno.EACCES:
        return (
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; under systemd, list the port in"
            " twamp-server.socket (systemctl edit twamp-server.socket) so that systemd binds it"
        )
    if error.errno == errno.EADDRINUSE:
        return "another process uses this port (ss -lntup shows which)"
    return None


if __name__ == "__main__":
    sys.exit(main())
