"""The server's configuration file, read and checked in full (its keys file too) before any bind.

The configuration is the section-less ``key = value`` file users already have (a ``[server]``
header is accepted too).  Every value is checked here, once, so that the daemon never meets a bad
one: a mistake stops the start (or a SIGHUP reload) with one :class:`ConfigError` sentence that
names the file, the line, the key, the bad value and what is allowed.  Things that work but look
wrong become :attr:`Config.warnings` instead.

Where the keys file is (``keys_file``) is decided here; reading it is :mod:`.keystore`'s.
"""

from __future__ import annotations

import configparser
import difflib
import io
import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import TypeVar

from twamp_common import keys
from twamp_common.codes import SECURE_CONTROL_MODES, SECURITY_MODES, Mode
from twamp_common.service import ConfigError, InvalidValueError

from .keystore import KeyStore, decode, read_keys

#: Where the daemon looks when ``--config`` is not given.
DEFAULT_PATH = Path("/etc/twamp/twamp-server.conf")
#: The keys file read when the configuration does not name one (missing is fine then).
DEFAULT_KEYS_PATH = Path("/etc/twamp/twamp-server.keys")
#: The one section name a configuration may use.
SECTION = "server"
#: Every key the file may set, in the order the shipped file lists them.
KNOWN_KEYS = (
    "control_port",
    "test_port",
    "max_sessions",
    "max_sessions_per_client",
    "max_sessions_per_network",
    "session_timeout",
    "control_timeout",
    "max_connections",
    "max_connections_per_client",
    "max_connections_per_network",
    "ipv4_network_prefix",
    "ipv6_network_prefix",
    "idle_timeout",
    "max_idle_connections",
    "reserved_connections",
    "listen",
    "modes",
    "keys_file",
    "allow",
    "test_ports",
    "light_ports",
    "light_allow",
    "light_senders_per_address",
    "light_short_requests",
    "stamp_ports",
    "stamp_allow",
    "stamp_mode",
    "stamp_key_id",
    "stamp_sessions_per_address",
    "pbkdf2_count",
    "status_interval",
    "log_level",
)
#: The words ``modes`` accepts.
MODE_NAMES = {
    "unauthenticated": Mode.UNAUTHENTICATED,
    "authenticated": Mode.AUTHENTICATED,
    "encrypted": Mode.ENCRYPTED,
    "mixed": Mode.MIXED,
}
LOG_LEVELS = ("debug", "info", "warning", "error")
#: The words ``stamp_mode`` accepts (RFC 8762 §4.3): the reflector's Sequence Number copied
#: from the request, or counted per session by the reflector itself.
STAMP_MODES = ("stateless", "stateful")
#: Smallest status_interval: STATUS= updates more often than this only churn systemd.
STATUS_INTERVAL_MIN = 0.1
#: Default max_connections_per_client (capped at max_connections).  Routers and twping open one
#: control connection per test, so a client address rarely holds more than a handful at once;
#: 16 leaves room for parallel tests while one address can no longer take every slot.
MAX_CONNECTIONS_PER_CLIENT = 16
#: Default max_connections_per_network (capped at max_connections): four addresses' worth.
MAX_CONNECTIONS_PER_NETWORK = 64
#: Default max_idle_connections is this share of max_connections (at least one client's worth,
#: max_connections_per_client): connections that have not completed set-up or hold no session
#: cost a slot and give nothing, so they get a smaller budget than connections that measure.
IDLE_CONNECTIONS_SHARE = 0.25
#: Default reserved_connections is this share of max_connections: the last slots, kept for
#: clients of networks that hold no connection yet, so that a full table still serves them.
RESERVED_CONNECTIONS_SHARE = 0.05
#: Default max_sessions_per_client is this fraction of max_sessions (at least 1): one client
#: that requests sessions and never starts them must not take every slot for REFWAIT.
SESSIONS_PER_CLIENT_SHARE = 0.1
#: Default max_sessions_per_network, in clients' worth (capped at max_sessions): many addresses
#: of one network, or one host's IPv6 /64, cannot take every session either.
SESSIONS_PER_NETWORK_CLIENTS = 4
#: Default test_ports: inside the IANA Dynamic Ports (49152-65535, RFC 6335 §6: never assigned
#: to a service, so no program on the host expects one of them by number) and above Linux's
#: default ephemeral range (32768-60999), so the kernel never hands them to other sockets.
#: 100 ports: a client may still choose its port, but can no longer take any port of the host.
DEFAULT_TEST_PORTS = (61000, 61099)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
_T = TypeVar("_T")
_SEPARATORS = re.compile(r"[\s,]+")


# Every address of both families, as the file's default says; not a hidden default bind.
_DEFAULT_LISTEN: tuple[IPAddress, ...] = (IPv4Address("0.0.0.0"), IPv6Address("::"))  # noqa: S104
_EVERYWHERE: tuple[IPNetwork, ...] = (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))
_NO_PORTS: tuple[int, ...] = ()
_NOWHERE: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """A checked configuration.  Build it with :func:`load_config` or :func:`parse_config`.

    The field defaults are the file's defaults, but only the parser checks values and applies
    the rules between them (``max_sessions_per_client`` a share of ``max_sessions``,
    ``max_connections_per_client`` capped at ``max_connections``, modes that need keys):
    construct ``Config`` directly only in tests.
    """

    path: Path | None = None
    control_port: int = 862
    test_port: int = 863
    max_sessions: int = 100
    max_sessions_per_client: int = 10
    #: Test sessions from one network (the networks max_connections_per_network counts).
    max_sessions_per_network: int = 40
    #: Minutes of silence after which a test session is ended (RFC 5357 REFWAIT).
    session_timeout: float = 5.0
    #: Seconds of silence after which a control connection is closed (RFC 5357 SERVWAIT).
    control_timeout: float = 900.0
    max_connections: int = 1000
    max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT
    #: Control connections from one network (an IPv4 /24, an IPv6 /64 by default): many
    #: addresses of one network or one host's IPv6 /64 cannot take every slot.
    max_connections_per_network: int = MAX_CONNECTIONS_PER_NETWORK
    ipv4_network_prefix: int = 24
    ipv6_network_prefix: int = 64
    #: Seconds a connection may stay without completing set-up, or without holding a session.
    idle_timeout: float = 30.0
    #: Connections that have not completed set-up or hold no session, all clients together.
    max_idle_connections: int = 250
    #: The last slots of max_connections, only for networks holding no connection yet.
    reserved_connections: int = 50
    listen: tuple[IPAddress, ...] = _DEFAULT_LISTEN
    modes: Mode = SECURITY_MODES
    #: The keys file that was read, or None when none was.
    keys_file: Path | None = None
    keys: KeyStore = field(default_factory=KeyStore)
    _allow: tuple[IPNetwork, ...] = _EVERYWHERE
    #: Inclusive range of ports a client may ask for besides test_port; None: any port ≥ 1024.
    test_ports: tuple[int, int] | None = DEFAULT_TEST_PORTS
    light_ports: tuple[int, ...] = _NO_PORTS
    _light_allow: tuple[IPNetwork, ...] = _NOWHERE
    #: Most TWAMP Light senders (source ports) tracked from one address.
    light_senders_per_address: int = 16
    #: Reflect Light requests shorter than the 41-octet reply (the reply is then larger).
    light_short_requests: bool = False
    #: UDP ports of the STAMP Session-Reflector (RFC 8762, RFC 8972).
    stamp_ports: tuple[int, ...] = _NO_PORTS
    _stamp_allow: tuple[IPNetwork, ...] = _NOWHERE
    stamp_mode: str = "stateful"
    #: The keys-file KeyID whose secret is the STAMP HMAC key: every STAMP port is then
    #: authenticated-only (RFC 8762 §4.2.2, §4.3.2); None: unauthenticated-only.
    stamp_key_id: bytes | None = None
    #: Most STAMP sessions (sender port and SSID) tracked from one address.
    stamp_sessions_per_address: int = 16
    pbkdf2_count: int = 8192
    #: Seconds between STATUS= updates to systemd.
    status_interval: float = 10.0
    log_level: str = "info"
    #: Sentences about settings that work but look wrong, for the log and --check-config.
    warnings: tuple[str, ...] = ()

    @property
    def session_timeout_seconds(self) -> float:
        """``session_timeout`` in seconds, the unit the daemon's clock works in."""
        return self.session_timeout * 60.0

    def network_of(self, address: IPAddress) -> IPNetwork:
        """The network ``address`` is counted in for the per-network limits."""
        if isinstance(address, IPv4Address):
            return IPv4Network((address, self.ipv4_network_prefix), strict=False)
        return IPv6Network((address, self.ipv6_network_prefix), strict=False)

    def client_allowed(self, address: str | IPAddress) -> bool:
        """Whether ``address`` may open a control connection (``allow``)."""
        return _address_in(address, self._allow)

    def light_allowed(self, address: str | IPAddress) -> bool:
        """Whether ``address`` gets TWAMP Light replies (``light_allow``)."""
        return _address_in(address, self._light_allow)

    def stamp_allowed(self, address: str | IPAddress) -> bool:
        """Whether ``address`` gets STAMP replies (``stamp_allow``)."""
        return _address_in(address, self._stamp_allow)

    @property
    def stamp_key(self) -> bytes | None:
        """The STAMP HMAC key (the secret of ``stamp_key_id``), None when STAMP is open."""
        return None if self.stamp_key_id is None else self.keys.get(self.stamp_key_id)


def _address_in(address: str | IPAddress, networks: Iterable[IPNetwork]) -> bool:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; an admin writes them as IPv4.
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return False  # not an address at all: deny rather than crash the caller
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


# ----------------------------------------------------------------------------------------------
# Value parsers: each takes the text of one value and raises InvalidValueError with the reason.


def _tokens(text: str) -> list[str]:
    return [token for token in _SEPARATORS.split(text) if token]


def _whole(text: str, allowed: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise InvalidValueError("not a whole number", allowed)
    return int(text)


def _integer(low: int, high: int) -> Callable[[str], int]:
    allowed = f"{low} to {high}"

    def parse(text: str) -> int:
        number = _whole(text, allowed)
        if not low <= number <= high:
            raise InvalidValueError("out of range", allowed)
        return number

    return parse


def _number(low: float, high: float, *, above: bool, unit: str) -> Callable[[str], float]:
    """A parser for a finite number ``> low`` (``above``) or ``>= low``, and ``<= high``."""
    allowed = f"more than {low:g}" if above else f"at least {low:g}"
    allowed += f" ({unit})" if math.isinf(high) else f" and at most {high:g} ({unit})"

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise InvalidValueError("not a number", allowed) from None
        if not math.isfinite(number):
            raise InvalidValueError("not a number", allowed)
        if number < low or (above and number == low) or number > high:
            raise InvalidValueError("out of range", allowed)
        return number

    return parse


def _addresses(text: str) -> tuple[IPAddress, ...]:
    allowed = "IP addresses (not names) separated by spaces or commas, e.g. 0.0.0.0 ::"
    found: dict[IPAddress, None] = {}
    for token in _tokens(text):
        try:
            found[ipaddress.ip_address(token)] = None
        except ValueError:
            raise InvalidValueError(f'"{token}" is not an IP address', allowed) from None
    if not found:
        raise InvalidValueError("names no address", allowed)
    return tuple(found)


def _network_list(text: str) -> tuple[IPNetwork, ...]:
    allowed = "IP networks such as 192.0.2.0/24 or 2001:db8::/32, separated by spaces or commas"
    found: dict[IPNetwork, None] = {}
    for token in _tokens(text):
        try:
            found[ipaddress.ip_network(token, strict=False)] = None
        except ValueError:
            raise InvalidValueError(f'"{token}" is not an IP network', allowed) from None
    return tuple(found)


def _modes(text: str) -> Mode:
    allowed = ", ".join(MODE_NAMES)
    modes = Mode(0)
    for token in _tokens(text.lower()):
        if token not in MODE_NAMES:
            raise InvalidValueError(f'"{token}" is not a mode', allowed)
        modes |= MODE_NAMES[token]
    if not modes:
        raise InvalidValueError("names no mode", allowed)
    return modes


def _test_ports(text: str) -> tuple[int, int] | None:
    allowed = "any, or LO-HI with 1024 <= LO <= HI <= 65535"
    if text.strip().lower() == "any":
        return None
    match = re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*", text)
    if not match:
        raise InvalidValueError("not a port range", allowed)
    low, high = int(match[1]), int(match[2])
    if not 1024 <= low <= high <= 65535:
        raise InvalidValueError("not a usable port range", allowed)
    return low, high


def _ports(text: str) -> tuple[int, ...]:
    allowed = "UDP ports 1 to 65535 separated by spaces or commas, or nothing for none"
    found: dict[int, None] = {}
    for token in _tokens(text):
        if not re.fullmatch(r"[0-9]+", token) or not 1 <= int(token) <= 65535:
            raise InvalidValueError(f'"{token}" is not a port', allowed)
        found[int(token)] = None
    return tuple(found)


def _stamp_mode(text: str) -> str:
    word = text.strip().lower()
    if word not in STAMP_MODES:
        raise InvalidValueError("not a STAMP reflector mode", " or ".join(STAMP_MODES))
    return word


def _key_id(text: str) -> bytes | None:
    """A KeyID; nothing at all (``stamp_key_id =``) is no KeyID."""
    allowed = f"a KeyID of the keys file (1 to {keys.KEY_ID_MAX} octets, no spaces)"
    key_id = text.strip().encode()
    if not key_id:
        return None
    if len(key_id) > keys.KEY_ID_MAX or _SEPARATORS.search(text.strip()):
        raise InvalidValueError("not a KeyID", allowed)
    return key_id


def _yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("yes", "no", "true", "false", "on", "off"):
        raise InvalidValueError("not yes or no", "yes or no")
    return word in ("yes", "true", "on")


def _pbkdf2_count(text: str) -> int:
    allowed = "a power of two from 1024 to 16777216"
    count = _whole(text, allowed)
    if not 1024 <= count <= 2**24 or count & (count - 1):
        raise InvalidValueError("not a power of two in range", allowed)
    return count


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise InvalidValueError("not a log level", ", ".join(LOG_LEVELS))
    return level


# ----------------------------------------------------------------------------------------------
# The file's structure.


def _lines(text: str) -> list[str]:
    # Split exactly as configparser does when it reads a string, so line numbers agree.
    return list(io.StringIO(text))


def _strip_comment(line: str) -> str:
    """The line as configparser sees it: full-line and whitespace-led inline comments gone."""
    stripped = line.strip()
    if stripped.startswith(("#", ";")):
        return ""
    for index, char in enumerate(line):
        if char in "#;" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip()
    return stripped


def _scan(text: str, path: Path | None) -> tuple[dict[str, int], bool]:
    """The line of every key, and whether a ``[server]`` header opens the file.

    configparser gives no line numbers for values, so this walk mirrors its reading (comments,
    indented continuation lines, blank lines ending a value) and catches what it would report
    less clearly: other sections, keys set twice, lines that are not ``key = value``.
    """
    lines: dict[str, int] = {}
    header_line: int | None = None
    value_indent: int | None = None  # indent of the key whose value may continue
    for number, line in enumerate(_lines(text), start=1):
        content = _strip_comment(line)
        if not content:
            value_indent = None
            continue
        indent = len(line) - len(line.lstrip())
        if value_indent is not None and indent > value_indent:
            continue
        value_indent = None
        if content.startswith("["):
            match = re.fullmatch(r"\[(.+)\]", content)
            name = match[1] if match else content
            allowed = f"[{SECTION}] once, before the first key, or no section at all"
            if name != SECTION:
                raise ConfigError(
                    f"section {content} is not known", path=path, line=number, allowed=allowed
                )
            if header_line is not None or lines:
                raise ConfigError(
                    f"section [{SECTION}] comes too late", path=path, line=number, allowed=allowed
                )
            header_line = number
            continue
        key, equals, _ = content.partition("=")
        key = key.strip().lower()  # configparser's optionxform lowercases keys too
        if not equals or not key:
            raise ConfigError(
                f'"{content}" is not a setting', path=path, line=number, allowed="key = value"
            )
        if key in lines:
            raise ConfigError(
                f"set twice (first on line {lines[key]})", path=path, line=number, key=key
            )
        lines[key] = number
        value_indent = indent
    return lines, header_line is not None


def _read_values(text: str, path: Path | None) -> tuple[dict[str, str], dict[str, int]]:
    """Every ``key: value`` of the file with the line each key is on."""
    lines, has_header = _scan(text, path)
    parser = configparser.ConfigParser(
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#", ";"),
        empty_lines_in_values=False,
        interpolation=None,
        default_section="\0",  # no [DEFAULT] magic: _scan already refused other sections
    )
    source = _lines(text) if has_header else [f"[{SECTION}]\n", *_lines(text)]
    try:
        parser.read_file(source, source=str(path) if path else "<config>")
    except configparser.Error as error:  # _scan catches these first; this is a backstop
        number = getattr(error, "lineno", None)
        if number is not None and not has_header:
            number -= 1
        raise ConfigError(error.message.splitlines()[0], path=path, line=number) from None
    values = dict(parser[SECTION]) if parser.has_section(SECTION) else {}
    for key in values:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            raise ConfigError(
                f"unknown key (did you mean {close[0]}?)" if close else "unknown key",
                path=path,
                line=lines.get(key),
                key=key,
                value=values[key],
                allowed=", ".join(KNOWN_KEYS),
            )
    return values, lines


class _Settings:
    """The file's values, with what it takes to say where a bad one was."""

    def __init__(self, values: dict[str, str], lines: dict[str, int], path: Path | None) -> None:
        self.values = values
        self.lines = lines
        self.path = path

    def get(self, key: str, parse: Callable[[str], _T], default: _T) -> _T:
        if key not in self.values:
            return default
        try:
            return parse(self.values[key])
        except InvalidValueError as invalid:
            raise self.error(key, invalid.reason, invalid.allowed) from None

    def error(self, key: str, reason: str, allowed: str | None = None) -> ConfigError:
        return ConfigError(
            reason,
            path=self.path,
            line=self.lines.get(key),
            key=key,
            value=self.values.get(key),
            allowed=allowed,
        )


# ----------------------------------------------------------------------------------------------
# Keys file.


def _load_keys(settings: _Settings) -> tuple[KeyStore, Path | None]:
    value = settings.values.get("keys_file")
    if value is not None and not value.strip():
        return KeyStore(), None  # "keys_file =" turns keys off
    if value is None:
        keys_path = DEFAULT_KEYS_PATH
    elif settings.path is not None:
        keys_path = settings.path.parent / value.strip()
    else:
        keys_path = Path(value.strip())
    try:
        return read_keys(keys_path), keys_path
    except FileNotFoundError:
        if value is None:
            return KeyStore(), None
        raise settings.error("keys_file", f"cannot read {keys_path}: no such file") from None
    except OSError as error:
        raise settings.error("keys_file", f"cannot read {keys_path}: {error.strerror}") from None


# ----------------------------------------------------------------------------------------------
# The whole file.


def _session_limits(settings: _Settings, max_sessions: int) -> tuple[int, int]:
    """max_sessions_per_client and max_sessions_per_network, between it and max_sessions."""
    per_client = settings.get(
        "max_sessions_per_client",
        _integer(1, 100000),
        max(1, int(max_sessions * SESSIONS_PER_CLIENT_SHARE)),
    )
    if per_client > max_sessions:
        raise settings.error(
            "max_sessions_per_client",
            "more than max_sessions",
            f"1 to {max_sessions} (max_sessions)",
        )
    per_network = settings.get(
        "max_sessions_per_network",
        _integer(1, 100000),
        min(per_client * SESSIONS_PER_NETWORK_CLIENTS, max_sessions),
    )
    if not per_client <= per_network <= max_sessions:
        raise settings.error(
            "max_sessions_per_network",
            "not between max_sessions_per_client and max_sessions",
            f"{per_client} (max_sessions_per_client) to {max_sessions} (max_sessions)",
        )
    return per_client, per_network


def _network_limits(
    settings: _Settings, max_connections: int, per_client: int
) -> tuple[int, int, int]:
    """The per-client limit checked against max_connections, max_connections_per_network (never
    below the per-client limit) and the prefixes."""
    if per_client > max_connections:
        raise settings.error(
            "max_connections_per_client",
            "more than max_connections",
            f"1 to {max_connections} (max_connections)",
        )
    per_network = settings.get(
        "max_connections_per_network",
        _integer(1, 100000),
        min(max(MAX_CONNECTIONS_PER_NETWORK, per_client), max_connections),
    )
    if per_network < min(per_client, max_connections):
        raise settings.error(
            "max_connections_per_network",
            "less than max_connections_per_client",
            f"{per_client} (max_connections_per_client) to {max_connections}",
        )
    ipv4_prefix = settings.get("ipv4_network_prefix", _integer(8, 32), 24)
    ipv6_prefix = settings.get("ipv6_network_prefix", _integer(16, 128), 64)
    return per_network, ipv4_prefix, ipv6_prefix


def _idle_limits(settings: _Settings, max_connections: int, per_client: int) -> tuple[int, int]:
    """max_idle_connections and reserved_connections, both within max_connections."""
    max_idle = settings.get(
        "max_idle_connections",
        _integer(1, 100000),
        max(per_client, int(max_connections * IDLE_CONNECTIONS_SHARE)),
    )
    reserved = settings.get(
        "reserved_connections",
        _integer(0, 100000),
        int(max_connections * RESERVED_CONNECTIONS_SHARE),
    )
    if max_idle > max_connections:
        raise settings.error(
            "max_idle_connections",
            "more than max_connections",
            f"1 to {max_connections} (max_connections)",
        )
    if reserved >= max_connections:
        raise settings.error(
            "reserved_connections",
            "leaves no slot of max_connections unreserved",
            f"0 to {max_connections - 1} (max_connections - 1)",
        )
    return max_idle, reserved


def _stamp_settings(
    settings: _Settings, test_port: int, light_ports: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[IPNetwork, ...], str, bytes | None, int]:
    """stamp_ports, stamp_allow, stamp_mode, stamp_key_id, stamp_sessions_per_address.

    A UDP port serves one protocol: STAMP ports are neither test_port nor a Light port
    (control_port is TCP: STAMP's UDP 862 and TWAMP-Control's TCP 862 do not meet).
    """
    get = settings.get
    stamp_ports = get("stamp_ports", _ports, _NO_PORTS)
    allow = get("stamp_allow", _network_list, _NOWHERE)
    mode = get("stamp_mode", _stamp_mode, "stateful")
    key_id = get("stamp_key_id", _key_id, None)
    per_address = get("stamp_sessions_per_address", _integer(1, 100000), 16)
    taken = {test_port: f"test_port {test_port}", **{p: f"light port {p}" for p in light_ports}}
    for port in stamp_ports:
        if port in taken:
            raise settings.error(
                "stamp_ports",
                f"{taken[port]} is a TWAMP-Test port already",
                "UDP ports other than test_port and light_ports",
            )
    return stamp_ports, allow, mode, key_id, per_address


def _stamp_warnings(
    settings: _Settings,
    ports: tuple[int, ...],
    allow: tuple[IPNetwork, ...],
    key_id: bytes | None,
    key_store: KeyStore,
) -> list[str]:
    """stamp_key_id checked against the keys file; what looks wrong about the STAMP keys."""
    if key_id is not None and key_id not in key_store:
        raise settings.error(
            "stamp_key_id",
            "no such KeyID in the keys file" if key_store else "no keys file holds keys",
            "a KeyID of the keys file, or no stamp_key_id for unauthenticated STAMP",
        )
    warnings = []
    if ports and not allow:
        warnings.append("stamp_ports set but stamp_allow is empty: STAMP answers nobody")
    if allow and not ports:
        warnings.append("stamp_allow set but stamp_ports is empty: STAMP is off")
    if key_id is not None and not ports:
        warnings.append("stamp_key_id set but stamp_ports is empty: STAMP is off")
    return warnings


def parse_config(text: str, path: Path | None = None) -> Config:
    """Check the text of a configuration file; ``path`` is for messages and the keys file."""
    # A byte-order mark, which some editors write, is not part of the first key.
    settings = _Settings(*_read_values(text.removeprefix("\ufeff"), path), path)
    get = settings.get
    # Each value alone first, in the shipped file's order; then the rules between values.
    control_port = get("control_port", _integer(1, 65535), 862)
    test_port = get("test_port", _integer(1, 65535), 863)
    max_sessions = get("max_sessions", _integer(1, 100000), 100)
    per_client, sessions_per_network = _session_limits(settings, max_sessions)
    minutes = _number(0, 1440, above=True, unit="minutes")
    session_timeout = get("session_timeout", minutes, 5.0)
    seconds = _number(0, 86400, above=True, unit="seconds")
    control_timeout = get("control_timeout", seconds, 900.0)
    max_connections = get("max_connections", _integer(1, 100000), 1000)
    connections_per_client = get(
        "max_connections_per_client",
        _integer(1, 100000),
        min(MAX_CONNECTIONS_PER_CLIENT, max_connections),
    )
    connections_per_network, ipv4_prefix, ipv6_prefix = _network_limits(
        settings, max_connections, connections_per_client
    )
    idle_timeout = get("idle_timeout", seconds, 30.0)
    max_idle, reserved = _idle_limits(settings, max_connections, connections_per_client)
    listen = get("listen", _addresses, _DEFAULT_LISTEN)
    modes = get("modes", _modes, SECURITY_MODES)
    allow = get("allow", _network_list, _EVERYWHERE)
    bounded: tuple[int, int] | None = DEFAULT_TEST_PORTS
    test_ports = get("test_ports", _test_ports, bounded)
    light_ports = get("light_ports", _ports, _NO_PORTS)
    light_allow = get("light_allow", _network_list, _NOWHERE)
    light_per_address = get("light_senders_per_address", _integer(1, 100000), 16)
    light_short = get("light_short_requests", _yes_no, False)
    stamp_ports, stamp_allow, stamp_mode, stamp_key_id, stamp_per_address = _stamp_settings(
        settings, test_port, light_ports
    )
    pbkdf2_count = get("pbkdf2_count", _pbkdf2_count, 8192)
    interval = _number(STATUS_INTERVAL_MIN, math.inf, above=False, unit="seconds")
    status_interval = get("status_interval", interval, 10.0)
    log_level = get("log_level", _log_level, "info")

    if test_port in light_ports:
        raise settings.error(
            "light_ports",
            f"test_port {test_port} is a TWAMP-Test port already",
            f"UDP ports other than test_port {test_port}",
        )
    key_store, keys_file = _load_keys(settings)
    warnings = _stamp_warnings(settings, stamp_ports, stamp_allow, stamp_key_id, key_store)
    if modes & SECURE_CONTROL_MODES and not key_store:
        modes &= Mode.UNAUTHENTICATED
        if not modes:
            raise settings.error(
                "modes",
                "authenticated, encrypted and mixed modes need keys and there are none",
                "unauthenticated, or a keys_file that holds keys",
            )
        warnings.append("no keys: only unauthenticated mode is offered")
    if not allow:
        warnings.append("allow is empty: every control connection is refused")
    if light_ports and not light_allow:
        warnings.append("light_ports set but light_allow is empty: TWAMP Light answers nobody")
    if light_allow and not light_ports:
        warnings.append("light_allow set but light_ports is empty: TWAMP Light is off")
    if test_ports is not None:
        low, high = test_ports
        warnings.extend(
            f"{kind} port {port} lies in test_ports {low}-{high}: "
            "test sessions asking for it are refused"
            for kind, ports in (("light", light_ports), ("stamp", stamp_ports))
            for port in ports
            if low <= port <= high
        )

    return Config(
        path=path,
        control_port=control_port,
        test_port=test_port,
        max_sessions=max_sessions,
        max_sessions_per_client=per_client,
        max_sessions_per_network=sessions_per_network,
        session_timeout=session_timeout,
        control_timeout=control_timeout,
        max_connections=max_connections,
        max_connections_per_client=connections_per_client,
        max_connections_per_network=min(connections_per_network, max_connections),
        ipv4_network_prefix=ipv4_prefix,
        ipv6_network_prefix=ipv6_prefix,
        idle_timeout=idle_timeout,
        max_idle_connections=max_idle,
        reserved_connections=reserved,
        listen=listen,
        modes=modes,
        keys_file=keys_file,
        keys=key_store,
        _allow=allow,
        test_ports=test_ports,
        light_ports=light_ports,
        _light_allow=light_allow,
        light_senders_per_address=light_per_address,
        light_short_requests=light_short,
        stamp_ports=stamp_ports,
        _stamp_allow=stamp_allow,
        stamp_mode=stamp_mode,
        stamp_key_id=stamp_key_id,
        stamp_sessions_per_address=stamp_per_address,
        pbkdf2_count=pbkdf2_count,
        status_interval=status_interval,
        log_level=log_level,
        warnings=tuple(warnings),
    )


def load_config(path: Path) -> Config:
    """Read and check the configuration file at ``path``; keys_file is relative to its folder."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path=path) from None
    return parse_config(decode(data, path), path)


__all__ = [
    "DEFAULT_KEYS_PATH",
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "load_config",
    "parse_config",
]
