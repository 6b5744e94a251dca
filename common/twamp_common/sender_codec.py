"""The Session-Sender's packet codecs: TWAMP-Test (RFC 5357) and STAMP (RFC 8762, RFC 8972).

:class:`~twamp_common.test_session.SessionSender` keeps one set of books (lost, late,
duplicates, invalid replies, kernel send times) whatever the protocol; a codec is the part that
differs: how packet ``seq`` is laid out, where T1 goes, what is sealed after T1 is written, and
how a reply decodes into the fields the books need (:class:`Decoded`).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable

from . import stamp
from .codes import Mode
from .crypto import TestPacketProtection
from .stamp import StampReply
from .stamp_access_report import AccessReportTimer, Due
from .stamp_sender import StampSetup
from .stamp_tlv import HEADER_SIZE, AccessReport, ExtraPadding, TlvValue
from .test_packets import (
    REFLECTOR_HEADER_SIZE,
    SHORT_REFLECTOR_SIZE,
    ReflectorPacket,
    SenderPacket,
)
from .timestamp import SYNCHRONIZED_BIT, ErrorEstimate, ntp_to_ns

_SEQ = struct.Struct("!I")
_NTP = struct.Struct("!Q")
#: Offset of T1 in a TWAMP sender packet, by ``authenticated``.
_T1_OFFSET = {False: 4, True: 16}

#: What is done to a packet once T1 is written: the octets to send.
Seal = Callable[[bytearray], bytes | bytearray]


@dataclasses.dataclass(slots=True)
class Decoded:
    """What the books need of a reply; times in Unix ns (not frozen: one is made per reply,
    and a frozen dataclass is several times slower to make)."""

    sender_seq: int
    reflector_seq: int
    t2: int
    t3: int
    #: None when a short reply did not carry it.
    ttl: int | None
    t1_packet: int
    #: The reflector's Error Estimate says its clock is synchronised.
    synchronized: bool
    #: The whole STAMP reply, for its TLVs; None for TWAMP.
    stamp: StampReply | None = None


class TwampCodec:
    """RFC 5357 test packets in the unauthenticated, authenticated or encrypted layout.

    The authenticated mode seals before T1 is written (T1 lies outside the HMAC), the encrypted
    mode after (T1 lies inside the encrypted block).  An unauthenticated reply of 38 to 40
    octets (the RFC 4656 layout, without the Sender TTL) decodes with its TTL unknown.
    """

    def __init__(
        self,
        mode: Mode,
        protection: TestPacketProtection | None,
        padding: bytes,
        error_estimate: int,
        authenticated: bool,
    ) -> None:
        self._protection = protection
        self._padding = padding
        self._error_estimate = error_estimate
        self._authenticated = authenticated
        self._templates: dict[int, bytearray] = {}
        self._seal_first = protection if mode == Mode.AUTHENTICATED else None
        after = protection if mode == Mode.ENCRYPTED else None
        self.seal: Seal | None = None if after is None else (lambda b: after.seal_sender(bytes(b)))
        self.stamp_at = _T1_OFFSET[authenticated]

    def packet(self, seq: int, padding: int) -> bytearray:
        """Packet ``seq`` with ``padding`` octets, T1 still to be written."""
        buffer = self._templates.get(padding)
        if buffer is None:
            packet = SenderPacket(0, 0, self._error_estimate, self._padding[:padding])
            buffer = self._templates[padding] = bytearray(packet.pack(self._authenticated))
        _SEQ.pack_into(buffer, 0, seq)
        if self._seal_first is not None:
            return bytearray(self._seal_first.seal_sender(bytes(buffer)))
        return buffer

    def decode(self, data: bytes) -> Decoded:
        """Raises AuthenticationError (HMAC) or ProtocolError (malformed).

        Runs once per reply: the header's numbers are read with one ``unpack_from``, and no
        :class:`~twamp_common.test_packets.ReflectorPacket` is made (its padding and HMAC are of
        no use here, and a frozen dataclass of ten fields costs more than the rest).
        """
        authenticated = self._authenticated
        short = not authenticated and (
            SHORT_REFLECTOR_SIZE <= len(data) < REFLECTOR_HEADER_SIZE[False]
        )
        if short:
            data = bytes(data).ljust(REFLECTOR_HEADER_SIZE[False], b"\0")
        if self._protection is not None:
            data = self._protection.open_reflector(data)
        seq, t3, error_estimate, t2, sender_seq, t1, _sender_error, ttl = (
            ReflectorPacket.header_fields(data, authenticated)
        )
        return Decoded(
            sender_seq,
            seq,
            ntp_to_ns(t2),
            ntp_to_ns(t3),
            None if short else ttl,
            ntp_to_ns(t1),
            bool(error_estimate & SYNCHRONIZED_BIT),
        )


class StampCodec:
    """STAMP packets: the base layout of ``setup``, its TLVs, padding as an Extra Padding TLV.

    ``padding`` octets of a schedule make the packet that much longer than its base and TLVs:
    an Extra Padding TLV (its 4-octet header included, so 0 or at least 4), placed before the
    HMAC TLV; its value is the prefix of the session's padding octets.  The authenticated
    layout's HMAC covers T1, so it is computed after T1 is written; the HMAC TLV covers the
    Sequence Number and the TLVs only, so it is sealed with the packet.  An Access Report TLV
    is sent as RFC 8972 §4.6 says (see :class:`_AccessReporting`), not in every packet.
    """

    def __init__(self, setup: StampSetup, padding: bytes, error_estimate: int) -> None:
        self._setup = setup
        self._padding = padding
        self._error_estimate = ErrorEstimate.from_wire(error_estimate)
        authenticated, key = setup.authenticated, setup.key
        self.seal: Seal | None = None
        if authenticated:
            self.seal = lambda buffer: _signed(buffer, key)
        self.stamp_at = stamp.TIMESTAMP_OFFSET[authenticated]
        report = next((tlv for tlv in setup.tlvs if isinstance(tlv, AccessReport)), None)
        self._reporting: _AccessReporting | None = None
        if report is not None:
            reporting = _AccessReporting(report, setup.access_report_timer(), self.stamp_at)
            self._reporting = reporting
            signed = self.seal
            self.seal = lambda buffer: reporting.stamped(buffer, signed)

    def packet(self, seq: int, padding: int) -> bytearray:
        setup = self._setup
        check_stamp_padding((padding,))
        tlvs = setup.with_counter(seq)
        if self._reporting is not None:
            tlvs = self._reporting.tlvs(tlvs)
        if padding:
            tlvs.append(ExtraPadding(self._padding[: padding - HEADER_SIZE]))
        return bytearray(
            stamp.build_sender_packet(
                seq,
                0,
                error_estimate=self._error_estimate,
                ssid=setup.ssid,
                tlvs=tlvs,
                authenticated=setup.authenticated,
                key=setup.key,
            )
        )

    def decode(self, data: bytes) -> Decoded:
        """Raises AuthenticationError (base HMAC) or ProtocolError (shorter than a base packet);
        an HMAC TLV that fails leaves the TLVs unread (``tlv_integrity`` False)."""
        setup = self._setup
        reply = stamp.parse_reply(data, authenticated=setup.authenticated, key=setup.key)
        if self._reporting is not None:
            self._reporting.timer.received(reply)
        return Decoded(
            sender_seq=reply.sender_seq,
            reflector_seq=reply.seq,
            t2=reply.t2_ns,
            t3=reply.t3_ns,
            ttl=reply.ttl,
            t1_packet=reply.t1_ns,
            synchronized=reply.error_estimate.synchronized,
            stamp=reply,
        )


class _AccessReporting:
    """Which packets of a session carry its Access Report (RFC 8972 §4.6): the first, then,
    each time the retransmission timer expires before the reflector echoed the report, the
    next one, until the timer's retransmissions run out.  The other packets carry an Extra
    Padding TLV of the same size in its place, so that every packet of the session is as long.

    The timer runs on the packets' own T1, read back once it is written: the next packet
    after an expiry carries the report again, at most one interval late.
    """

    __slots__ = ("_carrying", "_due", "_stamp_at", "_stand_in", "report", "timer")

    def __init__(self, report: AccessReport, timer: AccessReportTimer, stamp_at: int) -> None:
        self.report = report
        self.timer = timer
        self._stamp_at = stamp_at
        self._stand_in = ExtraPadding(bytes(len(report.pack_value())))
        self._due = True
        self._carrying = False

    def tlvs(self, tlvs: list[TlvValue]) -> list[TlvValue]:
        """The TLVs of the next packet: with the report if it is due, else its stand-in."""
        self._carrying, self._due = self._due, False
        if self._carrying:
            return tlvs
        return [self._stand_in if tlv is self.report else tlv for tlv in tlvs]

    def stamped(self, buffer: bytearray, seal: Seal | None) -> bytes | bytearray:
        """``buffer`` with its T1 written: arm the timer if it carries the report, else see
        whether the next packet must; then seal it as the session does."""
        t1 = ntp_to_ns(_NTP.unpack_from(buffer, self._stamp_at)[0])
        if self._carrying:
            self.timer.sent(self.report, t1)
        elif self.timer.poll(t1) is Due.RETRANSMIT:
            self._due = True
        return buffer if seal is None else seal(buffer)


def stamp_header_size(setup: StampSetup) -> int:
    """Octets of a STAMP packet of ``setup`` without padding: base, TLVs, the HMAC TLV."""
    return len(StampCodec(setup, b"", ErrorEstimate(False, 0, 1).to_wire()).packet(0, 0))


def check_stamp_padding(paddings: Iterable[int]) -> None:
    """ValueError for padding a STAMP packet cannot carry: 1 to 3 octets, less than the
    header of the Extra Padding TLV that carries it."""
    odd = sorted({padding for padding in paddings if 0 < padding < HEADER_SIZE})
    if odd:
        raise ValueError(
            f"STAMP pads with an Extra Padding TLV, 0 or at least {HEADER_SIZE} octets:"
            f" {odd[0]} octets of padding cannot be sent"
        )


def _signed(buffer: bytearray, key: bytes | None) -> bytearray:
    stamp.sign(buffer, key)
    return buffer
