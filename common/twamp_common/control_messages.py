"""TWAMP-Control messages: one frozen dataclass per message, with ``pack`` and ``unpack``.

Layouts follow RFC 4656 §3.1–3.8 as amended by RFC 5357 §3 (TWAMP), RFC 5938 (Individual
Session Control) and RFC 6038 (Reflect Octets).  All integers are unsigned and big-endian.  MBZ
("must be zero") fields are written as zeros and ignored when read, as RFC 4656 §3.1 requires of
the party that interprets a message.  The HMAC field of a message is *not* part of its dataclass:
it is computed over the running control stream by the state machines in ``control``, so ``pack``
leaves it zero and ``unpack`` does not look at it.

``unpack`` checks structure only (sizes, field ranges, known address families); whether a value
is acceptable in context (a Count that is too large, a Conf-Sender that is not zero) is decided by
the state machines and the server, which answer with the right Accept code.
"""

from __future__ import annotations

import abc
import dataclasses
import ipaddress
import struct
from typing import ClassVar, Self

from .codes import Accept, Command, Mode
from .errors import RemoteProtocolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Size of an AES block, the unit of every control message after Set-Up-Response.
BLOCK = 16
#: Size of the HMAC field that closes every client command and server response.
HMAC_SIZE = 16
#: Size of a Session Identifier.
SID_SIZE = 16
#: Largest Number of Sessions we decode in an RFC 5938 message (16 octets each on the wire);
#: bounds the memory a hostile peer can make us reserve.
MAX_N_SESSIONS = 4096


def _check_size(cls: type[ControlMessage], data: bytes, size: int) -> None:
    if len(data) != size:
        raise RemoteProtocolError(
            f"expected {size} octets, got {len(data)}", message=cls.NAME, offset=len(data)
        )


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} octets, not {len(value)}")


class ControlMessage(abc.ABC):
    """What every control message offers: its name, its size, ``pack`` and ``unpack``."""

    __slots__ = ()

    #: The message's name as the RFCs spell it, used in errors and logs.
    NAME: ClassVar[str]
    #: Size in octets of the fixed-size messages.
    SIZE: ClassVar[int]
    #: Whether the message ends with an HMAC field (all but the three set-up messages).
    HAS_HMAC: ClassVar[bool] = True

    @abc.abstractmethod
    def pack(self) -> bytes:
        """The message's octets, with a zero HMAC field."""

    @classmethod
    @abc.abstractmethod
    def unpack(cls, data: bytes) -> Self:
        """Decode exactly one message; RemoteProtocolError names what is wrong and where."""

    @classmethod
    def wire_size(cls, head: bytes) -> int:
        """Octets of the message whose first 16 octets are ``head``."""
        return cls.SIZE


@dataclasses.dataclass(frozen=True, slots=True)
class ServerGreeting(ControlMessage):
    """Server-Greeting (RFC 4656 §3.1): the modes offered and the material for key derivation."""

    NAME: ClassVar[str] = "Server-Greeting"
    SIZE: ClassVar[int] = 64
    HAS_HMAC: ClassVar[bool] = False
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!12xI16s16sI12x")

    #: Bit-OR of the modes the server is willing to use; 0 means "go away".
    modes: Mode
    #: Random 16 octets that the client must return inside its encrypted Token.
    challenge: bytes
    #: Pseudo-random PBKDF2 salt.
    salt: bytes
    #: PBKDF2 iteration count: a power of two, at least 1024.
    count: int

    def __post_init__(self) -> None:
        _check_bytes("challenge", self.challenge, 16)
        _check_bytes("salt", self.salt, 16)

    def pack(self) -> bytes:
        return self._STRUCT.pack(int(self.modes), self.challenge, self.salt, self.count)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        modes, challenge, salt, count = cls._STRUCT.unpack(data)
        return cls(Mode(modes), challenge, salt, count)


@dataclasses.dataclass(frozen=True, slots=True)
class SetUpResponse(ControlMessage):
    """Set-Up-Response (RFC 4656 §3.1): the client's chosen mode, identity and Token."""

    NAME: ClassVar[str] = "Set-Up-Response"
    SIZE: ClassVar[int] = 164
    HAS_HMAC: ClassVar[bool] = False
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!I80s64s16s")

    #: One security mode bit plus optional feature bits; 0 means the client gives up.
    mode: Mode
    #: The identity (KeyID), up to 80 octets, zero padded on the wire; empty in open mode.
    key_id: bytes = b""
    #: AES-CBC encrypted Challenge and session keys (zeros in open mode).
    token: bytes = dataclasses.field(default=bytes(64), repr=False)
    #: IV of the client-to-server CBC stream (zeros in open mode).
    client_iv: bytes = bytes(16)

    def __post_init__(self) -> None:
        if len(self.key_id) > 80:
            raise ValueError("key_id is longer than 80 octets")
        _check_bytes("token", self.token, 64)
        _check_bytes("client_iv", self.client_iv, 16)

    def pack(self) -> bytes:
        return self._STRUCT.pack(int(self.mode), self.key_id, self.token, self.client_iv)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        mode, key_id, token, client_iv = cls._STRUCT.unpack(data)
        return cls(Mode(mode), key_id.rstrip(b"\0"), token, client_iv)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerStart(ControlMessage):
    """Server-Start (RFC 4656 §3.1).  Octets 32–47 (Start-Time, MBZ) are the first block of the
    server's encrypted stream in the secure modes; the state machine encrypts them."""

    NAME: ClassVar[str] = "Server-Start"
    SIZE: ClassVar[int] = 48
    HAS_HMAC: ClassVar[bool] = False
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!15xB16sQ8x")

    accept: Accept
    #: IV of the server-to-client CBC stream.
    server_iv: bytes = bytes(16)
    #: When this server instance started (NTP timestamp); zero when Accept is not OK.
    start_time: int = 0

    def __post_init__(self) -> None:
        _check_bytes("server_iv", self.server_iv, 16)

    def pack(self) -> bytes:
        return self._STRUCT.pack(self.accept, self.server_iv, self.start_time)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        accept, server_iv, start_time = cls._STRUCT.unpack(data)
        return cls(Accept.from_wire(accept), server_iv, start_time)


def _pack_address(address: IPAddress) -> bytes:
    return address.packed.ljust(16, b"\0")


def _unpack_address(ipvn: int, raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw[:4]) if ipvn == 4 else ipaddress.IPv6Address(raw)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestTWSession(ControlMessage):
    """Request-TW-Session (RFC 5357 §3.5), command 5.

    A zero Sender or Receiver Address means "the address of the control connection's peer"
    (resp. "ours"); the server resolves that.  ``octets_to_reflect`` and ``padding_to_reflect``
    are RFC 6038's reuse of octets 88–91, zero unless the Reflect Octets mode was chosen.
    """

    NAME: ClassVar[str] = "Request-TW-Session"
    SIZE: ClassVar[int] = 112
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!BBBBIIHH16s16s16sIQQIHH4x16x")

    sender_address: IPAddress
    receiver_address: IPAddress
    sender_port: int
    receiver_port: int
    padding_length: int = 0
    #: When the sender intends to start (NTP timestamp); advisory in TWAMP.
    start_time: int = 0
    #: How long the reflector keeps reflecting after Stop-Sessions (timestamp format).
    timeout: int = 0
    #: Type-P Descriptor: DSCP << 24 when its first two bits are zero (RFC 4656 §3.5).
    type_p: int = 0
    #: SID: MUST be zero in a request.
    sid: bytes = bytes(SID_SIZE)
    conf_sender: int = 0
    conf_receiver: int = 0
    number_of_schedule_slots: int = 0
    number_of_packets: int = 0
    octets_to_reflect: int = 0
    padding_to_reflect: int = 0

    def __post_init__(self) -> None:
        if self.sender_address.version != self.receiver_address.version:
            raise ValueError("sender and receiver addresses must be of one IP version")
        _check_bytes("sid", self.sid, SID_SIZE)

    @property
    def ipvn(self) -> int:
        """The IP version of both addresses (4 or 6)."""
        return self.sender_address.version

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            Command.REQUEST_TW_SESSION,
            self.ipvn,
            self.conf_sender,
            self.conf_receiver,
            self.number_of_schedule_slots,
            self.number_of_packets,
            self.sender_port,
            self.receiver_port,
            _pack_address(self.sender_address),
            _pack_address(self.receiver_address),
            self.sid,
            self.padding_length,
            self.start_time,
            self.timeout,
            self.type_p,
            self.octets_to_reflect,
            self.padding_to_reflect,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        (
            command,
            ipvn,
            conf_sender,
            conf_receiver,
            slots,
            packets,
            sender_port,
            receiver_port,
            sender_address,
            receiver_address,
            sid,
            padding_length,
            start_time,
            timeout,
            type_p,
            octets_to_reflect,
            padding_to_reflect,
        ) = cls._STRUCT.unpack(data)
        if command != Command.REQUEST_TW_SESSION:
            raise RemoteProtocolError(
                f"command {command} is not {Command.REQUEST_TW_SESSION}",
                message=cls.NAME,
                field="Command",
                offset=0,
            )
        ipvn &= 0x0F  # the high four bits are MBZ
        if ipvn not in (4, 6):
            raise RemoteProtocolError(
                f"IP version {ipvn} is neither 4 nor 6", message=cls.NAME, field="IPVN", offset=1
            )
        return cls(
            sender_address=_unpack_address(ipvn, sender_address),
            receiver_address=_unpack_address(ipvn, receiver_address),
            sender_port=sender_port,
            receiver_port=receiver_port,
            padding_length=padding_length,
            start_time=start_time,
            timeout=timeout,
            type_p=type_p,
            sid=sid,
            conf_sender=conf_sender,
            conf_receiver=conf_receiver,
            number_of_schedule_slots=slots,
            number_of_packets=packets,
            octets_to_reflect=octets_to_reflect,
            padding_to_reflect=padding_to_reflect,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class AcceptSession(ControlMessage):
    """Accept-Session (RFC 5357 §3.5): the server's answer to a Request-TW-Session."""

    NAME: ClassVar[str] = "Accept-Session"
    SIZE: ClassVar[int] = 48
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!BxH16sHH8x16x")

    accept: Accept
    #: The reflector's UDP port for this session (0 when refused).
    port: int = 0
    sid: bytes = bytes(SID_SIZE)
    #: RFC 6038: the octets the client asked us to reflect.
    reflected_octets: int = 0
    #: RFC 6038: octets the server adds of its own.
    server_octets: int = 0

    def __post_init__(self) -> None:
        _check_bytes("sid", self.sid, SID_SIZE)

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            self.accept, self.port, self.sid, self.reflected_octets, self.server_octets
        )

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        accept, port, sid, reflected, server = cls._STRUCT.unpack(data)
        return cls(Accept.from_wire(accept), port, sid, reflected, server)


@dataclasses.dataclass(frozen=True, slots=True)
class StartSessions(ControlMessage):
    """Start-Sessions (RFC 4656 §3.7), command 2: start every accepted session."""

    NAME: ClassVar[str] = "Start-Sessions"
    SIZE: ClassVar[int] = 32
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!B15x16x")

    def pack(self) -> bytes:
        return self._STRUCT.pack(Command.START_SESSIONS)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        _expect_command(cls, data, Command.START_SESSIONS)
        return cls()


@dataclasses.dataclass(frozen=True, slots=True)
class StartAck(ControlMessage):
    """Start-Ack (RFC 4656 §3.7): the server's answer to Start-Sessions."""

    NAME: ClassVar[str] = "Start-Ack"
    SIZE: ClassVar[int] = 32
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!B15x16x")

    accept: Accept

    def pack(self) -> bytes:
        return self._STRUCT.pack(self.accept)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        (accept,) = cls._STRUCT.unpack(data)
        return cls(Accept.from_wire(accept))


@dataclasses.dataclass(frozen=True, slots=True)
class StopSessions(ControlMessage):
    """Stop-Sessions (RFC 5357 §3.8), command 3: stop every session in progress.

    Number of Sessions MUST equal the number of sessions in progress on this connection.
    """

    NAME: ClassVar[str] = "Stop-Sessions"
    SIZE: ClassVar[int] = 32
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("!BB2xI8x16x")

    accept: Accept
    number_of_sessions: int

    def pack(self) -> bytes:
        return self._STRUCT.pack(Command.STOP_SESSIONS, self.accept, self.number_of_sessions)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        _check_size(cls, data, cls.SIZE)
        _expect_command(cls, data, Command.STOP_SESSIONS)
        _, accept, number = cls._STRUCT.unpack(data)
        return cls(Accept.from_wire(accept), number)


def _expect_command(cls: type[ControlMessage], data: bytes, command: Command) -> None:
    if data[0] != command:
        raise RemoteProtocolError(
            f"command {data[0]} is not {int(command)}", message=cls.NAME, field="Command", offset=0
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _SessionList(ControlMessage):
    """The shape shared by RFC 5938's four messages: command, Accept, a SID list, HMAC.

    ``16 octets header | Number of Sessions × SID | HMAC``; the header is
    ``Command(1) Accept-or-MBZ(1) MBZ(10) Number of Sessions(4)``.
    """

    COMMAND: ClassVar[Command]
    _HEADER: ClassVar[struct.Struct] = struct.Struct("!BB10xI")

    sids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.sids) <= MAX_N_SESSIONS:
            raise ValueError(f"{self.NAME} carries 1 to {MAX_N_SESSIONS} SIDs")
        for sid in self.sids:
            _check_bytes("sid", sid, SID_SIZE)

    def _accept_octet(self) -> int:
        return 0

    def pack(self) -> bytes:
        header = self._HEADER.pack(self.COMMAND, self._accept_octet(), len(self.sids))
        return header + b"".join(self.sids) + bytes(HMAC_SIZE)

    @classmethod
    def wire_size(cls, head: bytes) -> int:
        """The size follows from Number of Sessions, in the first block."""
        return size_of_session_list(cls._number_of_sessions(head))

    @classmethod
    def _number_of_sessions(cls, first_block: bytes) -> int:
        (number,) = struct.unpack_from("!I", first_block, 12)
        if not 1 <= number <= MAX_N_SESSIONS:
            raise RemoteProtocolError(
                f"Number of Sessions {number} is outside 1..{MAX_N_SESSIONS}",
                message=cls.NAME,
                field="Number of Sessions",
                offset=12,
            )
        return int(number)

    @classmethod
    def _unpack_sids(cls, data: bytes) -> tuple[int, tuple[bytes, ...]]:
        if len(data) < BLOCK:
            raise RemoteProtocolError("shorter than its header", message=cls.NAME, offset=0)
        _expect_command(cls, data, cls.COMMAND)
        number = cls._number_of_sessions(data[:BLOCK])
        _check_size(cls, data, size_of_session_list(number))
        sids = tuple(data[BLOCK + i * SID_SIZE : BLOCK + (i + 1) * SID_SIZE] for i in range(number))
        return data[1], sids


def size_of_session_list(number_of_sessions: int) -> int:
    """Octets of an RFC 5938 message that lists ``number_of_sessions`` SIDs."""
    return BLOCK + number_of_sessions * SID_SIZE + HMAC_SIZE


@dataclasses.dataclass(frozen=True, slots=True)
class StartNSessions(_SessionList):
    """Start-N-Sessions (RFC 5938 §3.2), command 7: start the listed sessions."""

    NAME: ClassVar[str] = "Start-N-Sessions"
    COMMAND: ClassVar[Command] = Command.START_N_SESSIONS

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        return cls(cls._unpack_sids(data)[1])


@dataclasses.dataclass(frozen=True, slots=True)
class StopNSessions(_SessionList):
    """Stop-N-Sessions (RFC 5938 §3.4), command 9: stop the listed sessions."""

    NAME: ClassVar[str] = "Stop-N-Sessions"
    COMMAND: ClassVar[Command] = Command.STOP_N_SESSIONS

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        return cls(cls._unpack_sids(data)[1])


@dataclasses.dataclass(frozen=True, slots=True)
class StartNAck(_SessionList):
    """Start-N-Ack (RFC 5938 §3.3), command 8: the server's answer for the listed sessions."""

    NAME: ClassVar[str] = "Start-N-Ack"
    COMMAND: ClassVar[Command] = Command.START_N_ACK

    accept: Accept = Accept.OK

    def _accept_octet(self) -> int:
        return int(self.accept)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        accept, sids = cls._unpack_sids(data)
        return cls(sids, Accept.from_wire(accept))


@dataclasses.dataclass(frozen=True, slots=True)
class StopNAck(_SessionList):
    """Stop-N-Ack (RFC 5938 §3.5), command 10: the server's answer for the listed sessions."""

    NAME: ClassVar[str] = "Stop-N-Ack"
    COMMAND: ClassVar[Command] = Command.STOP_N_ACK

    accept: Accept = Accept.OK

    def _accept_octet(self) -> int:
        return int(self.accept)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        accept, sids = cls._unpack_sids(data)
        return cls(sids, Accept.from_wire(accept))


#: The commands a Control-Client sends, by command number.
CLIENT_COMMANDS: dict[int, type[ControlMessage]] = {
    Command.REQUEST_TW_SESSION: RequestTWSession,
    Command.START_SESSIONS: StartSessions,
    Command.STOP_SESSIONS: StopSessions,
    Command.START_N_SESSIONS: StartNSessions,
    Command.STOP_N_SESSIONS: StopNSessions,
}


def make_sid(receiver: IPAddress, timestamp: int, random4: bytes) -> bytes:
    """A Session Identifier as RFC 4656 §3.5 builds it: the receiver's IPv4 address (the last
    four octets of an IPv6 one), an NTP timestamp and four random octets."""
    _check_bytes("random4", random4, 4)
    return receiver.packed[-4:] + timestamp.to_bytes(8, "big") + random4
