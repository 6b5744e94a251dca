"""STAMP TLVs (RFC 8972 §4): the header, the registered types and their values.

A TLV is ``Flags(1) Type(1) Length(2) Value(Length)``; TLVs follow the base STAMP packet
(:mod:`twamp_common.stamp`) and the reflector answers each one in place, at the same offset and
with the same length, so that a reply is never larger than the request.  The flags say what the
reflector made of a TLV: U (not understood), M (malformed: a Length wrong for the Type, or one
that runs past the packet), I (the extensions failed HMAC verification).  A Session-Sender sends
U set and M, I clear, so that a reflector that copies TLVs blindly (RFC 8762 only) returns them
still marked "not understood".

Registry values are those of the IANA STAMP registries that RFC 8972 §5 created.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import ClassVar, Self

from .errors import RemoteProtocolError

HEADER = struct.Struct("!BBH")
HEADER_SIZE = HEADER.size
#: Octets of an HMAC TLV's value: HMAC-SHA-256 truncated to 128 bits (RFC 8972 §4.8).
HMAC_TLV_SIZE = 16


class TlvType(enum.IntEnum):
    """STAMP TLV Types."""

    EXTRA_PADDING = 1
    LOCATION = 2
    TIMESTAMP_INFORMATION = 3
    CLASS_OF_SERVICE = 4
    DIRECT_MEASUREMENT = 5
    ACCESS_REPORT = 6
    FOLLOW_UP_TELEMETRY = 7
    HMAC = 8


class TlvFlags(enum.IntFlag):
    """STAMP TLV Flags: bit 0 (the most significant) U, bit 1 M, bit 2 I (RFC 8972 §4, §5.2).

    The five low bits are reserved: sent zero, ignored on receipt.
    """

    UNRECOGNIZED = 0x80
    MALFORMED = 0x40
    INTEGRITY = 0x20


#: The flags a Session-Sender puts on every TLV it sends (RFC 8972 §4: U = 1, M = I = 0).
SENDER_FLAGS = TlvFlags.UNRECOGNIZED
ASSIGNED_FLAGS = TlvFlags.UNRECOGNIZED | TlvFlags.MALFORMED | TlvFlags.INTEGRITY


class SyncSource(enum.IntEnum):
    """Synchronization Source registry (Timestamp Information TLV)."""

    NTP = 1
    PTP = 2
    SSU_BITS = 3
    GPS = 4
    LOCAL_FREE_RUNNING = 5


class TimestampMethod(enum.IntEnum):
    """Timestamping Method registry (Timestamp Information and Follow-Up Telemetry TLVs)."""

    HW_ASSIST = 1
    SW_LOCAL = 2
    CONTROL_PLANE = 3


class LocationSubType(enum.IntEnum):
    """STAMP Sub-TLV Types of the Location TLV (RFC 8972 §4.2.1, IANA "STAMP Sub-TLV Types").

    A sender asks with the three generic types (Source MAC Address, Destination IP Address,
    Source IP Address), whose values are all MBZ; the reflector answers each in its place with
    the specific type for what it saw (§4.2.2): EUI-48 or EUI-64, IPv4 or IPv6.  A generic type
    and its answers have the same Length: 8 for MAC addresses, 16 for IP addresses (an IPv4
    address is followed by 12 MBZ octets, an EUI-48 by 2).
    """

    SOURCE_MAC = 1
    SOURCE_EUI48 = 2
    SOURCE_EUI64 = 3
    DESTINATION_IP = 4
    DESTINATION_IPV4 = 5
    DESTINATION_IPV6 = 6
    SOURCE_IP = 7
    SOURCE_IPV4 = 8
    SOURCE_IPV6 = 9

    @property
    def size(self) -> int:
        """The Length the type MUST have."""
        return 8 if self <= LocationSubType.SOURCE_EUI64 else 16

    @property
    def request(self) -> LocationSubType:
        """The generic type a sender asks with for this answer (itself when it is one)."""
        return LocationSubType((self.value - 1) // 3 * 3 + 1)

    @property
    def address_size(self) -> int:
        """Octets of address at the start of an answer's value; 0 for a generic type."""
        return {2: 6, 3: 8, 5: 4, 6: 16, 8: 4, 9: 16}.get(self.value, 0)


class AccessId(enum.IntEnum):
    """Access ID of the Access Report TLV: the only two values; a TLV with another is discarded."""

    THREE_GPP = 1
    NON_THREE_GPP = 2


class ReturnCode(enum.IntEnum):
    """STAMP Return Codes registry (Access Report TLV)."""

    NETWORK_AVAILABLE = 1
    NETWORK_UNAVAILABLE = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """Where one TLV (or sub-TLV) sits in a buffer, as its header declares it.

    ``complete`` is false when the header or the value runs past the end of the region: the
    last frame of a region, which RFC 8972 §4 calls malformed.  Its ``type`` and ``length`` are
    then -1 when the header itself is cut.
    """

    offset: int
    flags: int
    type: int
    length: int
    complete: bool

    @property
    def value_offset(self) -> int:
        return self.offset + HEADER_SIZE

    @property
    def end(self) -> int:
        return self.value_offset + self.length


def frames(data: bytes | bytearray, start: int, end: int | None = None) -> list[Frame]:
    """The TLVs in ``data[start:end]`` in order; framing stops at the first incomplete one."""
    end = len(data) if end is None else end
    found = []
    offset = start
    while offset < end:
        if end - offset < HEADER_SIZE:
            found.append(Frame(offset, data[offset], -1, -1, complete=False))
            break
        flags, kind, length = HEADER.unpack_from(data, offset)
        complete = offset + HEADER_SIZE + length <= end
        found.append(Frame(offset, flags, kind, length, complete))
        if not complete:
            break
        offset += HEADER_SIZE + length
    return found


def _header(flags: int, kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"a TLV value of {len(value)} octets does not fit its Length field")
    return HEADER.pack(flags, kind, len(value)) + value


def _wrong_length(name: str, value: bytes, expected: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"Length {len(value)}, the type needs {expected}", message=f"{name} TLV", field="Length"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SubTlv:
    """A sub-TLV of a Location or Timestamp Information TLV (same header as a TLV).

    U and M mean what they mean on a TLV; I is sent 0 and ignored on receipt (RFC 8972 §4.2.1).
    No sub-TLV is registered for Timestamp Information, so a reflector flags those U.
    """

    type: int
    value: bytes
    flags: int = 0

    def pack(self) -> bytes:
        return _header(self.flags, self.type, self.value)


def _sub_tlvs(name: str, data: bytes) -> tuple[SubTlv, ...]:
    subs = []
    for frame in frames(data, 0):
        if not frame.complete:
            raise RemoteProtocolError("a sub-TLV runs past its TLV", message=f"{name} TLV")
        subs.append(SubTlv(frame.type, data[frame.value_offset : frame.end], frame.flags))
    return tuple(subs)


@dataclasses.dataclass(frozen=True, slots=True)
class ExtraPadding:
    """Type 1: octets that only make the packet longer (RFC 8972 §4.1); echoed as received."""

    TYPE: ClassVar[TlvType] = TlvType.EXTRA_PADDING
    NAME: ClassVar[str] = "Extra Padding"
    value: bytes = b""

    @classmethod
    def of(cls, size: int) -> Self:
        """A padding value of ``size`` zero octets."""
        return cls(bytes(size))

    def pack_value(self) -> bytes:
        return self.value

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        return cls(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    """Type 2: the UDP ports and addresses the packet arrived with (RFC 8972 §4.2).

    Value: ``Destination Port(2) Source Port(2) Sub-TLVs``.  The sender sends zeros and the
    generic sub-TLVs it asks for; the reflector fills in the ports and answers each sub-TLV in
    place with its specific type (:class:`LocationSubType`).
    """

    TYPE: ClassVar[TlvType] = TlvType.LOCATION
    NAME: ClassVar[str] = "Location"
    destination_port: int = 0
    source_port: int = 0
    sub_tlvs: tuple[SubTlv, ...] = ()

    @classmethod
    def asking(cls, *kinds: LocationSubType) -> Self:
        """A sender's Location TLV asking for the generic ``kinds``, each with room to answer."""
        for kind in kinds:
            if kind.request != kind:
                raise ValueError(f"{kind.name} is an answer; ask with {kind.request.name}")
        return cls(sub_tlvs=tuple(SubTlv(kind, bytes(kind.size), SENDER_FLAGS) for kind in kinds))

    def pack_value(self) -> bytes:
        return struct.pack("!HH", self.destination_port, self.source_port) + b"".join(
            sub.pack() for sub in self.sub_tlvs
        )

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) < 4:
            raise _wrong_length(cls.NAME, value, "at least 4")
        destination, source = struct.unpack_from("!HH", value)
        return cls(destination, source, _sub_tlvs(cls.NAME, value[4:]))

    def answer(self, kind: LocationSubType) -> bytes | None:
        """The address the reflector gave for ``kind``, without its MBZ octets.

        ``kind`` is a generic type (any of its answers will do) or a specific one.  None when
        the reflector did not understand, or reported zeros (§4.2.2: fields it leaves
        unreported); sub-TLVs after a malformed one are not read (§4).
        """
        for sub in self.sub_tlvs:
            if sub.flags & TlvFlags.MALFORMED:
                return None
            try:
                found = LocationSubType(sub.type)
            except ValueError:
                continue
            if found.request == found or kind not in (found, found.request):
                continue
            if sub.flags & ASSIGNED_FLAGS or len(sub.value) != found.size:
                continue
            address = sub.value[: found.address_size]
            if any(address):
                return address
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class TimestampInformation:
    """Type 3: how the reflector's clock is synchronised and how it stamps (RFC 8972 §4.3).

    ``*_in`` describe the receive timestamp (T2), ``*_out`` the transmit timestamp (T3).
    """

    TYPE: ClassVar[TlvType] = TlvType.TIMESTAMP_INFORMATION
    NAME: ClassVar[str] = "Timestamp Information"
    sync_in: int = 0
    method_in: int = 0
    sync_out: int = 0
    method_out: int = 0
    sub_tlvs: tuple[SubTlv, ...] = ()

    def pack_value(self) -> bytes:
        head = bytes((self.sync_in, self.method_in, self.sync_out, self.method_out))
        return head + b"".join(sub.pack() for sub in self.sub_tlvs)

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) < 4:
            raise _wrong_length(cls.NAME, value, "at least 4")
        return cls(value[0], value[1], value[2], value[3], _sub_tlvs(cls.NAME, value[4:]))


@dataclasses.dataclass(frozen=True, slots=True)
class ClassOfService:
    """Type 4: DSCP1 (asked for the reply), DSCP2 and ECN (as received), RP (RFC 8972 §4.4).

    Value: ``DSCP1(6) DSCP2(6) ECN(2) RP(2) Reserved(16)`` (Figure 12; the ECN1 and second RP
    field some tools decode come from a later draft, not from RFC 8972).  The sender sends RP 0;
    RP 1 says the reflector's policy refused DSCP1 and its reply carries the DSCP it received
    instead, so that only the forward direction can be analysed.
    """

    TYPE: ClassVar[TlvType] = TlvType.CLASS_OF_SERVICE
    NAME: ClassVar[str] = "Class of Service"
    dscp1: int = 0
    dscp2: int = 0
    ecn: int = 0
    rp: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.dscp1 < 64 and 0 <= self.dscp2 < 64 and 0 <= self.ecn < 4):
            raise ValueError("DSCP values are 6 bits and ECN 2 bits")
        if not 0 <= self.rp < 4:
            raise ValueError("RP is 2 bits")

    def pack_value(self) -> bytes:
        bits = self.dscp1 << 10 | self.dscp2 << 4 | self.ecn << 2 | self.rp
        return struct.pack("!H2x", bits)

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) != 4:
            raise _wrong_length(cls.NAME, value, "4")
        (bits,) = struct.unpack_from("!H", value)
        return cls(bits >> 10, (bits >> 4) & 0x3F, (bits >> 2) & 3, bits & 3)


@dataclasses.dataclass(frozen=True, slots=True)
class DirectMeasurement:
    """Type 5: packet counters of both ends, for loss per direction (RFC 8972 §4.5).

    Value: ``S_TxC(4) R_RxC(4) R_TxC(4)``.  The sender fills S_TxC and zeros the rest; the
    reflector keeps S_TxC and fills the packets it received and sent in the session.
    """

    TYPE: ClassVar[TlvType] = TlvType.DIRECT_MEASUREMENT
    NAME: ClassVar[str] = "Direct Measurement"
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("!III")
    #: Session-Sender Tx counter (S_TxC).
    s_txc: int = 0
    #: Session-Reflector Rx counter (R_RxC).
    r_rxc: int = 0
    #: Session-Reflector Tx counter (R_TxC).
    r_txc: int = 0

    def pack_value(self) -> bytes:
        return self._LAYOUT.pack(self.s_txc, self.r_rxc, self.r_txc)

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) != cls._LAYOUT.size:
            raise _wrong_length(cls.NAME, value, "12")
        return cls(*cls._LAYOUT.unpack(value))


@dataclasses.dataclass(frozen=True, slots=True)
class AccessReport:
    """Type 6: the sender's report on an access network (RFC 8972 §4.6); echoed as received.

    Value: ``ID(4) Resv(4) Return Code(8) Reserved(16)``.  Only Access IDs 1 and 2 exist: "a
    TLV that contains values other than '1' or '2' MUST be discarded", so one cannot be built,
    and one received decodes as :class:`Unknown`.  The sender retransmits a packet carrying it
    until the reflector echoes it (:mod:`twamp_common.stamp_access_report`).
    """

    TYPE: ClassVar[TlvType] = TlvType.ACCESS_REPORT
    NAME: ClassVar[str] = "Access Report"
    access_id: int = AccessId.THREE_GPP
    return_code: int = ReturnCode.NETWORK_AVAILABLE

    def __post_init__(self) -> None:
        if self.access_id not in AccessId._value2member_map_:
            raise ValueError(f"Access ID {self.access_id}: only 1 (3GPP) and 2 (Non-3GPP) exist")
        if not 0 <= self.return_code < 256:
            raise ValueError("the Return Code is 8 bits")

    def pack_value(self) -> bytes:
        return struct.pack("!BB2x", self.access_id << 4, self.return_code)

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) != 4:
            raise _wrong_length(cls.NAME, value, "4")
        if value[0] >> 4 not in AccessId._value2member_map_:
            raise RemoteProtocolError(
                f"Access ID {value[0] >> 4} is neither 1 nor 2", message=f"{cls.NAME} TLV"
            )
        return cls(value[0] >> 4, value[1])


@dataclasses.dataclass(frozen=True, slots=True)
class FollowUpTelemetry:
    """Type 7: when the reflector really sent its previous reply (RFC 8972 §4.7).

    Value: ``Sequence Number(4) Follow-Up Timestamp(8) Timestamp Mode(1) Reserved(3)``.
    ``seq`` is that reply's Sequence Number, ``timestamp`` its transmit time in the reflector's
    timestamp format, ``mode`` how it was taken (:class:`TimestampMethod`).  Zero Sequence
    Number and timestamp: a stateless reflector (which MUST send zeros), or no previous reply.
    """

    TYPE: ClassVar[TlvType] = TlvType.FOLLOW_UP_TELEMETRY
    NAME: ClassVar[str] = "Follow-Up Telemetry"
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("!IQB3x")
    seq: int = 0
    timestamp: int = 0
    mode: int = 0

    def pack_value(self) -> bytes:
        return self._LAYOUT.pack(self.seq, self.timestamp, self.mode)

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) != cls._LAYOUT.size:
            raise _wrong_length(cls.NAME, value, "16")
        return cls(*cls._LAYOUT.unpack(value))


@dataclasses.dataclass(frozen=True, slots=True)
class Hmac:
    """Type 8: HMAC-SHA-256/128 over the Sequence Number and the TLVs before it (RFC 8972 §4.8).

    "HMAC is calculated ... over text as the concatenation of the Sequence Number field of the
    base STAMP packet and all preceding TLVs", with the session's key (the base packet's).

    :func:`twamp_common.stamp.seal_tlvs` computes it; a sender never fills it by hand.
    """

    TYPE: ClassVar[TlvType] = TlvType.HMAC
    NAME: ClassVar[str] = "HMAC"
    digest: bytes = bytes(HMAC_TLV_SIZE)

    def pack_value(self) -> bytes:
        return self.digest

    @classmethod
    def from_value(cls, value: bytes) -> Self:
        if len(value) != HMAC_TLV_SIZE:
            raise _wrong_length(cls.NAME, value, "16")
        return cls(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Unknown:
    """A TLV this library cannot use: a type it does not know, a malformed one, or one RFC 8972
    says to discard (an Access Report with an Access ID other than 1 or 2)."""

    type: int
    value: bytes
    #: Why it was not decoded: "unknown type", or what is malformed about it.
    reason: str = "unknown type"

    def pack_value(self) -> bytes:
        return self.value


TlvValue = (
    ExtraPadding
    | Location
    | TimestampInformation
    | ClassOfService
    | DirectMeasurement
    | AccessReport
    | FollowUpTelemetry
    | Hmac
)
KNOWN: dict[int, type[TlvValue]] = {
    cls.TYPE: cls
    for cls in (
        ExtraPadding,
        Location,
        TimestampInformation,
        ClassOfService,
        DirectMeasurement,
        AccessReport,
        FollowUpTelemetry,
        Hmac,
    )
}


@dataclasses.dataclass(frozen=True, slots=True)
class Tlv:
    """One decoded TLV with its flags."""

    flags: TlvFlags
    value: TlvValue | Unknown

    @property
    def type(self) -> int:
        value = self.value
        return value.type if isinstance(value, Unknown) else value.TYPE

    @property
    def understood(self) -> bool:
        """Whether it came back with U, M and I clear and decoded: its figures can be used."""
        return not self.flags & ASSIGNED_FLAGS and not isinstance(self.value, Unknown)

    def pack(self) -> bytes:
        return _header(self.flags, self.type, self.value.pack_value())


def encode(values: list[TlvValue] | tuple[TlvValue, ...], flags: int = SENDER_FLAGS) -> bytes:
    """TLVs as a Session-Sender sends them (by default U set, M and I clear)."""
    return b"".join(_header(flags, value.TYPE, value.pack_value()) for value in values)


def decode_value(kind: int, value: bytes) -> TlvValue | Unknown:
    """A TLV value by its type; a malformed one becomes :class:`Unknown` with the reason."""
    cls = KNOWN.get(kind)
    if cls is None:
        return Unknown(kind, value)
    try:
        return cls.from_value(value)
    except RemoteProtocolError as error:
        return Unknown(kind, value, error.reason)


def decode(data: bytes, start: int = 0) -> tuple[Tlv, ...]:
    """Every TLV of ``data[start:]``; one that runs past the end is an :class:`Unknown`."""
    tlvs = []
    for frame in frames(data, start):
        flags = TlvFlags(frame.flags & ASSIGNED_FLAGS)
        if frame.complete:
            value = decode_value(frame.type, bytes(data[frame.value_offset : frame.end]))
        else:
            rest = bytes(data[frame.offset + HEADER_SIZE :])
            value = Unknown(frame.type, rest, "runs past the end of the packet")
        tlvs.append(Tlv(flags, value))
    return tuple(tlvs)
