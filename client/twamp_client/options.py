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
import sys
from pathlib import Path

from twamp_common.codes import Mode
from twamp_common.stamp_sender import TLV_CHOICES, parse_tlv_choices
from twamp_common.traffic import (
    BANDWIDTH_FORMS,
    MODELS,
    ModelError,
    TrafficModel,
    parse_bandwidth,
)
from twamp_common.version import VersionAction

from .keyfile import FORMATS, KeyFileError, read_secret_file
from .measurement import CONNECT_TIMEOUT, Target, Test, stamp_mode

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

USAGE = (
    "twamp-client HOST[:PORT] [HOST[:PORT] ...] [-f FILE] [-c COUNT] [-i MS] [-s]"
    " [-m MODE [-u KEYID]] [options]"
)
DESCRIPTION = """\
Measure round-trip delay, one-way delays, jitter and loss to a TWAMP server (RFC 5357),
to a TWAMP Light reflector with --light, or to a STAMP reflector (RFC 8762) with --stamp.
HOST is an IPv4 address, [IPv6] or a name; PORT is the server's TWAMP-Control port (862),
or with --light or --stamp the reflector's UDP port (862).
Several targets (or -f FILE) are measured at the same time, each with its own session.
"""
EPILOG = """\
exit status: 0 replies came (from every target), 1 every packet was lost (to some target),
2 usage, name resolution, connection, authentication or protocol error (of some target).
examples:
  twamp-client 192.0.2.10 -c 5 -i 500 -s
  twamp-client [2001:db8::1]:862 -m encrypted -u alice --key-file /etc/twamp/alice.key
  twamp-client 198.51.100.7:862 --light -c 100 -i 10 --json
  twamp-client 198.51.100.7 --stamp --stamp-tlv class-of-service,follow-up-telemetry
  twamp-client 198.51.100.7 --stamp -m authenticated -u alice --key-file /etc/twamp/keys
  twamp-client 192.0.2.10 192.0.2.11 [2001:db8::7] -c 20 -i 100
  twamp-client -f sites.txt -c 50 -i 20 -s
"""


class UsageError(Exception):
    """A bad command line: one sentence for the user, exit status 2."""


@dataclasses.dataclass(frozen=True, slots=True)
class BadTarget:
    """A target of a list that cannot be measured, and why (the others still are)."""

    text: str
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Everything the client needs to know, checked."""

    #: The targets in the order given (command line first, then -f); with several, a bad one
    #: is a BadTarget rather than a usage error.
    targets: tuple[Target | BadTarget, ...]
    #: How to measure each target (the secret is read later, only when a KeyID is given).
    test: Test
    key_file: Path | None
    #: How to read --key-file: one of keyfile.FORMATS.
    key_format: str
    summary_only: bool
    json: bool
    raw: bool
    quiet: bool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twamp-client",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "targets", nargs="*", metavar="HOST[:PORT]", help="servers or reflectors to measure"
    )
    parser.add_argument(
        "-f",
        dest="target_file",
        type=Path,
        metavar="FILE",
        help="read targets from FILE, one per line (# starts a comment)",
    )
    parser.add_argument("--version", action=VersionAction)
    test = parser.add_argument_group("test")
    test.add_argument(
        "-c",
        dest="count",
        default="10",
        metavar="COUNT",
        help="packets to send (default 10; 0: until interrupted)",
    )
    test.add_argument(
        "-i",
        dest="interval_given",
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
        "--model",
        choices=MODELS,
        help="traffic like voice or bulk data instead of -i/--size: g711 (200-octet IP packets"
        " every 20 ms), g729 (60), cbr (--ip-size at --bandwidth), imix (7:4:1 of 70/576/1500"
        " octets at --bandwidth)",
    )
    test.add_argument(
        "--bandwidth", metavar="RATE", help="bit/s of cbr and imix, e.g. 64000, 2.5M, 1G"
    )
    test.add_argument(
        "--ip-size", metavar="OCTETS", help="IP packet size of cbr, IP and UDP headers included"
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
    test.add_argument(
        "--stamp",
        action="store_true",
        help="STAMP (RFC 8762): no control session, test packets straight to HOST:PORT;"
        " -m authenticated -u KEYID signs them with the KeyID's secret",
    )
    test.add_argument(
        "--stamp-tlv",
        action="append",
        default=[],
        metavar="TLV[,TLV...]",
        help="RFC 8972 TLVs to ask a STAMP reflector for (repeatable): " + ", ".join(TLV_CHOICES),
    )
    test.add_argument(
        "--ssid",
        metavar="SSID",
        help="STAMP Session-Sender Identifier, 1-65535 (default: a random one per target)",
    )
    conn = parser.add_argument_group("connection")
    conn.add_argument(
        "--connect-timeout",
        default=str(CONNECT_TIMEOUT),
        metavar="SECONDS",
        help=f"for connection, greeting and set-up together (default {CONNECT_TIMEOUT:g})",
    )
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
        "--key-format",
        choices=FORMATS,
        default="auto",
        help="keys: twamp-server's keys file; passphrase: the first line; pfs: twampd's"
        " KEYID HEX; auto (default): keys if a line starts with the KeyID, else passphrase",
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
        value = int(text, 10)
    except ValueError:
        raise UsageError(
            f"{name} {text!r} is not a whole number (allowed: {low} to {high})"
        ) from None
    if not low <= value <= high:
        raise UsageError(f"{name} {value} is outside {low}..{high}")
    return value


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"{name} {text!r} is not a number (allowed: {low:g} to {high:g})"
        ) from None
    if not (low <= value <= high):  # also refuses NaN
        raise UsageError(f"{name} {text} is outside {low:g}..{high:g}")
    return value


def split_host_port(target: str, default_port: int | None) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address; the port is
    ``default_port`` when none is given, and an empty one (``host:``) is an error."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", target)
    if match:
        host, port = match.group(1), match.group(2)
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, None  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        raise UsageError(f"{target!r} names no host")
    if port is None:
        return host, default_port
    if not port:
        raise UsageError(f"{target!r} ends in ':' but gives no port (allowed: 1 to 65535)")
    return host, _integer(f"the port of {target!r}", port, 1, 65535)


def _dscp(text: str) -> int:
    name = text.upper()
    if name in DSCP_NAMES:
        return DSCP_NAMES[name]
    try:
        return _integer("DSCP", text, 0, 63)
    except UsageError:
        raise UsageError(
            f"--dscp {text!r} is neither 0-63 nor a name such as EF, AF41 or CS5"
        ) from None


#: Options that take a value which may itself start with "-" (a negative number, to be refused
#: with a clear message rather than argparse's "expected one argument").
_VALUED = {
    "--bandwidth",
    "--ip-size",
    "-c",
    "-i",
    "--padding",
    "--size",
    "--ttl",
    "--wait",
    "--reflector-port",
    "--max-count",
    "--connect-timeout",
    "--dscp",
    "--ssid",
}


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``-c -5`` as ``-c=-5``-style single words, so that the value reaches our own checks."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            value = next(words, None)
            if value is None:
                joined.append(word)
            elif re.fullmatch(r"-\d.*", value):
                joined.append(f"{word}{value}" if len(word) == 2 else f"{word}={value}")
            else:
                joined += [word, value]
        else:
            joined.append(word)
    return joined


def _rate(text: str) -> int:
    """--bandwidth: a number of bit/s with an optional k, M or G."""
    try:
        return parse_bandwidth(text)
    except ModelError:
        raise UsageError(
            f"--bandwidth {text!r} is not a bit rate (allowed: {BANDWIDTH_FORMS})"
        ) from None


def _traffic(args: argparse.Namespace) -> TrafficModel | None:
    """The --model, checked against what it replaces."""
    if args.model is None:
        if args.bandwidth is not None or args.ip_size is not None:
            raise UsageError("--bandwidth and --ip-size shape a --model (cbr or imix)")
        return None
    given = [
        name
        for name, value in (
            ("-i", args.interval_given),
            ("--size", args.size),
            ("--padding", args.padding),
        )
        if value is not None
    ]
    if given or args.schedule != "periodic":
        replaced = ", ".join(given or ["--schedule"])
        raise UsageError(f"--model sets the sizes and intervals: leave out {replaced}")
    try:
        return TrafficModel(
            args.model,
            bandwidth=None if args.bandwidth is None else _rate(args.bandwidth),
            size=None if args.ip_size is None else _integer("--ip-size", args.ip_size, 1, 65535),
        )
    except ModelError as error:
        raise UsageError(str(error)) from None


def read_targets(path: Path) -> list[str]:
    """Targets from a file, one per line; ``#`` starts a comment, blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UsageError(f"cannot read -f {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read -f {path}: it is not UTF-8 text") from None
    return [
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]


def _targets(texts: list[str], light: bool, stamp: bool) -> tuple[Target | BadTarget, ...]:
    """Each text as a Target; with several, a bad or repeated one becomes a BadTarget."""
    if not texts:
        raise UsageError("no target given: name a HOST[:PORT] or give -f FILE")
    targets: list[Target | BadTarget] = []
    seen: dict[tuple[str, int], int] = {}
    for number, text in enumerate(texts, 1):
        try:
            host, port = split_host_port(text, None)
        except UsageError as error:
            if len(texts) == 1:
                raise
            targets.append(BadTarget(text, str(error)))
            continue
        target = Target(host, port, light, stamp)
        key = (host.lower(), target.effective_port)
        if key in seen:
            targets.append(BadTarget(text, f"{text!r} repeats target {seen[key]}"))
            continue
        seen[key] = number
        targets.append(target)
    return tuple(targets)


def _stamp(
    args: argparse.Namespace, mode: Mode | None
) -> tuple[tuple[str, ...], int | None, Mode | None]:
    """The STAMP options (TLVs, SSID) checked, and the mode: with --stamp, -u alone means the
    authenticated mode (the only secure one STAMP has)."""
    if not args.stamp:
        for given, name in ((args.stamp_tlv, "--stamp-tlv"), (args.ssid, "--ssid")):
            if given:
                raise UsageError(f"{name} is for STAMP reflectors: add --stamp")
        return (), None, mode
    if args.light:
        raise UsageError("--light and --stamp are two protocols: give one")
    try:
        tlvs = parse_tlv_choices(args.stamp_tlv)
    except ValueError as error:
        raise UsageError(f"--stamp-tlv: {error} (allowed: {', '.join(TLV_CHOICES)})") from None
    try:
        mode = stamp_mode(mode, keyed=bool(args.key_id), tlvs=tlvs)
    except ValueError as error:
        raise UsageError(f"--stamp {' '.join(_stamp_words(args))}: {error}") from None
    ssid = None if args.ssid is None else _integer("--ssid", args.ssid, 1, 65535)
    return tlvs, ssid, mode


def _stamp_words(args: argparse.Namespace) -> list[str]:
    """The options a STAMP mode error is about, as typed."""
    words = [] if args.mode is None else ["-m", args.mode]
    words += [] if not args.key_id else ["-u", args.key_id]
    return words + [f"--stamp-tlv {text}" for text in args.stamp_tlv]


def parse(argv: list[str] | None = None) -> Options:
    """Options from the command line; UsageError for anything wrong (argparse's own errors
    exit with status 2 as well)."""
    args = _parser().parse_args(_attach_negative_values(sys.argv[1:] if argv is None else argv))
    light = args.light
    texts = list(args.targets)
    if args.target_file is not None:
        texts += read_targets(args.target_file)
    if args.json and args.raw:
        raise UsageError("--json and --raw are two output formats: give one")
    if args.padding is not None and args.size is not None:
        raise UsageError("--padding and --size say the same thing: give one")
    mode = MODES[args.mode] if args.mode else None
    if light and (mode not in (None, Mode.UNAUTHENTICATED) or args.key_id):
        raise UsageError("TWAMP Light has no control session: it is unauthenticated only")
    stamp_tlvs, ssid, mode = _stamp(args, mode)
    if mode in (Mode.AUTHENTICATED, Mode.ENCRYPTED, Mode.MIXED) and not args.key_id:
        raise UsageError(f"the {args.mode} mode needs a KeyID: add -u KEYID")
    if args.key_id is not None and len(args.key_id.encode()) > 80:
        raise UsageError("a KeyID is at most 80 octets")
    if args.key_file is not None and not args.key_id:
        raise UsageError("--key-file holds the secret of a KeyID: add -u KEYID")
    source = None
    if args.source:
        try:
            source_host, source_port = split_host_port(args.source, 0)
        except UsageError as error:
            raise UsageError(f"--source: {error}") from None
        source = (source_host, source_port or 0)
        try:
            ipaddress.ip_address(source_host)
        except ValueError:
            raise UsageError(f"--source {source_host!r} is not an IP address") from None
    test = Test(
        count=_integer("count (-c)", args.count, 0, 10_000_000),
        interval_ms=_number(
            "interval (-i)", args.interval_given or "1000", MIN_INTERVAL_MS, 3_600_000
        ),
        schedule=args.schedule,
        padding=None if args.padding is None else _integer("--padding", args.padding, 0, 65000),
        size=None if args.size is None else _integer("--size", args.size, 14, 65507),
        zero_padding=args.zero_padding,
        dscp=_dscp(args.dscp),
        ttl=_integer("--ttl", args.ttl, 1, 255),
        dont_fragment=args.df,
        wait=_number("--wait", args.wait, 0, 3600),
        mode=mode,
        key_id=args.key_id,
        reflector_port=_integer("--reflector-port", args.reflector_port, 0, 65535),
        source=source,
        family=args.family,
        max_count=_integer("--max-count", args.max_count, 1024, 1 << 31),
        connect_timeout=_number("--connect-timeout", args.connect_timeout, 0.1, 3600),
        traffic=_traffic(args),
        stamp_tlvs=stamp_tlvs,
        ssid=ssid,
    )
    return Options(
        targets=_targets(texts, light, args.stamp),
        test=test,
        key_file=args.key_file,
        key_format=args.key_format,
        summary_only=args.summary_only,
        json=args.json,
        raw=args.raw,
        quiet=args.quiet,
    )


def read_secret(options: Options) -> bytes:
    """The shared secret for ``options.test.key_id``: from --key-file, else asked on the
    terminal."""
    key_id = options.test.key_id
    assert key_id is not None
    if options.key_file is not None:
        try:
            return read_secret_file(options.key_file, key_id, options.key_format)
        except KeyFileError as error:
            raise UsageError(str(error)) from None
    import getpass  # noqa: PLC0415 - only when a secret is asked for

    if not os.isatty(0):
        raise UsageError("no --key-file given and no terminal to ask for the secret on")
    return getpass.getpass(f"Shared secret for {key_id}: ").encode()
