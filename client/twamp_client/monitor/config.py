"""The monitor's configuration: ``[monitor]``, ``[target NAME]`` and ``[schedule NAME]``.

Read with the standard library's configparser, then checked key by key: a mistake stops the start
(or keeps the old configuration on SIGHUP) with one :class:`ConfigError` sentence naming the
file, the line, the key, the value and what would have been accepted.  ``[monitor]`` also holds
defaults for every target key.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from twamp_common.codes import Mode
from twamp_common.ipfix import DOCUMENTATION_PEN
from twamp_common.sender_codec import stamp_header_size
from twamp_common.service import ConfigError, InvalidValueError
from twamp_common.stamp_sender import TLV_CHOICES, StampSetup, parse_tlv_choices, sender_tlvs
from twamp_common.traffic import BANDWIDTH_FORMS, MODELS, ModelError, TrafficModel, parse_bandwidth
from twamp_common.traffic import schedule as model_schedule

from ..keyfile import KeyFileError, read_secret_file
from ..measurement import Target, Test, stamp_mode
from ..options import MIN_INTERVAL_MS, MODES, UsageError, split_host_port

DEFAULT_PATH = Path("/etc/twamp/twamp-monitor.conf")
DEFAULT_HISTORY = "/var/lib/twamp-monitor/history.sqlite"

_MONITOR_KEYS = (
    "metrics_listen",
    "history",
    "history_days",
    "ipfix_collector",
    "ipfix_transport",
    "ipfix_observation_domain",
    "ipfix_enterprise",
    "ipfix_template_refresh",
)
_TARGET_KEYS = (
    "address", "light", "stamp", "stamp_tlv", "ssid", "mode", "key_id", "key_file", "count",
    "interval", "model", "bandwidth", "size", "every", "schedule", "dscp", "ttl", "df", "source",
    "reflector_port", "labels", "enabled",
)  # fmt: skip
_SCHEDULE_KEYS = ("every",)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Labels the monitor sets itself on every series.
RESERVED_LABELS = frozenset({"target", "direction", "result", "le"})

_T = TypeVar("_T")
#: configparser's own "where" prefix, replaced by ours.
_READING_FROM = re.compile(r"^While reading from .*?\[line\s*\d+\]: ")


@dataclasses.dataclass(frozen=True, slots=True)
class TargetConfig:
    """One path to measure; two equal TargetConfigs measure the same way (reload compares them)."""

    name: str
    target: Target
    test: Test
    #: Seconds between the starts of two runs.
    every: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class IpfixConfig:
    """Where and how every run's record is exported (RFC 7011)."""

    #: Collectors as numeric (address, port): names are resolved when the file is read.
    collectors: tuple[tuple[str, int], ...]
    transport: str
    observation_domain: int
    enterprise: int
    template_refresh: float


@dataclasses.dataclass(frozen=True, slots=True)
class MonitorConfig:
    path: Path | None
    #: (host, port) of the Prometheus endpoint, or None.
    metrics_listen: tuple[str, int] | None
    history: Path | None
    history_days: float
    #: The enabled targets, by name.
    targets: Mapping[str, TargetConfig]
    #: IPFIX export, or None.
    ipfix: IpfixConfig | None = None


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in configparser.ConfigParser.BOOLEAN_STATES:
        raise InvalidValueError("not a yes/no value", "yes, no, true, false, on, off, 1, 0")
    return configparser.ConfigParser.BOOLEAN_STATES[lowered]


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        allowed = f"a whole number from {low} to {high}"
        try:
            value = int(text.strip())
        except ValueError:
            raise InvalidValueError("not a whole number", allowed) from None
        if not low <= value <= high:
            raise InvalidValueError("out of range", allowed)
        return value

    return parse


def _number(low: float, unit: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        allowed = f"a number of at least {low:g} ({unit})"
        try:
            value = float(text.strip())
        except ValueError:
            raise InvalidValueError("not a number", allowed) from None
        if not (value >= low and value < float("inf")):
            raise InvalidValueError("out of range", allowed)
        return value

    return parse


def _address(text: str) -> Target:
    try:
        host, port = split_host_port(text.strip(), None)
    except UsageError as error:
        raise InvalidValueError(str(error), "HOST, HOST:PORT, [IPv6]:PORT") from None
    return Target(host, port)


def _source(text: str) -> tuple[str, int]:
    allowed = "an IP address, ADDRESS:PORT or [IPv6]:PORT"
    try:
        host, port = split_host_port(text.strip(), 0)
        ipaddress.ip_address(host)
    except (UsageError, ValueError):
        raise InvalidValueError("not a local IP address", allowed) from None
    return host, port or 0


def _mode(text: str) -> Mode:
    name = text.strip().lower()
    if name not in MODES:
        raise InvalidValueError("not a mode", ", ".join(MODES))
    return MODES[name]


def _bandwidth(text: str) -> int:
    try:
        return parse_bandwidth(text)
    except ModelError as error:
        raise InvalidValueError(str(error), BANDWIDTH_FORMS) from None


def _model(text: str) -> str:
    name = text.strip().lower()
    if name not in MODELS:
        raise InvalidValueError("not a traffic model", ", ".join(MODELS))
    return name


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    allowed = "name=value, ... with Prometheus label names other than " + ", ".join(
        sorted(RESERVED_LABELS)
    )
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise InvalidValueError(f'"{item}" is not name=value', allowed)
        if name in RESERVED_LABELS:
            raise InvalidValueError(f'"{name}" is set by the monitor itself', allowed)
        if name in labels:
            raise InvalidValueError(f'"{name}" is given twice', allowed)
        labels[name] = value
    return tuple(sorted(labels.items()))


def _collectors(text: str) -> tuple[tuple[str, int], ...]:
    """HOST:PORT, ... resolved to numeric addresses now: a name that does not resolve is an
    error of the file, not a silent loss of every record later."""
    allowed = "HOST:PORT, [IPv6]:PORT, several separated by commas"
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            host, port = split_host_port(item, None)
        except UsageError:
            raise InvalidValueError(f"{item!r} is not HOST:PORT", allowed) from None
        if port is None:
            raise InvalidValueError(f"{item!r} names no port (IPFIX's is 4739)", allowed)
        try:
            address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4]
        except socket.gaierror as error:
            raise InvalidValueError(
                f"{host!r} does not resolve: {error.strerror}", allowed
            ) from None
        found.append((str(address[0]), int(address[1])))
    return tuple(found)


def _transport(text: str) -> str:
    if text.strip().lower() not in ("udp", "tcp"):
        raise InvalidValueError("not an IPFIX transport", "udp, tcp")
    return text.strip().lower()


def _ipfix(defaults: _Section) -> IpfixConfig | None:
    none: tuple[tuple[str, int], ...] = ()
    collectors = defaults.get("ipfix_collector", _collectors, none)
    if not collectors:
        for key in _MONITOR_KEYS:
            if key.startswith("ipfix_") and key != "ipfix_collector" and defaults.has(key):
                raise defaults.error(key, "only with ipfix_collector")
        return None
    return IpfixConfig(
        collectors=collectors,
        transport=defaults.get("ipfix_transport", _transport, "udp"),
        observation_domain=defaults.get("ipfix_observation_domain", _integer(0, 2**32 - 1), 0),
        enterprise=defaults.get("ipfix_enterprise", _integer(1, 2**32 - 1), DOCUMENTATION_PEN),
        template_refresh=defaults.get("ipfix_template_refresh", _number(1, "seconds"), 600.0),
    )


def _listen(text: str) -> tuple[str, int] | None:
    if not text.strip():
        return None
    allowed = "HOST:PORT, [IPv6]:PORT, or empty for no metrics endpoint"
    try:
        host, port = split_host_port(text.strip(), None)
    except UsageError:
        raise InvalidValueError("not HOST:PORT", allowed) from None
    if port is None:
        raise InvalidValueError("names no port", allowed)
    return host, port


class _Section:
    """One section's values (with ``[monitor]``'s as defaults) and the line of each key."""

    def __init__(
        self,
        title: str,
        values: Mapping[str, str],
        defaults: Mapping[str, str],
        lines: Mapping[str, int],
        path: Path | None,
    ) -> None:
        self.title = title
        self.values = values
        self.defaults = defaults
        self.lines = lines
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.values or key in self.defaults

    def raw(self, key: str) -> str | None:
        return self.values.get(key, self.defaults.get(key))

    def get(self, key: str, parse: Callable[[str], _T], default: _T) -> _T:
        text = self.raw(key)
        if text is None:
            return default
        try:
            return parse(text)
        except InvalidValueError as invalid:
            raise self.error(key, invalid.reason, invalid.allowed) from None

    def error(self, key: str | None, reason: str, allowed: str | None = None) -> ConfigError:
        """Where ``key`` was written: this section, or ``[monitor]`` when inherited from it."""
        if key is None:
            where = self.lines.get(f"{self.title}.")
            return ConfigError(f"[{self.title}]: {reason}", path=self.path, line=where)
        own = key in self.values
        return ConfigError(
            reason if own else f"{reason} (inherited by [{self.title}])",
            path=self.path,
            line=self.lines.get(f"{self.title}.{key}" if own else f"monitor.{key}"),
            key=key,
            value=None if key == "key_file" else self.raw(key),
            allowed=allowed,
        )


def _key_lines(text: str) -> dict[str, int]:
    """``section.key`` (and ``section.`` for the header) → its line number, for messages."""
    lines: dict[str, int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0].isspace():
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section = " ".join(stripped[1:-1].split())
            lines.setdefault(f"{section}.", number)
            continue
        key = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
        lines.setdefault(f"{section}.{key}", number)
    return lines


def read(path: Path = DEFAULT_PATH) -> MonitorConfig:
    """The configuration in ``path``; ConfigError when it cannot be read or used."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=path) from None
    return parse(text, path)


def parse(text: str, path: Path | None = None) -> MonitorConfig:
    """The configuration ``text`` holds (``path`` only names it in messages)."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        parser.read_string(text, source=str(path or "<config>"))
    except configparser.Error as error:
        reason = _READING_FROM.sub("", str(error).splitlines()[0])
        raise ConfigError(reason, path=path, line=getattr(error, "lineno", None)) from None
    lines = _key_lines(text)
    monitor_values = dict(parser["monitor"]) if parser.has_section("monitor") else {}
    schedules: dict[str, float] = {}
    target_sections: list[tuple[str, dict[str, str]]] = []
    for title in parser.sections():
        kind, _, name = title.partition(" ")
        name = name.strip()
        values = dict(parser[title])
        section = _Section(title, values, {}, lines, path)
        _check_keys(section, "monitor" if title == "monitor" else kind if name else "")
        if kind == "schedule":
            if "every" not in values:
                raise section.error(None, "a schedule needs every = SECONDS")
            schedules[name] = section.get("every", _number(0.001, "seconds"), 60.0)
        elif kind == "target":
            target_sections.append((name, values))
    defaults = _Section("monitor", monitor_values, {}, lines, path)
    history_text = defaults.raw("history")
    history = Path(DEFAULT_HISTORY) if history_text is None else Path(history_text.strip())
    targets: dict[str, TargetConfig] = {}
    for name, values in target_sections:
        section = _Section(f"target {name}", values, monitor_values, lines, path)
        if not section.get("enabled", _boolean, True):
            continue
        targets[name] = _target(name, section, schedules)
    return MonitorConfig(
        path=path,
        metrics_listen=defaults.get("metrics_listen", _listen, None),
        history=history if history_text is None or history_text.strip() else None,
        history_days=defaults.get("history_days", _number(0.001, "days"), 30.0),
        targets=targets,
        ipfix=_ipfix(defaults),
    )


def _check_keys(section: _Section, kind: str) -> None:
    """ConfigError for an unknown section, or a key its kind of section does not have."""
    known = {
        "monitor": _MONITOR_KEYS + _TARGET_KEYS,
        "schedule": _SCHEDULE_KEYS,
        "target": _TARGET_KEYS,
    }.get(kind)  # "monitor x" or a nameless "target" come here as ""
    if known is None:
        raise ConfigError(
            f"section [{section.title}] is not known",
            path=section.path,
            line=section.lines.get(f"{section.title}."),
            allowed="[monitor], [target NAME], [schedule NAME]",
        )
    for key in section.values:
        if key not in known:
            raise section.error(key, "unknown key", ", ".join(known))


def _target(name: str, section: _Section, schedules: Mapping[str, float]) -> TargetConfig:
    if not section.has("address"):
        raise section.error(None, "a target needs address = HOST[:PORT]")
    address = section.get("address", _address, Target(""))
    light = section.get("light", _boolean, False)
    stamp = section.get("stamp", _boolean, False)
    if light and stamp:
        raise section.error("stamp", "a target is TWAMP Light or STAMP, not both")
    target = Target(address.host, address.port, light, stamp)
    mode = section.get("mode", _mode, None)
    key_id = section.raw("key_id")
    key_id = key_id.strip() if key_id is not None and key_id.strip() else None
    if light and (key_id or mode not in (None, Mode.UNAUTHENTICATED)):
        raise section.error("mode", "TWAMP Light targets are unauthenticated", "unauthenticated")
    stamp_tlvs, ssid, mode = _stamp(section, stamp, mode, key_id)
    secure = mode in (Mode.AUTHENTICATED, Mode.ENCRYPTED, Mode.MIXED)
    if secure and key_id is None:
        raise section.error("mode", "a secure mode needs key_id and key_file")
    secret = None
    if key_id is not None:
        if len(key_id.encode()) > 80:
            raise section.error("key_id", "longer than 80 octets (RFC 4656 KeyID)")
        secret = _secret(section, key_id)
    elif section.has("key_file"):
        raise section.error("key_file", "holds the secret of a key_id: add key_id")
    if section.has("every") and section.has("schedule"):
        raise section.error("schedule", "give every or schedule, not both")
    every = section.get("every", _number(0.001, "seconds"), 60.0)
    if section.has("schedule"):
        schedule = (section.raw("schedule") or "").strip()
        if schedule not in schedules:
            raise section.error(
                "schedule", "no such [schedule NAME] section", ", ".join(schedules) or "none"
            )
        every = schedules[schedule]
    dscp = section.get("dscp", _integer(0, 63), 0)
    stamp_header = None
    if stamp:
        setup = StampSetup(
            tlvs=sender_tlvs(stamp_tlvs, dscp=dscp),
            authenticated=secure,
            key=b"" if secure or "hmac" in stamp_tlvs else None,
        )
        stamp_header = stamp_header_size(setup)
    model = _traffic_model(section, authenticated=secure, stamp_header=stamp_header)
    interval_ms = section.get("interval", _number(MIN_INTERVAL_MS, "milliseconds"), 1000.0)
    # A model sets the interval: only one written in the target itself contradicts it (a
    # [monitor] default is for the targets without a model).
    if model is not None and "interval" in section.values:
        raise section.error("interval", "give interval or model, not both")
    test = Test(
        count=section.get("count", _integer(1, 10_000_000), 10),
        interval_ms=interval_ms,
        dscp=dscp,
        ttl=section.get("ttl", _integer(1, 255), 255),
        dont_fragment=section.get("df", _boolean, False),
        mode=mode,
        key_id=key_id,
        secret=secret,
        reflector_port=section.get("reflector_port", _integer(0, 65535), 0),
        source=section.get("source", _source, None),
        traffic=model,
        stamp_tlvs=stamp_tlvs,
        ssid=ssid,
    )
    return TargetConfig(
        name=name,
        target=target,
        test=test,
        every=every,
        labels=section.get("labels", _labels, ()),
    )


def _stamp(
    section: _Section, stamp: bool, mode: Mode | None, key_id: str | None
) -> tuple[tuple[str, ...], int | None, Mode | None]:
    """stamp_tlv and ssid checked, and the mode of a STAMP target (a key_id alone means
    authenticated, as on the command line)."""
    if not stamp:
        for key in ("stamp_tlv", "ssid"):
            if section.has(key):
                raise section.error(key, "only with stamp = yes")
        return (), None, mode
    try:
        tlvs = parse_tlv_choices([section.raw("stamp_tlv") or ""])
    except ValueError as error:
        raise section.error("stamp_tlv", str(error), ", ".join(TLV_CHOICES)) from None
    try:
        mode = stamp_mode(mode, keyed=key_id is not None, tlvs=tlvs)
    except ValueError as error:
        key = "stamp_tlv" if "hmac" in tlvs and key_id is None else "mode"
        raise section.error(key, str(error)) from None
    return tlvs, section.get("ssid", _integer(1, 65535), None), mode


def _traffic_model(
    section: _Section, *, authenticated: bool, stamp_header: int | None = None
) -> TrafficModel | None:
    name = section.get("model", _model, None)
    sized = ("bandwidth", "size")
    if name is None:
        for key in sized:
            if section.has(key):
                raise section.error(key, "only with model = cbr or imix")
        return None
    needs = {"g711": (), "g729": (), "cbr": sized, "imix": ("bandwidth",)}[name]
    for key in sized:
        if key in needs and not section.has(key):
            raise section.error(None, f"model = {name} needs {key}")
        if key not in needs and section.has(key):
            raise section.error(key, f"not used by model = {name}")
    bandwidth = section.get("bandwidth", _bandwidth, None)
    size = section.get("size", _integer(1, 65535), None)
    try:  # over IPv4, whose smaller headers leave the least room: what fits there fits on IPv6
        model = TrafficModel(name, bandwidth, size)
        model_schedule(model, ip_version=4, authenticated=authenticated, stamp_header=stamp_header)
    except ModelError as error:
        raise section.error("size" if size is not None and "size" in str(error) else "bandwidth",
                            str(error)) from None  # fmt: skip
    return model


def _secret(section: _Section, key_id: str) -> bytes:
    """The secret of ``key_id`` from key_file, read as twamp-client reads --key-file (the
    server's keys file, a bare passphrase), so that one file serves every tool."""
    if not section.has("key_file"):
        raise section.error("key_id", "needs key_file = PATH holding its shared secret")
    path = Path((section.raw("key_file") or "").strip())
    try:
        return read_secret_file(path, key_id)
    except KeyFileError as error:
        raise section.error("key_file", str(error)) from None
