"""The STAMP Session-Reflector without I/O (RFC 8762 §4.3, RFC 8972 §4).

:func:`reflect` turns one received packet and what the socket knew about it (:class:`Arrival`)
into the reply, a :class:`Reflection` whose :meth:`~Reflection.finish` writes T3 (and the HMAC
that covers it) as the last thing before sending.  The reply starts as a copy of the request:
every TLV is answered in place, at its offset and in its length, so the reply is exactly as long
as the request and no input can make it longer.  A TLV that asks for more than its room holds is
flagged (M), never grown.

What RFC 8972 prescribes, and how it is read here (docs/conformance.md lists the readings):

* a malformed TLV (§4: a Length not valid for the Type, or one that runs past the packet) gets
  M and ends TLV processing: "The Session-Reflector MUST copy the remainder of the received
  extended STAMP packet", so every later TLV is returned as it came.  The same holds for the
  sub-TLVs of a Location TLV; a sub-TLV that runs past its TLV makes the TLV malformed;
* when the extensions fail integrity (§4.8: HMAC TLV missing in authenticated mode, misplaced,
  repeated, without a key, or not matching) every TLV is echoed unchanged with I set;
* a TLV or sub-TLV the reflector understands but cannot fill because the I/O layer did not
  say (no TOS byte, no counters, no address) is zeroed with U set, so that the sender never
  reads made-up figures; a Source MAC Address the frame did not carry is answered, as §4.2.2
  says, with a zeroed Source EUI-64 Address;
* Location sub-TLVs are answered in place: the generic type the sender asked with is rewritten
  to the specific one (EUI-48 or EUI-64, IPv4 or IPv6) and its value filled; an answer type
  found in a request is not a question and is returned with U set;
* a Class of Service DSCP1 outside ``permitted_dscp`` is not used: RP = 1 and the reply keeps
  the DSCP the request arrived with (§4.4), which :attr:`Reflection.reply_dscp` names;
* an Access Report with an Access ID other than 1 or 2 "MUST be discarded": as the reply keeps
  its size, it is returned as received with U set;
* Follow-Up Telemetry is answered only in stateful mode: a stateless reflector "MUST zero the
  Sequence Number and Follow-Up Timestamp fields" (§4.7).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Hashable

from . import stamp_tlv
from .stamp import (
    BASE_SIZE,
    TIMESTAMP_OFFSET,
    FollowUp,
    StampReflectorPacket,
    StampSenderPacket,
    hmac_frame,
    seal_tlvs,
    sign,
    tlv_integrity,
)
from .stamp_tlv import Frame, LocationSubType, SyncSource, TimestampMethod, TlvFlags, TlvType
from .test_packets import ReflectorPacket
from .timestamp import ErrorEstimate, ns_to_ntp, ns_to_ptp

_U = int(TlvFlags.UNRECOGNIZED)
_M = int(TlvFlags.MALFORMED)
_I = int(TlvFlags.INTEGRITY)
_MASK32 = 0xFFFFFFFF
#: Value sizes of the TLVs that have exactly one.
_FIXED_SIZE: dict[int, int] = {
    TlvType.CLASS_OF_SERVICE: 4,
    TlvType.DIRECT_MEASUREMENT: 12,
    TlvType.ACCESS_REPORT: 4,
    TlvType.FOLLOW_UP_TELEMETRY: 16,
}


@dataclasses.dataclass(frozen=True, slots=True)
class ReflectorConfig:
    """How a reflector answers: fixed for a listening socket."""

    #: Error Estimate of our T2 and T3 (NTP format, Z = 0).
    error_estimate: ErrorEstimate
    #: RFC 8762 §4.2.2 / §4.3.2 layouts and HMAC; needs a key per packet.
    authenticated: bool = False
    #: Timestamp Information TLV: our clock's synchronisation and how T2 and T3 are taken.
    sync_source: int = SyncSource.NTP
    timestamp_in: int = TimestampMethod.SW_LOCAL
    timestamp_out: int = TimestampMethod.SW_LOCAL
    #: False: an RFC 8762-only reflector that copies whatever follows the base packet.
    extensions: bool = True
    #: DSCP values a Class of Service TLV may ask for the reply; None: any.
    permitted_dscp: frozenset[int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """What the I/O layer knows about a received packet; None where it does not know."""

    #: TTL (IPv4) or Hop Limit (IPv6) as received; 255 when unknown (RFC 8762 §4.3.1).
    ttl: int = 255
    #: The TOS / Traffic Class octet as received (DSCP and ECN).
    tos: int | None = None
    #: The sender's address and UDP port as the packet arrived.
    source: tuple[str, int] | None = None
    #: Our address and UDP port the packet was sent to.
    destination: tuple[str, int] | None = None
    #: The link-layer source address of the frame: EUI-48 (6 octets) or EUI-64 (8).
    source_mac: bytes | None = None


@dataclasses.dataclass(slots=True)
class Counters:
    """Test packets of one session: received by the reflector and sent by it."""

    received: int = 0
    transmitted: int = 0


class ReflectorState:
    """The stateful mode's per-session counters (RFC 8762 §4.3.1), keyed by the caller's session.

    A session is the caller's key (addresses and ports, say) together with the SSID.  At most
    ``max_sessions`` are kept: the one least recently seen is forgotten first, and restarts from
    zero if it comes back.
    """

    __slots__ = ("_max", "_sessions")

    def __init__(self, max_sessions: int = 65536) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._max = max_sessions
        self._sessions: dict[Hashable, Counters] = {}

    def counters(self, session: Hashable) -> Counters:
        """The counters of ``session``, created at zero; marks it most recently seen."""
        sessions = self._sessions
        found = sessions.pop(session, None)
        if found is None:
            found = Counters()
            if len(sessions) >= self._max:
                del sessions[next(iter(sessions))]
        sessions[session] = found
        return found

    def forget(self, session: Hashable) -> None:
        self._sessions.pop(session, None)

    def __len__(self) -> int:
        return len(self._sessions)


@dataclasses.dataclass(slots=True)
class Reflection:
    """A reply ready but for T3: call :meth:`finish` just before sending."""

    packet: bytearray
    #: Our Sequence Number in this reply (what a later Follow-Up Telemetry TLV names).
    seq: int
    sender_seq: int
    ssid: int
    #: The DSCP the reply must carry by a Class of Service TLV: DSCP1 when policy permits it,
    #: else the DSCP the request arrived with (RFC 8972 §4.4).  None: the caller's default.
    reply_dscp: int | None
    authenticated: bool
    key: bytes | None = dataclasses.field(repr=False)
    #: Timestamps in PTPv2 format, as our Error Estimate's Z bit says (else NTP).
    ptp: bool = False

    def finish(self, t3_ns: int) -> bytes:
        """The reply's octets with T3 = ``t3_ns`` (and, authenticated, its HMAC)."""
        packet = self.packet
        t3 = _wire_time(t3_ns, ptp=self.ptp)
        struct.pack_into("!Q", packet, TIMESTAMP_OFFSET[self.authenticated], t3)
        if self.authenticated:
            sign(packet, self.key)
        return bytes(packet)


def reflect(
    request: bytes | bytearray,
    *,
    t2_ns: int,
    config: ReflectorConfig,
    arrival: Arrival | None = None,
    key: bytes | None = None,
    state: ReflectorState | None = None,
    session: Hashable = None,
    counters: Counters | None = None,
    follow_up: FollowUp | None = None,
) -> Reflection:
    """The reply to the Session-Sender packet ``request``.

    Stateless mode (``state`` None): our Sequence Number is the sender's.  Stateful mode: it
    counts our replies in the session ``(session, SSID)`` from zero, and ``state`` also counts
    for the Direct Measurement TLV (R_RxC and R_TxC include this request and this reply); in
    stateless mode ``counters`` may supply those.  ``follow_up`` is our previous reply in this
    session as it really left (its seq and the kernel's transmit time), for the Follow-Up
    Telemetry TLV; it is used in stateful mode only.  ``key`` is the session's key:
    required in authenticated mode, and it verifies and seals an HMAC TLV in either mode.

    Raises :class:`~twamp_common.errors.RemoteProtocolError` when the request is shorter than
    a base packet and :class:`~twamp_common.errors.AuthenticationError` when its HMAC fails (or
    no key is given in authenticated mode): the packet is then to be dropped.  Nothing else.
    """
    arrival = arrival or Arrival()
    authenticated, ptp = config.authenticated, config.error_estimate.ptp
    sender = StampSenderPacket.unpack(request, authenticated=authenticated, key=key)
    if state is not None:
        counters = state.counters((session, sender.ssid))
        counters.received += 1
        seq = counters.transmitted & _MASK32
        counters.transmitted += 1
    else:
        seq = sender.seq
    base = ReflectorPacket(
        seq,
        0,
        config.error_estimate.to_wire(),
        _wire_time(t2_ns, ptp=ptp),
        sender.seq,
        sender.timestamp,
        sender.error_estimate,
        min(max(arrival.ttl, 0), 255),
    )
    packet = bytearray(request)
    size = BASE_SIZE[authenticated]
    packet[:size] = StampReflectorPacket(base, sender.ssid).header(authenticated)
    reply_dscp = None
    if config.extensions and len(packet) > size:
        follow_up = follow_up if state is not None else None
        answer = _Answer(packet, size, config, arrival, counters, follow_up)
        reply_dscp = answer.run(request, key)
    return Reflection(packet, seq, sender.seq, sender.ssid, reply_dscp, authenticated, key, ptp)


class _Answer:
    """Answers the TLVs of one reply in place."""

    __slots__ = ("arrival", "base", "config", "counters", "follow_up", "packet", "reply_dscp")

    def __init__(
        self,
        packet: bytearray,
        base: int,
        config: ReflectorConfig,
        arrival: Arrival,
        counters: Counters | None,
        follow_up: FollowUp | None,
    ) -> None:
        self.packet = packet
        self.base = base
        self.config = config
        self.arrival = arrival
        self.counters = counters
        self.follow_up = follow_up
        self.reply_dscp: int | None = None

    def run(self, request: bytes | bytearray, key: bytes | None) -> int | None:
        packet = self.packet
        found = stamp_tlv.frames(request, self.base)
        authenticated = self.config.authenticated
        integrity = tlv_integrity(request, found, authenticated=authenticated, key=key)
        for frame in found:
            if not frame.complete:
                flags = _M
            elif integrity is False:
                flags = _I
            else:
                flags = self._fill(frame)
            packet[frame.offset] = flags
            if flags & _M:
                break  # RFC 8972 §4: the remainder is copied as received
        if key is not None and hmac_frame(found) is not None:
            seal_tlvs(packet, authenticated=authenticated, key=key)
        return self.reply_dscp

    def _fill(self, frame: Frame) -> int:
        """Write our answer into one well-framed TLV's value; its flags in the reply."""
        kind, length, at = frame.type, frame.length, frame.value_offset
        packet = self.packet
        if kind in (TlvType.EXTRA_PADDING, TlvType.HMAC):
            return 0  # padding is echoed; an HMAC TLV got here only if it verified
        if kind == TlvType.LOCATION:
            return self._location(frame) if length >= 4 else _M
        if kind == TlvType.TIMESTAMP_INFORMATION:
            return self._timestamp_information(frame) if length >= 4 else _M
        fixed = _FIXED_SIZE.get(kind)
        if fixed is None:
            return _U
        if length != fixed:
            if kind == TlvType.FOLLOW_UP_TELEMETRY:  # §4.7: zero Sequence Number and Timestamp
                packet[at : at + min(length, 12)] = bytes(min(length, 12))
            return _M
        if kind == TlvType.CLASS_OF_SERVICE:
            return self._class_of_service(at)
        if kind == TlvType.DIRECT_MEASUREMENT:
            if self.counters is None:
                return _U
            received, transmitted = self.counters.received, self.counters.transmitted
            struct.pack_into("!II", packet, at + 4, received & _MASK32, transmitted & _MASK32)
            return 0
        if kind == TlvType.FOLLOW_UP_TELEMETRY:
            previous = self.follow_up
            telemetry = stamp_tlv.FollowUpTelemetry()
            if previous is not None:
                t3 = _wire_time(previous.t3_ns, ptp=self.config.error_estimate.ptp)
                telemetry = stamp_tlv.FollowUpTelemetry(previous.seq & _MASK32, t3, previous.method)
            packet[at : at + 16] = telemetry.pack_value()
            return 0
        return self._access_report(at)

    def _access_report(self, at: int) -> int:
        """The sender's report, echoed with its reserved bits zeroed; an invalid Access ID: U."""
        packet = self.packet
        if packet[at] >> 4 not in stamp_tlv.AccessId._value2member_map_:
            return _U
        packet[at] &= 0xF0
        packet[at + 2 : at + 4] = bytes(2)
        return 0

    def _class_of_service(self, at: int) -> int:
        tos = self.arrival.tos
        if tos is None:
            return _U
        dscp1, received = self.packet[at] >> 2, (tos >> 2) & 0x3F
        permitted = self.config.permitted_dscp
        used = permitted is None or dscp1 in permitted
        self.reply_dscp = dscp1 if used else received
        value = stamp_tlv.ClassOfService(dscp1, received, tos & 3, 0 if used else 1)
        self.packet[at : at + 4] = value.pack_value()
        return 0

    def _subs(self, frame: Frame, start: int) -> list[Frame] | None:
        """The sub-TLVs of a TLV from value octet ``start``; None when they overrun it."""
        subs = stamp_tlv.frames(self.packet, frame.value_offset + start, frame.end)
        return None if subs and not subs[-1].complete else subs

    def _timestamp_information(self, frame: Frame) -> int:
        """Our clock's codes; no sub-TLV is defined for this TLV, so each one is flagged U."""
        subs = self._subs(frame, 4)
        if subs is None:
            return _M
        config, packet = self.config, self.packet
        at = frame.value_offset
        packet[at : at + 4] = bytes(
            (config.sync_source, config.timestamp_in, config.sync_source, config.timestamp_out)
        )
        for sub in subs:
            packet[sub.offset] = _U
        return 0

    def _location(self, frame: Frame) -> int:
        subs = self._subs(frame, 4)
        if subs is None:
            return _M
        arrival, packet = self.arrival, self.packet
        flags = 0
        if arrival.source is None or arrival.destination is None:
            packet[frame.value_offset : frame.value_offset + 4] = bytes(4)
            flags = _U
        else:
            struct.pack_into(
                "!HH", packet, frame.value_offset, arrival.destination[1], arrival.source[1]
            )
        for sub in subs:
            sub_flags = self._location_sub(sub)
            packet[sub.offset] = sub_flags
            if sub_flags & _M:
                break
        return flags

    def _location_sub(self, sub: Frame) -> int:
        """Answer one sub-TLV in place: its type becomes the specific one, its value ours."""
        try:
            kind = LocationSubType(sub.type)
        except ValueError:
            return _U
        if sub.length != kind.size:
            return _M
        if kind.request != kind:
            return _U
        found = self._location_value(kind)
        if found is None:
            self.packet[sub.value_offset : sub.end] = bytes(kind.size)
            return _U
        answer, address = found
        self.packet[sub.offset + 1] = answer
        self.packet[sub.value_offset : sub.end] = address.ljust(kind.size, b"\0")
        return 0

    def _location_value(self, kind: LocationSubType) -> tuple[LocationSubType, bytes] | None:
        """The specific sub-TLV type and address answering the generic ``kind`` (§4.2.2)."""
        arrival = self.arrival
        if kind == LocationSubType.SOURCE_MAC:
            mac = arrival.source_mac
            if mac is not None and len(mac) == 6:
                return LocationSubType.SOURCE_EUI48, mac
            if mac is not None and len(mac) == 8:
                return LocationSubType.SOURCE_EUI64, mac
            return LocationSubType.SOURCE_EUI64, bytes(8)  # "MUST zero the EUI-64 field"
        end = arrival.destination if kind == LocationSubType.DESTINATION_IP else arrival.source
        address = None if end is None else _address(end[0])
        if address is None:
            return None
        return LocationSubType(kind + (1 if len(address) == 4 else 2)), address


def _wire_time(unix_ns: int, *, ptp: bool) -> int:
    """A timestamp in the format our Error Estimate's Z bit names (RFC 8762 §4.3.1, RFC 8972
    §4.7 for the Follow-Up Timestamp)."""
    return ns_to_ptp(unix_ns) if ptp else ns_to_ntp(unix_ns)


def _address(text: str) -> bytes | None:
    """Packed address (IPv4-mapped IPv6 as IPv4, as a dual-stack socket reports them)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.packed
