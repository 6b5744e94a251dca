"""The command line of twamp-client: parsing and checking every option up front.

The options people already type keep their meaning exactly (``-c`` packets, ``-i`` milliseconds
between packets, ``-s`` summary only); everything else is checked here so that a bad value is
one clear sentence and exit status 2 before any packet leaves.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from pathlib import Path

from twamp_common.codes import CONTROL_PORT, TEST_PORT_IANA, Mode

#: DSCP names (RFC 2474, RFC 2597, RFC 3246, RFC 5865) accepted by --dscp.
DSCP_NAMES = {
    "DEFAULT": 0,
    "BE": 0,
    "EF": 46,
    "VOICE-ADMIT": 44,
    **{f"CS{n}": n * 8 for n in range(8)},
    **{f"AF{c}{d}": c * 8 + d * 2 for c in range(1, 5) for d in range(1, 4)},
}
MODES = {
    "unauthenticated": Mode.UNAUTHENTICATED,
    "authenticated": Mode.AUTHENTICATED,
    "encrypted": Mode.ENCRYPTED,
    "mixed": Mode.MIXED,
}
#: Fewest milliseconds between packets we schedule (10 µs: 100k packets/s).
MIN_INTERVAL_MS = 0.01

USAGE = "twamp-client HOST[:PORT] [-c COUNT] [-i MS] [-s] [-m MODE [-u KEYID]] [options]"
DESCRIPTION = """\
Measure round-trip delay, one-way delays, jitter and loss to a TWAMP server (RFC 5357),
or to a TWAMP Light reflector with --light. HOST is an IPv4 address, [IPv6] or a name;
PORT is the server's TWAMP-Control port (862), or with --light the reflector's UDP port (862).
"""
EPILOG = """\
exit status: 0 replies came, 1 every packet was lost, 2 usage, name resolution, connection,
authentication or protocol error.
examples:
  twamp-client 192.0.2.10 -c 5 -i 500 -s
  twamp-client [2001:db8::1]:862 -m encrypted -u alice --key-file /etc/twamp/alice.key
  twamp-client 198.51.100.7:862 --light -c 100 -i 10 --json
"""


class UsageError(Exception):
    """A bad command line: one sentence for the user, exit status 2."""


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Everything the client needs to know, checked."""

    host: str
    port: int
    count: int
    interval_ms: float
    summary_only: bool
    mode: Mode | None
    key_id: str | None
    key_file: Path | None
    light: bool
    padding: int | None
    zero_padding: bool
    size: int | None
    dscp: int
    ttl: int
    dont_fragment: bool
    family: int | None
    source: tuple[str, int] | None
    reflector_port: int
    wait: float
    schedule: str
    json: bool
    raw: bool
    quiet: bool
    max_count: int


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twamp-client",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="HOST[:PORT]", help="server or reflector")
    test = parser.add_argument_group("test")
    test.add_argument(
        "-c", dest="count", default="10", metavar="COUNT", help="packets to send (default 10)"
    )
    test.add_argument(
        "-i",
        dest="interval",
        default="1000",
        metavar="MS",
        help="milliseconds between packets (default 1000)",
    )
    test.add_argument(
        "--schedule",
        choices=("periodic", "poisson"),
        default="periodic",
        help="fixed intervals, or exponential ones of mean -i (default periodic)",
    )
    test.add_argument(
        "--padding",
        metavar="OCTETS",
        help="padding octets after the sender header (default: same size both ways)",
    )
    test.add_argument(
        "--zero-padding",
        action="store_true",
        help="pad test packets with zeros (default: random octets drawn once per session)",
    )
    test.add_argument("--size", metavar="OCTETS", help="UDP payload size of each test packet")
    test.add_argument(
        "--dscp",
        default="0",
        metavar="DSCP",
        help="DSCP of test packets: 0-63 or a name such as EF, AF41, CS5",
    )
    test.add_argument(
        "--ttl", default="255", metavar="TTL", help="TTL / hop limit of test packets (default 255)"
    )
    test.add_argument("--df", action="store_true", help="set Don't Fragment on test packets")
    test.add_argument(
        "--wait",
        default="1",
        metavar="SECONDS",
        help="how long to wait for late replies after the last packet (default 1)",
    )
    test.add_argument(
        "--light",
        action="store_true",
        help="TWAMP Light: no control session, test packets straight to HOST:PORT",
    )
    conn = parser.add_argument_group("connection")
    conn.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    conn.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6 only")
    conn.add_argument(
        "--source", metavar="ADDR[:PORT]", help="local address (and UDP port) to send from"
    )
    conn.add_argument(
        "--reflector-port",
        default="0",
        metavar="PORT",
        help="ask the server for this UDP test port (some routers require it)",
    )
    conn.add_argument(
        "-m",
        "--mode",
        choices=sorted(MODES),
        help="security mode (default unauthenticated; with -u, the strictest the server offers)",
    )
    conn.add_argument("-u", dest="key_id", metavar="KEYID", help="KeyID for the secure modes")
    conn.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="file holding the shared secret of -u (else it is asked for)",
    )
    conn.add_argument(
        "--max-count",
        default="32768",
        metavar="N",
        help="largest PBKDF2 Count to accept from a server (default 32768)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "-s", dest="summary_only", action="store_true", help="summary only, no line per packet"
    )
    out.add_argument("--json", action="store_true", help="one JSON document on stdout")
    out.add_argument(
        "--raw", action="store_true", help="one CSV row per packet with its timestamps"
    )
    out.add_argument(
        "-q",
        dest="quiet",
        action="store_true",
        help="print nothing but errors; the exit status tells",
    )
    return parser


def _integer(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise UsageError(f"{name} {value} is outside {low}..{high}")
    return value


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a number") from None
    if not (low <= value <= high):  # also refuses NaN
        raise UsageError(f"{name} {text} is outside {low:g}..{high:g}")
    return value


def split_host_port(target: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", target)
    if match:
        host, port = match.group(1), match.group(2)
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, None  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        raise UsageError(f"{target!r} names no host")
    return host, _integer("port", port, 1, 65535) if port else default_port


def _dscp(text: str) -> int:
    name = text.upper()
    if name in DSCP_NAMES:
        return DSCP_NAMES[name]
    try:
        return _integer("DSCP", text, 0, 63)
    except UsageError:
        raise UsageError(
            f"DSCP {text!r} is neither 0-63 nor a name such as EF, AF41 or CS5"
        ) from None


def parse(argv: list[str] | None = None) -> Options:
    """Options from the command line; UsageError for anything wrong (argparse's own errors
    exit with status 2 as well)."""
    args = _parser().parse_args(argv)
    light = args.light
    host, port = split_host_port(args.target, TEST_PORT_IANA if light else CONTROL_PORT)
    if args.padding is not None and args.size is not None:
        raise UsageError("--padding and --size say the same thing: give one")
    mode = MODES[args.mode] if args.mode else None
    if light and (mode not in (None, Mode.UNAUTHENTICATED) or args.key_id):
        raise UsageError("TWAMP Light has no control session: it is unauthenticated only")
    if mode in (Mode.AUTHENTICATED, Mode.ENCRYPTED, Mode.MIXED) and not args.key_id:
        raise UsageError(f"the {args.mode} mode needs a KeyID: add -u KEYID")
    if args.key_id is not None and len(args.key_id.encode()) > 80:
        raise UsageError("a KeyID is at most 80 octets")
    if args.key_file is not None and not args.key_id:
        raise UsageError("--key-file holds the secret of a KeyID: add -u KEYID")
    source = None
    if args.source:
        source_host, source_port = split_host_port(args.source, 0)
        source = (source_host, source_port)
        try:
            ipaddress.ip_address(source_host)
        except ValueError:
            raise UsageError(f"--source {source_host!r} is not an IP address") from None
    return Options(
        host=host,
        port=port,
        count=_integer("count (-c)", args.count, 1, 10_000_000),
        interval_ms=_number("interval (-i)", args.interval, MIN_INTERVAL_MS, 3_600_000),
        summary_only=args.summary_only,
        mode=mode,
        key_id=args.key_id,
        key_file=args.key_file,
        light=light,
        padding=None if args.padding is None else _integer("--padding", args.padding, 0, 65000),
        zero_padding=args.zero_padding,
        size=None if args.size is None else _integer("--size", args.size, 14, 65507),
        dscp=_dscp(args.dscp),
        ttl=_integer("--ttl", args.ttl, 1, 255),
        dont_fragment=args.df,
        family=args.family,
        source=source,
        reflector_port=_integer("--reflector-port", args.reflector_port, 0, 65535),
        wait=_number("--wait", args.wait, 0, 3600),
        schedule=args.schedule,
        json=args.json,
        raw=args.raw,
        quiet=args.quiet,
        max_count=_integer("--max-count", args.max_count, 1024, 1 << 31),
    )


def read_secret(options: Options) -> bytes:
    """The shared secret for ``options.key_id``: from --key-file, else asked on the terminal.

    A key file holds the passphrase on its first line (RFC 5357 §3.1: no newline is part of it).
    """
    if options.key_file is not None:
        try:
            text = options.key_file.read_bytes()
        except OSError as error:
            raise UsageError(
                f"cannot read --key-file {options.key_file}: {error.strerror}"
            ) from None
        secret = text.splitlines()[0] if text else b""
        if not secret:
            raise UsageError(f"--key-file {options.key_file} is empty")
        return secret
    import getpass  # noqa: PLC0415 - only when a secret is asked for

    if not os.isatty(0):
        raise UsageError("no --key-file given and no terminal to ask for the secret on")
    return getpass.getpass(f"Shared secret for {options.key_id}: ").encode()
