"""IPFIX (RFC 7011) export of measurement results: records in, complete messages out.

Our own small encoder, not the ``ipfix`` package (PyPI and Debian ``python3-ipfix`` 0.9.7): that
one does encode templates with enterprise elements correctly, but it is alpha, unmaintained
since 2014, and wants naive UTC datetimes for its time elements; what we need of RFC 7011 (a
message header, template sets, data sets, a dozen abstract data types) is short enough to own.

Sans-I/O like the rest of ``twamp_common``: :class:`Exporter` turns records (plain mappings
from element name to value) into IPFIX messages, ``now`` passed in and never read inside; the
caller sends each message as one UDP datagram, or writes them in turn on a TCP connection (the
length field frames them).  One :class:`Exporter` per collector: its sequence number and its
record of which templates were sent belong to one transport session.

A value that is not known (forward loss when the reflector's numbering cannot tell it, a MOS
that was not computed, delays when nothing came back) is left out of the record, or given as
None: RFC 7011 has no null, and a sentinel (0, NaN, all ones) would be read as a figure by a
collector that does not know our convention.  A record therefore uses the template of exactly
the elements it carries, in :data:`ELEMENTS` order; templates are numbered from 256 as new
combinations appear and a number is never redefined, so no template withdrawal is needed.  The
IPv4 and IPv6 templates differ in the same way: by the address elements present
(:func:`endpoint_fields` picks them from the address type).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
import struct
from collections.abc import Mapping, Sequence

from .errors import LocalProtocolError

#: IPFIX's version number in the message header (RFC 7011 §3.1).
VERSION = 10
#: RFC 5612's Private Enterprise Number for documentation and examples: the default, which a
#: deployment should replace with its own.
DOCUMENTATION_PEN = 32473
#: IANA's registered port for IPFIX over UDP, TCP and SCTP (RFC 7011 §10).
IPFIX_PORT = 4739
TEMPLATE_SET_ID = 2
#: Template IDs 0–255 are reserved for set IDs (RFC 7011 §3.4.1).
FIRST_TEMPLATE_ID = 256
#: An IPv4 UDP datagram that fits a 1500-octet Ethernet MTU: 1500 − 20 − 8.
DEFAULT_MAX_MESSAGE_SIZE = 1472
MESSAGE_HEADER = struct.Struct("!HHIII")
SET_HEADER = struct.Struct("!HH")
_ENTERPRISE_BIT = 0x8000
#: Field length of a variable-length element in a template (RFC 7011 §7).
VARIABLE_LENGTH = 65535
_UINT32 = 2**32


class Kind(enum.StrEnum):
    """The RFC 7011 §6.1 abstract data types this encoder writes."""

    UNSIGNED8 = "unsigned8"
    UNSIGNED16 = "unsigned16"
    UNSIGNED32 = "unsigned32"
    UNSIGNED64 = "unsigned64"
    SIGNED64 = "signed64"
    FLOAT64 = "float64"
    BOOLEAN = "boolean"
    IPV4_ADDRESS = "ipv4Address"
    IPV6_ADDRESS = "ipv6Address"
    DATE_TIME_MILLISECONDS = "dateTimeMilliseconds"
    STRING = "string"

    @property
    def length(self) -> int:
        """The field length a template gives this type (65535: variable length)."""
        return _LENGTHS[self]


_LENGTHS = {
    Kind.UNSIGNED8: 1,
    Kind.UNSIGNED16: 2,
    Kind.UNSIGNED32: 4,
    Kind.UNSIGNED64: 8,
    Kind.SIGNED64: 8,
    Kind.FLOAT64: 8,
    Kind.BOOLEAN: 1,
    Kind.IPV4_ADDRESS: 4,
    Kind.IPV6_ADDRESS: 16,
    Kind.DATE_TIME_MILLISECONDS: 8,
    Kind.STRING: VARIABLE_LENGTH,
}
_INTEGERS = {
    Kind.UNSIGNED8: ("!B", 0, 2**8),
    Kind.UNSIGNED16: ("!H", 0, 2**16),
    Kind.UNSIGNED32: ("!I", 0, 2**32),
    Kind.UNSIGNED64: ("!Q", 0, 2**64),
    Kind.SIGNED64: ("!q", -(2**63), 2**63),
    Kind.DATE_TIME_MILLISECONDS: ("!Q", 0, 2**64),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Element:
    """An information element: IANA's when ``enterprise`` is None, else enterprise-specific.

    The enterprise elements of :data:`ELEMENTS` carry :data:`DOCUMENTATION_PEN`; an
    :class:`Exporter` writes the PEN it is given instead.
    """

    name: str
    id: int
    kind: Kind
    enterprise: int | None = None

    def field_specifier(self) -> bytes:
        """This element's field specifier in a template record (RFC 7011 §3.2)."""
        if self.enterprise is None:
            return struct.pack("!HH", self.id, self.kind.length)
        return struct.pack("!HHI", _ENTERPRISE_BIT | self.id, self.kind.length, self.enterprise)


def _ours(number: int, name: str, kind: Kind) -> Element:
    return Element(name, number, kind, DOCUMENTATION_PEN)


#: Every element a record may carry, in the order templates list them; docs/ipfix.md gives
#: each one's unit and meaning.  Delays and jitter are nanoseconds; one-way delays are signed
#: because unsynchronised clocks make them negative.  Packets received is IANA's
#: postPacketTotalCount: packetTotalCount "after the packet passed" a middlebox, which is what
#: the path to the reflector and back is here.
ELEMENTS: tuple[Element, ...] = (
    Element("flowStartMilliseconds", 152, Kind.DATE_TIME_MILLISECONDS),
    Element("flowEndMilliseconds", 153, Kind.DATE_TIME_MILLISECONDS),
    Element("sourceIPv4Address", 8, Kind.IPV4_ADDRESS),
    Element("destinationIPv4Address", 12, Kind.IPV4_ADDRESS),
    Element("sourceIPv6Address", 27, Kind.IPV6_ADDRESS),
    Element("destinationIPv6Address", 28, Kind.IPV6_ADDRESS),
    Element("sourceTransportPort", 7, Kind.UNSIGNED16),
    Element("destinationTransportPort", 11, Kind.UNSIGNED16),
    Element("ipDiffServCodePoint", 195, Kind.UNSIGNED8),
    Element("packetTotalCount", 86, Kind.UNSIGNED64),
    Element("postPacketTotalCount", 172, Kind.UNSIGNED64),
    _ours(1, "roundTripDelayMin", Kind.UNSIGNED64),
    _ours(2, "roundTripDelayAvg", Kind.UNSIGNED64),
    _ours(3, "roundTripDelayMax", Kind.UNSIGNED64),
    _ours(4, "outboundDelayMin", Kind.SIGNED64),
    _ours(5, "outboundDelayAvg", Kind.SIGNED64),
    _ours(6, "outboundDelayMax", Kind.SIGNED64),
    _ours(7, "inboundDelayMin", Kind.SIGNED64),
    _ours(8, "inboundDelayAvg", Kind.SIGNED64),
    _ours(9, "inboundDelayMax", Kind.SIGNED64),
    _ours(10, "outboundJitter", Kind.UNSIGNED64),
    _ours(11, "inboundJitter", Kind.UNSIGNED64),
    _ours(12, "roundTripJitter", Kind.UNSIGNED64),
    _ours(13, "forwardLossCount", Kind.UNSIGNED64),
    _ours(14, "reverseLossCount", Kind.UNSIGNED64),
    _ours(15, "totalLossCount", Kind.UNSIGNED64),
    _ours(16, "duplicateCount", Kind.UNSIGNED64),
    _ours(17, "reorderedCount", Kind.UNSIGNED64),
    _ours(18, "outboundMos", Kind.FLOAT64),
    _ours(19, "inboundMos", Kind.FLOAT64),
    _ours(20, "targetName", Kind.STRING),
    _ours(21, "trafficModel", Kind.STRING),
    _ours(22, "securityMode", Kind.STRING),
    _ours(23, "clocksSynchronised", Kind.BOOLEAN),
    _ours(24, "hostDroppedCount", Kind.UNSIGNED64),
)
BY_NAME: Mapping[str, Element] = {element.name: element for element in ELEMENTS}
_ORDER = {element.name: index for index, element in enumerate(ELEMENTS)}


def endpoint_fields(
    source: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    source_port: int,
    destination: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination_port: int,
) -> dict[str, object]:
    """The address and port elements of a record, IPv4 or IPv6 ones by the address type."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version != dst.version:
        raise ValueError(f"source {src} and destination {dst} are of different IP versions")
    family = "IPv4" if src.version == 4 else "IPv6"
    return {
        f"source{family}Address": src,
        f"destination{family}Address": dst,
        "sourceTransportPort": source_port,
        "destinationTransportPort": destination_port,
    }


def encode_value(element: Element, value: object) -> bytes:
    """``value`` in ``element``'s type on the wire (RFC 7011 §6.1, strings per §7).

    Raises ``ValueError`` for a value of the wrong type or out of the type's range.
    """
    kind = element.kind
    if kind in _INTEGERS:
        code, low, high = _INTEGERS[kind]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{element.name} must be an integer, not {value!r}")
        if not low <= value < high:
            raise ValueError(f"{element.name} = {value} is outside {kind}'s [{low}, {high - 1}]")
        return struct.pack(code, value)
    if kind is Kind.FLOAT64:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{element.name} must be a number, not {value!r}")
        return struct.pack("!d", value)
    if kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise ValueError(f"{element.name} must be True or False, not {value!r}")
        return b"\x01" if value else b"\x02"  # RFC 7011 §6.1.5: 1 is true, 2 is false
    if kind in (Kind.IPV4_ADDRESS, Kind.IPV6_ADDRESS):
        return _address(element, value)
    if not isinstance(value, str):
        raise ValueError(f"{element.name} must be a string, not {value!r}")
    return variable_length(value.encode())


def _address(element: Element, value: object) -> bytes:
    version = 4 if element.kind is Kind.IPV4_ADDRESS else 6
    if not isinstance(value, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise ValueError(f"{element.name} must be an IPv{version} address, not {value!r}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError as error:
        raise ValueError(f"{element.name}: {error}") from None
    if address.version != version:
        raise ValueError(f"{element.name} must be an IPv{version} address, not {address}")
    return address.packed


def variable_length(content: bytes) -> bytes:
    """``content`` with RFC 7011 §7's length prefix: one octet below 255, else 255 and two."""
    if len(content) < 255:
        return bytes([len(content)]) + content
    if len(content) > 0xFFFF:
        raise ValueError(f"{len(content)} octets do not fit a variable-length field")
    return struct.pack("!BH", 255, len(content)) + content


@dataclasses.dataclass(frozen=True, slots=True)
class _Encoded:
    template_id: int
    data: bytes


class Exporter:
    """The Exporting Process of one transport session to one collector (RFC 7011 §3, §8).

    ``template_refresh`` (seconds) resends a template that long after it was last sent, for
    UDP, where the collector may have missed it or restarted; None for TCP, where a template
    is sent once per connection and :meth:`reset` starts a new connection.
    """

    def __init__(
        self,
        observation_domain: int,
        enterprise: int = DOCUMENTATION_PEN,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        template_refresh: float | None = 600.0,
    ) -> None:
        if not 0 <= observation_domain < _UINT32:
            raise ValueError(f"observation domain {observation_domain} is not an unsigned32")
        if not 0 < enterprise < _UINT32:
            raise ValueError(f"enterprise number {enterprise} is not in [1, 4294967295]")
        if not MESSAGE_HEADER.size + SET_HEADER.size < max_message_size <= 0xFFFF:
            raise ValueError(f"maximum message size {max_message_size} is not in [21, 65535]")
        if template_refresh is not None and not (
            math.isfinite(template_refresh) and template_refresh > 0
        ):
            raise ValueError(f"template refresh {template_refresh} s is not a positive time")
        self.observation_domain = observation_domain
        self.enterprise = enterprise
        self.max_message_size = max_message_size
        self.template_refresh = template_refresh
        self._elements = {
            element.name: element
            if element.enterprise is None
            else dataclasses.replace(element, enterprise=enterprise)
            for element in ELEMENTS
        }
        #: Template ID of each combination of elements, for the Exporter's whole life.
        self._templates: dict[tuple[str, ...], int] = {}
        self._template_records: dict[int, bytes] = {}
        #: When each template was last sent in this transport session.
        self._sent: dict[int, float] = {}
        self._sequence = 0

    @property
    def sequence(self) -> int:
        """Data records sent so far in this transport session, modulo 2**32."""
        return self._sequence

    def reset(self) -> None:
        """Start a new transport session (every TCP connect or reconnect): every template is
        sent again before its data, and the sequence number, which counts the records of one
        stream (RFC 7011 §3.1), starts again from 0."""
        self._sent.clear()
        self._sequence = 0

    def messages(self, records: Sequence[Mapping[str, object]], now: float) -> list[bytes]:
        """``records`` as complete IPFIX messages, in order, each at most ``max_message_size``.

        ``now`` is the Unix time in seconds: the export time and the clock of template refresh.
        Raises ``LocalProtocolError`` for an unknown element, a bad value or a record too large
        for one message; nothing is then consumed (no sequence number, no template sent).
        """
        if not (math.isfinite(now) and 0 <= now < _UINT32):
            raise ValueError(f"export time {now} is not a Unix time an IPFIX header can hold")
        encoded = [self._encode(index, record) for index, record in enumerate(records)]
        builder = _Builder(self, now)
        for item in encoded:
            builder.add(item)
        result = builder.finish()
        self._sent.update(builder.sent)
        self._sequence = builder.sequence
        return result

    def _encode(self, index: int, record: Mapping[str, object]) -> _Encoded:
        names = []
        for name, value in record.items():
            if name not in self._elements:
                raise LocalProtocolError(
                    f"record {index}: {name!r} is not an element this exporter knows",
                    message="IPFIX Data Record",
                    field=name,
                )
            if value is not None:
                names.append(name)
        if not names:
            raise LocalProtocolError(
                f"record {index} has no known value", message="IPFIX Data Record"
            )
        names.sort(key=_ORDER.__getitem__)
        data = bytearray()
        for name in names:
            try:
                data += encode_value(self._elements[name], record[name])
            except ValueError as error:
                raise LocalProtocolError(
                    f"record {index}: {error}", message="IPFIX Data Record", field=name
                ) from None
        template_id = self._template_id(tuple(names))
        limit = self.max_message_size - MESSAGE_HEADER.size - SET_HEADER.size
        if len(data) > limit:
            raise LocalProtocolError(
                f"record {index} is {len(data)} octets; at most {limit} fit a "
                f"{self.max_message_size}-octet message",
                message="IPFIX Data Record",
            )
        return _Encoded(template_id, bytes(data))

    def _template_id(self, names: tuple[str, ...]) -> int:
        template_id = self._templates.get(names)
        if template_id is not None:
            return template_id
        template_id = FIRST_TEMPLATE_ID + len(self._templates)
        if template_id > 0xFFFF:
            raise LocalProtocolError("no template ID is left", message="IPFIX Template Record")
        record = struct.pack("!HH", template_id, len(names)) + b"".join(
            self._elements[name].field_specifier() for name in names
        )
        if MESSAGE_HEADER.size + SET_HEADER.size + len(record) > self.max_message_size:
            raise LocalProtocolError(
                f"a template of {len(names)} elements does not fit a "
                f"{self.max_message_size}-octet message",
                message="IPFIX Template Record",
            )
        self._templates[names] = template_id
        self._template_records[template_id] = record
        return template_id

    def _needs_template(self, template_id: int, now: float) -> bool:
        last = self._sent.get(template_id)
        if last is None:
            return True
        if self.template_refresh is None:
            return False
        # A clock stepped backwards also resends: better once too often than never.
        return now < last or now - last >= self.template_refresh


class _Builder:
    """Packs encoded records into messages for one call of :meth:`Exporter.messages`.

    Records keep their order; consecutive records of one template share a data set; a
    template set goes before the first data set of a template that needs sending.
    """

    def __init__(self, exporter: Exporter, now: float) -> None:
        self._exporter = exporter
        self._now = now
        self.sequence = exporter.sequence
        self.sent: dict[int, float] = {}
        self._messages: list[bytes] = []
        self._sets: list[tuple[int, bytearray]] = []
        self._size = MESSAGE_HEADER.size
        self._first_sequence = self.sequence

    def add(self, item: _Encoded) -> None:
        template = self._template_to_send(item.template_id)
        if not self._fits(template, item):
            self._flush()
            template = self._template_to_send(item.template_id)
            if not self._fits(template, item):  # template and record only fit apart
                self._send_template(item.template_id, template)
                self._flush()
                template = b""
        if template:
            self._send_template(item.template_id, template)
        self._append(item.template_id, item.data)
        self.sequence = (self.sequence + 1) % _UINT32

    def finish(self) -> list[bytes]:
        self._flush()
        return self._messages

    def _template_to_send(self, template_id: int) -> bytes:
        if template_id in self.sent or not self._exporter._needs_template(template_id, self._now):
            return b""
        return self._exporter._template_records[template_id]

    def _send_template(self, template_id: int, template: bytes) -> None:
        self._append(TEMPLATE_SET_ID, template)
        self.sent[template_id] = self._now

    def _cost(self, set_id: int, content: bytes) -> int:
        """Octets ``content`` adds to the message: a set header unless it extends the last set."""
        if self._sets and self._sets[-1][0] == set_id:
            return len(content)
        return SET_HEADER.size + len(content)

    def _fits(self, template: bytes, item: _Encoded) -> bool:
        size = self._size
        if template:
            size += self._cost(TEMPLATE_SET_ID, template)
            size += SET_HEADER.size + len(item.data)
        else:
            size += self._cost(item.template_id, item.data)
        return size <= self._exporter.max_message_size

    def _append(self, set_id: int, content: bytes) -> None:
        self._size += self._cost(set_id, content)
        if self._sets and self._sets[-1][0] == set_id:
            self._sets[-1][1].extend(content)
        else:
            self._sets.append((set_id, bytearray(content)))

    def _flush(self) -> None:
        if not self._sets:
            return
        body = b"".join(
            SET_HEADER.pack(set_id, SET_HEADER.size + len(content)) + content
            for set_id, content in self._sets
        )
        header = MESSAGE_HEADER.pack(
            VERSION,
            MESSAGE_HEADER.size + len(body),
            int(self._now),
            self._first_sequence,
            self._exporter.observation_domain,
        )
        self._messages.append(header + body)
        self._sets, self._size = [], MESSAGE_HEADER.size
        self._first_sequence = self.sequence
