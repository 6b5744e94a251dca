"""TWAMP-Test packets: what the Session-Sender sends and what the Session-Reflector answers.

Layouts (RFC 5357 §4.1.2 and §4.2.1, RFC 4656 §4.1.2; sizes after RFC 5357 erratum 5045):

* sender, unauthenticated or mixed mode: Sequence Number, Timestamp, Error Estimate, then
  padding: 14 octets of header;
* sender, authenticated or encrypted mode: the same fields spread over 16-octet blocks, with
  MBZ between them and an HMAC at octet 32: 48 octets of header;
* reflector, unauthenticated: 41 octets of header (its own sequence number, T3, its Error
  Estimate, T2, the sender's sequence number, T1 and Error Estimate, the Sender TTL);
* reflector, authenticated or encrypted: the same in blocks, HMAC at octet 96: 112 octets.

MBZ octets are written as zero and ignored on receipt (RFC 5357 §2).  Encryption and HMACs are
:mod:`twamp_common.crypto`'s business: the packets here are always plaintext.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import ClassVar, Self

from .errors import RemoteProtocolError

#: Octets before the padding of a sender packet, by ``authenticated`` (authenticated or
#: encrypted mode).
SENDER_HEADER_SIZE = {False: 14, True: 48}
#: Octets before the padding of a reflector packet, by ``authenticated``.
REFLECTOR_HEADER_SIZE = {False: 41, True: 112}
#: Sender padding that makes the reflector's reply exactly as long as the request (RFC 5357
#: §4.2.1 and erratum 5045: 27 octets unauthenticated, 64 authenticated or encrypted).
SYMMETRIC_SENDER_PADDING = {
    flag: REFLECTOR_HEADER_SIZE[flag] - SENDER_HEADER_SIZE[flag] for flag in (False, True)
}
#: The shortest unauthenticated reflector packet still measured: everything up to the sender's
#: Error Estimate, without the MBZ and Sender TTL octets RFC 5357 §4.2.1 adds to RFC 4656's
#: layout (some reflectors, nokia/twampy's among them, send this form).
SHORT_REFLECTOR_SIZE = 38
_ZERO_HMAC = bytes(16)
_TIMESTAMP = struct.Struct("!Q")


def _too_short(name: str, data: bytes, size: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"{len(data)} octets, shorter than its {size}-octet header", message=name
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SenderPacket:
    """A Session-Sender packet (plaintext)."""

    NAME: ClassVar[str] = "TWAMP-Test sender packet"
    _OPEN: ClassVar[struct.Struct] = struct.Struct("!IQH")
    _AUTH: ClassVar[struct.Struct] = struct.Struct("!I12xQH6x16s")

    seq: int
    #: T1 as a 64-bit NTP timestamp.
    timestamp: int
    error_estimate: int
    padding: bytes = b""
    #: The HMAC field as received (authenticated and encrypted modes).
    hmac: bytes = _ZERO_HMAC

    def pack(self, authenticated: bool) -> bytes:
        """The packet's octets; ``authenticated`` selects the 48-octet header layout."""
        if authenticated:
            head = self._AUTH.pack(self.seq, self.timestamp, self.error_estimate, self.hmac)
        else:
            head = self._OPEN.pack(self.seq, self.timestamp, self.error_estimate)
        return head + self.padding

    @classmethod
    def unpack(cls, data: bytes, authenticated: bool) -> Self:
        size = SENDER_HEADER_SIZE[authenticated]
        if len(data) < size:
            raise _too_short(cls.NAME, data, size)
        if authenticated:
            seq, timestamp, error_estimate, mac = cls._AUTH.unpack_from(data)
            return cls(seq, timestamp, error_estimate, bytes(data[size:]), mac)
        seq, timestamp, error_estimate = cls._OPEN.unpack_from(data)
        return cls(seq, timestamp, error_estimate, bytes(data[size:]))


@dataclasses.dataclass(frozen=True, slots=True)
class ReflectorPacket:
    """A Session-Reflector packet (plaintext)."""

    NAME: ClassVar[str] = "TWAMP-Test reflector packet"
    _OPEN: ClassVar[struct.Struct] = struct.Struct("!IQH2xQIQH2xB")
    _AUTH: ClassVar[struct.Struct] = struct.Struct("!I12xQH6xQ8xI12xQH6xB15x16s")

    seq: int
    #: T3, the reflector's send time.
    timestamp: int
    #: The reflector's Error Estimate (for T2 and T3).
    error_estimate: int
    #: T2, the reflector's receive time.
    receive_timestamp: int
    sender_seq: int
    #: T1, copied from the sender packet.
    sender_timestamp: int
    sender_error_estimate: int
    #: TTL or Hop Limit of the sender packet as it arrived (255 if unknown).
    sender_ttl: int
    padding: bytes = b""
    hmac: bytes = _ZERO_HMAC

    def _fields(self) -> tuple[int, ...]:
        return (
            self.seq,
            self.timestamp,
            self.error_estimate,
            self.receive_timestamp,
            self.sender_seq,
            self.sender_timestamp,
            self.sender_error_estimate,
            self.sender_ttl,
        )

    def pack(self, authenticated: bool) -> bytes:
        if authenticated:
            return self._AUTH.pack(*self._fields(), self.hmac) + self.padding
        return self._OPEN.pack(*self._fields()) + self.padding

    @classmethod
    def unpack(cls, data: bytes, authenticated: bool) -> Self:
        size = REFLECTOR_HEADER_SIZE[authenticated]
        mac = bytes(data[size - len(_ZERO_HMAC) : size]) if authenticated else _ZERO_HMAC
        return cls(*cls.header_fields(data, authenticated), bytes(data[size:]), mac)

    @classmethod
    def header_fields(
        cls, data: bytes, authenticated: bool
    ) -> tuple[int, int, int, int, int, int, int, int]:
        """The header's numbers, in the order of the packet's fields up to ``sender_ttl``,
        without making a packet: the Session-Sender reads one per reply and needs neither the
        padding nor the HMAC (which ``open_reflector`` has checked)."""
        size = REFLECTOR_HEADER_SIZE[authenticated]
        if len(data) < size:
            raise _too_short(cls.NAME, data, size)
        if authenticated:
            return cls._AUTH.unpack_from(data)[:8]
        return cls._OPEN.unpack_from(data)


class ReflectorPacketBuilder:
    """Builds reflector packets from sender packets, in a buffer kept per session.

    The hot path of the reflector: one ``struct.pack_into`` for the header, one slice copy of
    the padding, and T3 written by :meth:`stamp` as the last thing before sending.
    """

    __slots__ = ("_buffer", "_copy", "_header", "_layout", "_stamp_at")

    # Fields written by build(): our seq, T3 (0 until stamped), Error Estimate, T2, then the
    # sender's seq, T1 and Error Estimate as raw octets, and the TTL.
    _OPEN = struct.Struct("!I8xH2xQ4s8s2s2xB")
    _AUTH = struct.Struct("!I12x8xH6xQ8x4s12x8s2s6xB15x16x")
    #: (seq, timestamp, error estimate) offsets in the sender packet, by ``authenticated``.
    _SENDER_FIELDS: ClassVar[dict[bool, tuple[int, int, int]]] = {
        False: (0, 4, 12),
        True: (0, 16, 24),
    }

    def __init__(self, authenticated: bool) -> None:
        self._header = self._AUTH if authenticated else self._OPEN
        self._layout = (SENDER_HEADER_SIZE[authenticated], REFLECTOR_HEADER_SIZE[authenticated])
        self._copy = self._SENDER_FIELDS[authenticated]
        self._stamp_at = 16 if authenticated else 4
        self._buffer = bytearray(self._layout[1])

    def build(
        self,
        request: bytes,
        seq: int,
        receive_timestamp: int,
        error_estimate: int,
        sender_ttl: int,
    ) -> bytearray:
        """The reply to the plaintext sender packet ``request`` (at least a sender header long).

        T3 is left zero: call :meth:`stamp` just before sending.  The returned buffer is reused
        by the next call.
        """
        sender_header, header = self._layout
        size = max(len(request), header)
        buffer = self._buffer
        if len(buffer) != size:
            buffer = self._buffer = bytearray(size)
        seq_at, timestamp_at, error_at = self._copy
        self._header.pack_into(
            buffer,
            0,
            seq,
            error_estimate,
            receive_timestamp,
            request[seq_at : seq_at + 4],
            request[timestamp_at : timestamp_at + 8],
            request[error_at : error_at + 2],
            sender_ttl,
        )
        # The sender's padding, its highest-numbered octets cut so that the reply is exactly as
        # long as the request (the request always holds that many).
        buffer[header:] = request[sender_header : sender_header + size - header]
        return buffer

    def stamp(self, timestamp: int) -> None:
        """Write T3 into the packet last built."""
        _TIMESTAMP.pack_into(self._buffer, self._stamp_at, timestamp)
