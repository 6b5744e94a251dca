"""STAMP test packets (RFC 8762 §4.2–4.4 with the SSID of RFC 8972 §3) and the sender's side.

Base layouts (octet offsets); TLVs (:mod:`twamp_common.stamp_tlv`) follow the base packet:

* Session-Sender, unauthenticated, 44 octets: Sequence Number 0, Timestamp 4, Error Estimate 12,
  SSID 14, MBZ 16–43.  Its first 14 octets are RFC 5357's unauthenticated sender packet, so it
  is packed as one with 30 octets of padding;
* Session-Sender, authenticated, 112 octets: Sequence Number 0, MBZ 4–15, Timestamp 16, Error
  Estimate 24, SSID 26, MBZ 28–95, HMAC 96–111 (not RFC 5357's 48-octet layout);
* Session-Reflector, unauthenticated, 44 octets: RFC 5357's 41-octet reflector packet with the
  SSID in its MBZ at 14, then 3 MBZ octets;
* Session-Reflector, authenticated, 112 octets: RFC 5357's authenticated reflector packet with
  the SSID at 26.

Both sizes match between sender and reflector, which is what lets the reflector answer every
packet with one exactly as long (RFC 8762 §4.2, §4.3).  In authenticated mode the HMAC is
HMAC-SHA-256 truncated to 16 octets over octets 0–95 (RFC 8762 §4.4); there is no encryption.

Keys: STAMP has no control protocol, and RFC 8762 §4.4 leaves key distribution out of band.
Every function here takes the key as bytes; the one key of a session protects both the base
packet and the HMAC TLV (RFC 8972 §4.8).  Which key belongs to which peer (for instance by SSID,
see :func:`peek_ssid`) is the caller's configuration.
"""

from __future__ import annotations

import dataclasses
import hmac
import struct
from typing import ClassVar, Self, TypeVar

from . import stamp_tlv
from .crypto import stamp_hmac
from .errors import AuthenticationError, RemoteProtocolError
from .stamp_tlv import Frame, Tlv, TlvFlags, TlvType
from .test_packets import ReflectorPacket, SenderPacket
from .timestamp import ErrorEstimate, ns_to_ntp, ntp_to_ns, ptp_to_ns

#: Octets of a base STAMP packet, sender or reflector, by ``authenticated``.
BASE_SIZE = {False: 44, True: 112}
#: Where the SSID sits, by ``authenticated`` (the same in sender and reflector packets).
SSID_OFFSET = {False: 14, True: 26}
#: Where the HMAC of the authenticated layouts sits; it covers every octet before it.
HMAC_OFFSET = 96
HMAC_SIZE = 16
#: Where the Timestamp sits (T1 in a sender packet, T3 in a reflector packet).
TIMESTAMP_OFFSET = {False: 4, True: 16}
_SSID = struct.Struct("!H")
_ZERO_HMAC = bytes(HMAC_SIZE)
_T = TypeVar("_T")


def _check_size(name: str, data: bytes | bytearray, authenticated: bool) -> None:
    size = BASE_SIZE[authenticated]
    if len(data) < size:
        mode = "authenticated" if authenticated else "unauthenticated"
        raise RemoteProtocolError(
            f"{len(data)} octets, shorter than the {size} of a base {mode} packet", message=name
        )


def _verify(name: str, data: bytes | bytearray, key: bytes | None) -> None:
    """Check the base packet's HMAC (authenticated mode)."""
    if key is None:
        raise AuthenticationError("no key for this session", message=name, field="HMAC")
    received = bytes(data[HMAC_OFFSET : HMAC_OFFSET + HMAC_SIZE])
    if not hmac.compare_digest(stamp_hmac(key, bytes(data[:HMAC_OFFSET])), received):
        raise AuthenticationError(
            "HMAC does not match", message=name, field="HMAC", offset=HMAC_OFFSET
        )


def sign(packet: bytearray, key: bytes | None) -> None:
    """Write the HMAC of an authenticated-mode packet (sender or reflector) over octets 0–95."""
    if key is None:
        raise ValueError("authenticated mode needs a key")
    packet[HMAC_OFFSET : HMAC_OFFSET + HMAC_SIZE] = stamp_hmac(key, bytes(packet[:HMAC_OFFSET]))


def peek_ssid(data: bytes | bytearray, *, authenticated: bool) -> int:
    """The SSID of a sender or reflector packet, before any check: to choose its key."""
    _check_size("STAMP packet", data, authenticated)
    (ssid,) = _SSID.unpack_from(data, SSID_OFFSET[authenticated])
    return int(ssid)


@dataclasses.dataclass(frozen=True, slots=True)
class StampSenderPacket:
    """A Session-Sender packet; ``extension`` is what follows the base (TLVs), as octets."""

    NAME: ClassVar[str] = "STAMP Session-Sender packet"
    _AUTH: ClassVar[struct.Struct] = struct.Struct("!I12xQHH68x")

    seq: int
    #: T1 as a 64-bit timestamp (NTP, or PTP when the Error Estimate's Z bit says so).
    timestamp: int
    error_estimate: int
    ssid: int = 0
    extension: bytes = b""

    def pack(self, *, authenticated: bool = False, key: bytes | None = None) -> bytes:
        """The packet's octets; authenticated mode signs it with ``key``."""
        if not authenticated:
            padding = _SSID.pack(self.ssid) + bytes(28) + self.extension
            return SenderPacket(self.seq, self.timestamp, self.error_estimate, padding).pack(False)
        packet = bytearray(
            self._AUTH.pack(self.seq, self.timestamp, self.error_estimate, self.ssid)
        )
        packet += _ZERO_HMAC + self.extension
        sign(packet, key)
        return bytes(packet)

    @classmethod
    def unpack(
        cls, data: bytes | bytearray, *, authenticated: bool = False, key: bytes | None = None
    ) -> Self:
        """Decode (and in authenticated mode verify with ``key``) a sender packet."""
        _check_size(cls.NAME, data, authenticated)
        if authenticated:
            _verify(cls.NAME, data, key)
            seq, timestamp, error, ssid = cls._AUTH.unpack_from(data)
            return cls(seq, timestamp, error, ssid, bytes(data[BASE_SIZE[True] :]))
        base = SenderPacket.unpack(bytes(data[:44]), False)
        (ssid,) = _SSID.unpack_from(data, 14)
        return cls(base.seq, base.timestamp, base.error_estimate, ssid, bytes(data[44:]))


@dataclasses.dataclass(frozen=True, slots=True)
class StampReflectorPacket:
    """A Session-Reflector packet: RFC 5357's fields (``base``), the SSID, the extension."""

    NAME: ClassVar[str] = "STAMP Session-Reflector packet"

    base: ReflectorPacket
    ssid: int = 0
    extension: bytes = b""

    def header(self, authenticated: bool) -> bytearray:
        """The base packet with a zero HMAC field (what the reflector fills in place)."""
        packet = bytearray(self.base.pack(authenticated))
        del packet[BASE_SIZE[authenticated] :]
        packet += bytes(BASE_SIZE[authenticated] - len(packet))
        _SSID.pack_into(packet, SSID_OFFSET[authenticated], self.ssid)
        return packet

    def pack(self, *, authenticated: bool = False, key: bytes | None = None) -> bytes:
        """The packet's octets; authenticated mode signs it with ``key``."""
        packet = self.header(authenticated) + self.extension
        if authenticated:
            sign(packet, key)
        return bytes(packet)

    @classmethod
    def unpack(
        cls, data: bytes | bytearray, *, authenticated: bool = False, key: bytes | None = None
    ) -> Self:
        _check_size(cls.NAME, data, authenticated)
        if authenticated:
            _verify(cls.NAME, data, key)
        size = BASE_SIZE[authenticated]
        base = ReflectorPacket.unpack(bytes(data[:size]), authenticated)
        (ssid,) = _SSID.unpack_from(data, SSID_OFFSET[authenticated])
        return cls(dataclasses.replace(base, padding=b""), ssid, bytes(data[size:]))


# --- the HMAC TLV (RFC 8972 §4.8) ---------------------------------------------------------


def hmac_frame(found: list[Frame]) -> Frame | None:
    """The HMAC TLV if it is where RFC 8972 §4.8 puts it, else None.

    It must be the only one and followed by nothing but Extra Padding TLVs.
    """
    positions = [i for i, frame in enumerate(found) if frame.type == TlvType.HMAC]
    if len(positions) != 1:
        return None
    at = positions[0]
    frame = found[at]
    if not frame.complete or frame.length != stamp_tlv.HMAC_TLV_SIZE:
        return None
    if any(not later.complete or later.type != TlvType.EXTRA_PADDING for later in found[at + 1 :]):
        return None
    return frame


def _tlv_digest(packet: bytes | bytearray, base: int, frame: Frame, key: bytes) -> bytes:
    """HMAC-SHA-256/128 over the Sequence Number and every TLV before the HMAC TLV."""
    return stamp_hmac(key, bytes(packet[:4]) + bytes(packet[base : frame.offset]))


def tlv_integrity(
    packet: bytes | bytearray,
    found: list[Frame],
    *,
    authenticated: bool,
    key: bytes | None,
) -> bool | None:
    """Whether the extensions of ``packet`` pass HMAC TLV verification.

    None when there is nothing to verify: no TLV; no HMAC TLV in unauthenticated mode; or, in
    authenticated mode, a lone Extra Padding TLV ("the sole exception", RFC 8972 §4.8).  False
    when the HMAC TLV is missing in authenticated mode, misplaced, repeated, cannot be checked
    for want of a key, or does not match.
    """
    if not found:
        return None
    has_hmac = any(frame.type == TlvType.HMAC for frame in found)
    if not has_hmac:
        lone_padding = len(found) == 1 and found[0].type == TlvType.EXTRA_PADDING
        return False if authenticated and not lone_padding else None
    frame = hmac_frame(found)
    if frame is None or key is None:
        return False
    received = bytes(packet[frame.value_offset : frame.end])
    return hmac.compare_digest(_tlv_digest(packet, BASE_SIZE[authenticated], frame, key), received)


def seal_tlvs(packet: bytearray, *, authenticated: bool, key: bytes) -> None:
    """Write the HMAC TLV's value of ``packet`` (which must hold one, in its place)."""
    base = BASE_SIZE[authenticated]
    frame = hmac_frame(stamp_tlv.frames(packet, base))
    if frame is None:
        raise ValueError("the packet has no HMAC TLV in the place RFC 8972 §4.8 gives it")
    packet[frame.value_offset : frame.end] = _tlv_digest(packet, base, frame, key)


# --- the Session-Sender ---------------------------------------------------------------------


def build_sender_packet(
    seq: int,
    t1_ns: int,
    *,
    error_estimate: ErrorEstimate,
    ssid: int = 0,
    tlvs: tuple[stamp_tlv.TlvValue, ...] | list[stamp_tlv.TlvValue] = (),
    authenticated: bool = False,
    key: bytes | None = None,
    size: int | None = None,
) -> bytes:
    """A Session-Sender packet with ``tlvs``, ready to send.

    With TLVs and a key (always in authenticated mode, where RFC 8972 §4.8 requires it) an HMAC
    TLV is appended last.  ``size`` asks for a longer packet: an Extra Padding TLV, placed
    before the HMAC TLV, makes up the difference (at least 4 octets, its header).  Every TLV
    goes out with U set and M, I clear (RFC 8972 §4).
    """
    if authenticated and key is None:
        raise ValueError("authenticated mode needs a key")
    values = list(tlvs)
    if any(isinstance(value, stamp_tlv.Hmac) for value in values):
        raise ValueError("the HMAC TLV is the builder's to add: pass a key instead")
    base = BASE_SIZE[authenticated]
    sealed = key is not None and (bool(values) or (size is not None and size > base))
    length = base + len(stamp_tlv.encode(values))
    length += stamp_tlv.HEADER_SIZE + stamp_tlv.HMAC_TLV_SIZE if sealed else 0
    if size is not None and size != length:
        missing = size - length - stamp_tlv.HEADER_SIZE
        if missing < 0:
            raise ValueError(f"{size} octets cannot hold these TLVs: {length}, or 4 more")
        values.append(stamp_tlv.ExtraPadding.of(missing))
    if sealed:
        values.append(stamp_tlv.Hmac())
    header = StampSenderPacket(seq, ns_to_ntp(t1_ns), error_estimate.to_wire(), ssid)
    packet = bytearray(header.pack(authenticated=authenticated, key=key))
    packet += stamp_tlv.encode(values)
    if sealed and key is not None:
        seal_tlvs(packet, authenticated=authenticated, key=key)
    return bytes(packet)


@dataclasses.dataclass(frozen=True, slots=True)
class FollowUp:
    """What a Follow-Up Telemetry TLV says about an earlier reply of the reflector."""

    #: The reflector Sequence Number of that earlier reply.
    seq: int
    #: When it really left the reflector (a better T3 than the one it carried).
    t3_ns: int
    #: How that time was taken (:class:`twamp_common.stamp_tlv.TimestampMethod`).
    method: int


def _to_ns(timestamp: int, error_estimate: ErrorEstimate) -> int:
    return ptp_to_ns(timestamp) if error_estimate.ptp else ntp_to_ns(timestamp)


@dataclasses.dataclass(frozen=True, slots=True)
class StampReply:
    """A Session-Reflector packet as the Session-Sender reads it: times in Unix nanoseconds."""

    #: The reflector's Sequence Number (the sender's in stateless mode).
    seq: int
    t3_ns: int
    t2_ns: int
    error_estimate: ErrorEstimate
    ssid: int
    sender_seq: int
    t1_ns: int
    sender_error_estimate: ErrorEstimate
    #: TTL or Hop Limit of the request as it reached the reflector.
    ttl: int
    tlvs: tuple[Tlv, ...]
    #: Outcome of HMAC TLV verification (see :func:`tlv_integrity`); False voids the TLVs.
    tlv_integrity: bool | None
    size: int

    @property
    def usable_tlvs(self) -> tuple[Tlv, ...]:
        """The TLVs whose figures may be used, as RFC 8972 §4 and §4.8 tell the sender.

        None when the HMAC TLV failed or any TLV has I set ("discard all TLVs"); none from the
        first one with M set on ("stop processing the remainder"); never one with U set.
        """
        if self.tlv_integrity is False or any(t.flags & TlvFlags.INTEGRITY for t in self.tlvs):
            return ()
        usable = []
        for tlv in self.tlvs:
            if tlv.flags & TlvFlags.MALFORMED:
                break
            if tlv.understood:
                usable.append(tlv)
        return tuple(usable)

    def find(self, kind: type[_T]) -> _T | None:
        """The first usable TLV of class ``kind`` (see :attr:`usable_tlvs`), if any."""
        for tlv in self.usable_tlvs:
            if isinstance(tlv.value, kind):
                return tlv.value
        return None

    @property
    def timestamp_information(self) -> stamp_tlv.TimestampInformation | None:
        return self.find(stamp_tlv.TimestampInformation)

    @property
    def class_of_service(self) -> stamp_tlv.ClassOfService | None:
        """DSCP1 (asked), DSCP2 and ECN (received by the reflector), RP.

        RP 0: the reply was sent with DSCP1, so the reverse direction can be analysed too.
        """
        return self.find(stamp_tlv.ClassOfService)

    @property
    def direct_measurement(self) -> stamp_tlv.DirectMeasurement | None:
        return self.find(stamp_tlv.DirectMeasurement)

    @property
    def location(self) -> stamp_tlv.Location | None:
        return self.find(stamp_tlv.Location)

    @property
    def follow_up(self) -> FollowUp | None:
        """The real send time of an earlier reply (by its ``seq``), when the reflector had one."""
        telemetry = self.find(stamp_tlv.FollowUpTelemetry)
        if telemetry is None or telemetry.timestamp == 0:
            return None
        return FollowUp(
            telemetry.seq, _to_ns(telemetry.timestamp, self.error_estimate), telemetry.mode
        )


def parse_reply(
    data: bytes | bytearray, *, authenticated: bool = False, key: bytes | None = None
) -> StampReply:
    """Decode a Session-Reflector packet; in authenticated mode its HMAC is checked first.

    Raises :class:`RemoteProtocolError` when it is shorter than a base packet and
    :class:`AuthenticationError` when its HMAC fails.
    """
    packet = StampReflectorPacket.unpack(data, authenticated=authenticated, key=key)
    base = packet.base
    ours = ErrorEstimate.from_wire(base.error_estimate)
    theirs = ErrorEstimate.from_wire(base.sender_error_estimate)
    start = BASE_SIZE[authenticated]
    integrity = tlv_integrity(
        data, stamp_tlv.frames(data, start), authenticated=authenticated, key=key
    )
    return StampReply(
        seq=base.seq,
        t3_ns=_to_ns(base.timestamp, ours),
        t2_ns=_to_ns(base.receive_timestamp, ours),
        error_estimate=ours,
        ssid=packet.ssid,
        sender_seq=base.sender_seq,
        t1_ns=_to_ns(base.sender_timestamp, theirs),
        sender_error_estimate=theirs,
        ttl=base.sender_ttl,
        tlvs=stamp_tlv.decode(bytes(data), start),
        tlv_integrity=integrity,
        size=len(data),
    )
