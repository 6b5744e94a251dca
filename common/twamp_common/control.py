"""TWAMP-Control state machines for both roles, in the style of h11: no I/O.

Feed received bytes with :meth:`ControlConnection.receive_data`, pull events with
:meth:`ControlConnection.next_event` (a message dataclass from ``control_messages``,
:class:`ConnectionClosed`, or :data:`NEED_DATA`), and turn the messages you want to send into
bytes with ``send``.  The connection objects own everything that depends on the order of the
stream: the mode, the AES-CBC streams and the running HMACs of both directions (RFC 4656 §3.2,
§3.4; RFC 5357 §3.2), which commands are allowed when, and which test sessions exist.

Rules enforced here, for both roles:

* Set-up: Server-Greeting, Set-Up-Response, Server-Start, in that order, then commands.
* Every client command gets its answer before the next command is read (Stop-Sessions has none).
  A server connection reads no further command until the answer was sent, so pipelined bytes
  simply wait in the buffer.
* Without Individual Session Control (RFC 5938): Request-TW-Session only before Start-Sessions,
  Stop-Sessions only while sessions run, with Number of Sessions equal to the sessions in
  progress (RFC 5357 §3.8).  With it: Start-N/Stop-N by SID, and never Start/Stop-Sessions.
* In the secure modes (authenticated, encrypted, mixed) every message after Set-Up-Response is
  encrypted and its HMAC verified before the message is interpreted; a failed HMAC is fatal.

A connection that raised a :class:`~twamp_common.errors.ProtocolError` is dead: further calls
raise too.  The driver closes the socket.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import os
from collections.abc import Callable
from typing import Final, TypeAlias, cast

from . import crypto
from .codes import (
    SECURE_CONTROL_MODES,
    SECURITY_MODES,
    Accept,
    Command,
    Mode,
    security_mode,
)
from .control_messages import (
    BLOCK,
    CLIENT_COMMANDS,
    HMAC_SIZE,
    AcceptSession,
    ControlMessage,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartNAck,
    StartNSessions,
    StartSessions,
    StopNAck,
    StopNSessions,
    StopSessions,
)
from .errors import (
    AuthenticationError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)

#: Smallest PBKDF2 Count a server may send (RFC 4656 §3.1).
MIN_COUNT: Final = 1024
#: Default largest Count a client accepts before spending CPU on it (RFC 5357 §6).
DEFAULT_MAX_COUNT: Final = 32768
#: Feature bits we implement besides the security modes.
SUPPORTED_FEATURES: Final = Mode.INDIVIDUAL_SESSION_CONTROL


class _NeedData(enum.Enum):
    """Sentinel type: no complete event is buffered yet (an enum, so ``is`` narrows types)."""

    NEED_DATA = enum.auto()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event`` when more bytes must arrive before an event is complete.
NEED_DATA: Final = _NeedData.NEED_DATA


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side of the TCP connection at a message boundary."""


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A command number TWAMP does not define (such as OWAMP's Fetch-Session).

    RFC 5357 §3.5: the Server MUST answer it with an Accept-Session whose Accept is 3.  Its
    length is unknown, so nothing after it can be framed: the connection closes after that
    answer.
    """

    command: int


ClientEvent: TypeAlias = (
    ServerGreeting
    | ServerStart
    | AcceptSession
    | StartAck
    | StartNAck
    | StopNAck
    | ConnectionClosed
)
ServerEvent: TypeAlias = (
    SetUpResponse
    | RequestTWSession
    | StartSessions
    | StopSessions
    | StartNSessions
    | StopNSessions
    | UnknownCommand
    | ConnectionClosed
)
ClientCommand: TypeAlias = (
    RequestTWSession | StartSessions | StopSessions | StartNSessions | StopNSessions
)
ServerAnswer: TypeAlias = AcceptSession | StartAck | StartNAck | StopNAck


class Phase(enum.Enum):
    """Where a control connection stands."""

    #: Server-Greeting not yet exchanged.
    GREETING = enum.auto()
    #: Set-Up-Response not yet exchanged.
    SETUP = enum.auto()
    #: Server-Start not yet exchanged.
    SERVER_START = enum.auto()
    #: Set-up done: commands flow.
    OPEN = enum.auto()
    #: Closed cleanly (refused set-up, or the peer closed).
    CLOSED = enum.auto()
    #: A protocol error happened; nothing more can be done.
    ERROR = enum.auto()


class _Direction:
    """One direction of the control stream: its CBC stream and running HMAC, once keyed."""

    __slots__ = ("hmac", "stream")

    def __init__(self) -> None:
        self.stream: crypto.CBCStream | None = None
        self.hmac: crypto.RunningHMAC | None = None

    def key(self, keys: crypto.SessionKeys, iv: bytes) -> None:
        self.stream = crypto.CBCStream(keys.aes_key, iv)
        self.hmac = crypto.RunningHMAC(keys.hmac_key)


class ControlConnection:
    """What both roles share: buffers, crypto, the command/answer discipline, the session list.

    Not used directly: see :class:`ClientControl` and :class:`ServerControl`.
    """

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self.phase = Phase.GREETING
        #: The mode chosen in Set-Up-Response (security bit plus feature bits), once known.
        self.mode = Mode(0)
        self._keys: crypto.SessionKeys | None = None
        self._out = _Direction()
        self._in = _Direction()
        self._raw = bytearray()  # bytes received and not yet decrypted
        self._plain = bytearray()  # decrypted (or clear) bytes not yet parsed
        self._decrypting = False
        self._eof = False
        #: The answer the server owes to the command in flight, if any.
        self._awaiting: type[ControlMessage] | None = None
        self._sent_start_n: tuple[bytes, ...] = ()
        #: SIDs of the sessions accepted on this connection, in order.
        self.sessions: list[bytes] = []
        #: SIDs of the sessions started and not yet stopped.
        self.running: set[bytes] = set()

    # -- what the drivers ask -------------------------------------------------------------

    @property
    def secure(self) -> bool:
        """Whether the control stream is encrypted and authenticated (not open mode)."""
        return bool(self.mode & SECURE_CONTROL_MODES)

    @property
    def individual_session_control(self) -> bool:
        """Whether RFC 5938's Start-N/Stop-N commands replace Start/Stop-Sessions."""
        return bool(self.mode & Mode.INDIVIDUAL_SESSION_CONTROL)

    @property
    def session_keys(self) -> crypto.SessionKeys | None:
        """The control connection's AES and HMAC session keys (secure modes only)."""
        return self._keys

    def test_protection(self, sid: bytes) -> crypto.TestPacketProtection | None:
        """Protection of the test packets of session ``sid``, or None when they travel clear.

        Authenticated and encrypted modes protect test packets with keys derived from the SID
        and the control session keys (RFC 4656 §4.1.2); open and mixed modes do not.
        """
        test_mode = Mode(self.mode & (Mode.AUTHENTICATED | Mode.ENCRYPTED))
        if not test_mode or self._keys is None:
            return None
        return crypto.TestPacketProtection(test_mode, crypto.keys_for_test_session(sid, self._keys))

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after end of stream")
            self._raw += data
            self._decrypt_available()
        else:
            self._eof = True

    # -- internals shared by both roles ------------------------------------------------------

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self.phase = Phase.ERROR
        return error

    def _check_alive(self) -> None:
        if self.phase is Phase.ERROR:
            raise LocalProtocolError("the connection already failed")
        if self.phase is Phase.CLOSED:
            raise LocalProtocolError("the connection is closed")

    def _decrypt_available(self) -> None:
        if not self._decrypting:
            return
        usable = len(self._raw) - len(self._raw) % BLOCK
        if usable:
            assert self._in.stream is not None
            self._plain += self._in.stream.decrypt(bytes(self._raw[:usable]))
            del self._raw[:usable]

    def _start_decrypting(self) -> None:
        """From here on every received octet is ciphertext, including any already buffered."""
        self._decrypting = True
        self._decrypt_available()

    def _buffer(self) -> bytearray:
        return self._plain if self._decrypting else self._raw

    def _take(self, size: int) -> bytes | None:
        buffer = self._buffer()
        if len(buffer) < size:
            return None
        chunk = bytes(buffer[:size])
        del buffer[:size]
        return chunk

    def _peek(self, size: int) -> bytes | None:
        buffer = self._buffer()
        return bytes(buffer[:size]) if len(buffer) >= size else None

    def _take_message(self, cls: type[ControlMessage]) -> bytes | None:
        """One whole ``cls`` message from the buffer, or None until it has all arrived."""
        head = self._peek(BLOCK)
        return None if head is None else self._take(cls.wire_size(head))

    def _end_of_stream(self) -> ConnectionClosed | _NeedData:
        """NEED_DATA, or the end of the stream when the peer closed at a message boundary."""
        if not self._eof:
            return NEED_DATA
        if self._raw or self._plain:
            raise self._fail(
                RemoteProtocolError(
                    f"connection closed inside a message ({len(self._raw) + len(self._plain)}"
                    " octets buffered)"
                )
            )
        self.phase = Phase.CLOSED
        return ConnectionClosed()

    def _verify(self, cls: type[ControlMessage], data: bytes) -> None:
        """Check the HMAC that closes a received message (secure modes)."""
        if not self.secure:
            return
        assert self._in.hmac is not None
        self._in.hmac.update(data[:-HMAC_SIZE])
        if not self._in.hmac.verify(data[-HMAC_SIZE:]):
            raise self._fail(
                AuthenticationError(
                    "HMAC does not match", message=cls.NAME, field="HMAC", offset=len(data) - 16
                )
            )

    def _seal(self, message: ControlMessage) -> bytes:
        """Bytes of ``message`` with its HMAC in place and, in secure modes, encrypted."""
        plain = message.pack()
        if not self.secure:
            return plain
        assert self._out.hmac is not None and self._out.stream is not None
        body = plain[:-HMAC_SIZE]
        self._out.hmac.update(body)
        return self._out.stream.encrypt(body + self._out.hmac.digest())

    def _session_count_mismatch(self, message: StopSessions) -> str | None:
        if message.number_of_sessions == len(self.running):
            return None
        return (
            f"Number of Sessions is {message.number_of_sessions} but {len(self.running)}"
            " sessions are in progress"
        )

    def _command_allowed(self, command: int) -> str | None:
        """Why ``command`` may not come now, or None when it may."""
        if self._awaiting is not None:
            return f"the answer to the previous command ({self._awaiting.NAME}) is still owed"
        if command not in CLIENT_COMMANDS:
            return f"command {command} is not a TWAMP-Control command a client may send"
        isc = self.individual_session_control
        if command == Command.REQUEST_TW_SESSION:
            if self.running and not isc:
                return "sessions are running: only Stop-Sessions is allowed"
            return None
        if command in (Command.START_SESSIONS, Command.STOP_SESSIONS) and isc:
            return "Individual Session Control was chosen: use Start-N/Stop-N-Sessions"
        if command in (Command.START_N_SESSIONS, Command.STOP_N_SESSIONS) and not isc:
            return "Individual Session Control was not chosen in Set-Up-Response"
        if command == Command.START_SESSIONS and self.running:
            return "sessions are already running"
        if command == Command.STOP_SESSIONS and not self.running:
            return "no session is running"
        return None

    def _unknown_sids(self, sids: tuple[bytes, ...]) -> list[bytes]:
        known = set(self.sessions)
        return [sid for sid in sids if sid not in known]

    def _apply_answer(self, answer: ControlMessage) -> None:
        """Update the session list once an answer passed (sent by a server, read by a client)."""
        if isinstance(answer, AcceptSession):
            if answer.accept == Accept.OK:
                self.sessions.append(answer.sid)
        elif isinstance(answer, StartAck):
            if answer.accept == Accept.OK:
                self.running.update(self.sessions)
        elif isinstance(answer, StartNAck):
            if answer.accept == Accept.OK:
                self.running.update(answer.sids)
        elif isinstance(answer, StopNAck) and answer.accept == Accept.OK:
            self.running.difference_update(answer.sids)
            self.sessions = [sid for sid in self.sessions if sid not in answer.sids]
        self._awaiting = None

    def _apply_stop_sessions(self) -> None:
        """Stop-Sessions ends every session of the connection (RFC 5357 §3.8)."""
        self.running.clear()
        self.sessions.clear()

    def _answer_for(self, command: int) -> type[ControlMessage] | None:
        answers: dict[int, type[ControlMessage]] = {
            Command.REQUEST_TW_SESSION: AcceptSession,
            Command.START_SESSIONS: StartAck,
            Command.START_N_SESSIONS: StartNAck,
            Command.STOP_N_SESSIONS: StopNAck,
        }
        return answers.get(command)


class ClientControl(ControlConnection):
    """The Control-Client's side of TWAMP-Control.

    ``next_event`` → Server-Greeting; :meth:`set_up` → Set-Up-Response bytes; ``next_event`` →
    Server-Start; then ``send`` commands and read their answers.
    """

    def __init__(
        self,
        *,
        max_count: int = DEFAULT_MAX_COUNT,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(random_bytes)
        self.max_count = max_count
        self.greeting: ServerGreeting | None = None

    def set_up(self, mode: Mode, key_id: bytes = b"", secret: bytes | None = None) -> bytes:
        """The Set-Up-Response choosing ``mode``; ``key_id`` and ``secret`` for secure modes.

        Refuses (LocalProtocolError) a mode the server did not offer and, before deriving any
        key, a PBKDF2 Count above ``max_count`` (RFC 5357 §6).
        """
        self._check_alive()
        if self.phase is not Phase.SETUP or self.greeting is None:
            raise LocalProtocolError("Set-Up-Response comes right after Server-Greeting")
        try:
            chosen = security_mode(mode)
        except ValueError as exc:
            raise LocalProtocolError(str(exc), message=SetUpResponse.NAME, field="Mode") from exc
        if not self.greeting.modes & chosen or mode & ~self.greeting.modes:
            raise LocalProtocolError(
                f"the server offers modes {int(self.greeting.modes):#x}, not {int(mode):#x}",
                message=SetUpResponse.NAME,
                field="Mode",
                offset=0,
            )
        self.mode = mode
        if not chosen & SECURE_CONTROL_MODES:
            self.phase = Phase.SERVER_START
            return SetUpResponse(mode).pack()
        if secret is None or not key_id:
            raise LocalProtocolError(f"{chosen.name} mode needs a KeyID and a shared secret")
        if self.greeting.count > self.max_count:
            raise self._fail(
                RemoteProtocolError(
                    f"the server asks for {self.greeting.count} PBKDF2 iterations, more than the"
                    f" {self.max_count} this client allows (RFC 5357 §6)",
                    message=ServerGreeting.NAME,
                    field="Count",
                    offset=48,
                )
            )
        key = crypto.derive_key(secret, self.greeting.salt, self.greeting.count)
        self._keys = crypto.SessionKeys.generate()
        client_iv = self._random(16)
        token = crypto.encrypt_token(key, self.greeting.challenge, self._keys)
        self._out.key(self._keys, client_iv)
        self.phase = Phase.SERVER_START
        return SetUpResponse(mode, key_id, token, client_iv).pack()

    def send(self, message: ClientCommand) -> bytes:
        """Bytes of a client command, HMAC and encryption applied."""
        self._check_alive()
        if self.phase is not Phase.OPEN:
            raise LocalProtocolError("commands can be sent only after Server-Start")
        command = message.pack()[0]
        refusal = self._command_allowed(command)
        if refusal is not None:
            raise LocalProtocolError(refusal, message=message.NAME, field="Command", offset=0)
        if isinstance(message, StopSessions):
            if (mismatch := self._session_count_mismatch(message)) is not None:
                raise LocalProtocolError(mismatch, message=message.NAME, field="Number of Sessions")
            self._apply_stop_sessions()
        elif isinstance(message, StartNSessions | StopNSessions):
            if unknown := self._unknown_sids(message.sids):
                raise LocalProtocolError(
                    f"{len(unknown)} SIDs were never accepted", message=message.NAME
                )
            self._sent_start_n = message.sids
        self._awaiting = self._answer_for(command)
        return self._seal(message)

    def next_event(self) -> ClientEvent | _NeedData:
        """The next complete message from the server, NEED_DATA, or ConnectionClosed."""
        self._check_alive()
        try:
            return self._next_event()
        except ProtocolError as error:
            raise self._fail(error) from None

    def _next_event(self) -> ClientEvent | _NeedData:
        if self.phase is Phase.GREETING:
            data = self._take(ServerGreeting.SIZE)
            if data is None:
                return self._end_of_stream()
            greeting = ServerGreeting.unpack(data)
            self.greeting = greeting
            self.phase = Phase.SETUP
            self._check_greeting(greeting)
            return greeting
        if self.phase is Phase.SETUP:
            return self._end_of_stream()  # the server speaks next only after Set-Up-Response
        if self.phase is Phase.SERVER_START:
            return self._read_server_start()
        if self._awaiting is None:
            return self._end_of_stream()  # the server has nothing to say unprompted
        return self._read_answer(self._awaiting)

    def _check_greeting(self, greeting: ServerGreeting) -> None:
        if not greeting.modes & SECURITY_MODES:
            # Modes 0: the server will not serve us (RFC 4656 §3.1); the caller closes.
            self.phase = Phase.CLOSED
            return
        count = greeting.count
        if count < MIN_COUNT or count & (count - 1):
            raise RemoteProtocolError(
                f"Count {count} is not a power of two of at least {MIN_COUNT}",
                message=ServerGreeting.NAME,
                field="Count",
                offset=48,
            )

    def _read_server_start(self) -> ServerStart | ConnectionClosed | _NeedData:
        data = self._take(ServerStart.SIZE)
        if data is None:
            return self._end_of_stream()
        head = ServerStart.unpack(data)
        if head.accept != Accept.OK or not self.secure:
            self.phase = Phase.OPEN if head.accept == Accept.OK else Phase.CLOSED
            return head
        assert self._keys is not None
        self._in.key(self._keys, head.server_iv)
        assert self._in.stream is not None and self._in.hmac is not None
        last_block = self._in.stream.decrypt(data[32:])
        # RFC 5357 §3.2: the first HMAC from the server also covers this block.
        self._in.hmac.update(last_block)
        self._start_decrypting()
        self.phase = Phase.OPEN
        return ServerStart.unpack(data[:32] + last_block)

    def _read_answer(self, cls: type[ControlMessage]) -> ClientEvent | _NeedData:
        data = self._take_message(cls)
        if data is None:
            return self._end_of_stream()
        self._verify(cls, data)
        answer = cast(ServerAnswer, cls.unpack(data))
        if isinstance(answer, AcceptSession) and answer.accept == Accept.OK:
            answer = self._check_accept(answer)
        if isinstance(answer, StartNAck | StopNAck) and set(answer.sids) - set(self._sent_start_n):
            raise RemoteProtocolError(
                "acknowledges SIDs that were not in the command", message=answer.NAME, offset=16
            )
        self._apply_answer(answer)
        return answer

    def _check_accept(self, answer: AcceptSession) -> AcceptSession:
        if answer.port == 0:
            raise RemoteProtocolError(
                "accepted a session without a reflector port",
                message=AcceptSession.NAME,
                field="Port",
                offset=2,
            )
        if not any(answer.sid):
            raise RemoteProtocolError(
                "accepted a session with an all-zero SID",
                message=AcceptSession.NAME,
                field="SID",
                offset=4,
            )
        return answer


class ServerControl(ControlConnection):
    """The Server's side of TWAMP-Control.

    :meth:`greet` → Server-Greeting bytes; ``next_event`` → Set-Up-Response;
    :meth:`start` → Server-Start bytes (after checking the mode and, in secure modes, the
    Token); then ``next_event`` gives commands and ``send`` their answers.
    """

    def __init__(
        self,
        modes: Mode,
        *,
        count: int = 2048,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(random_bytes)
        if count < MIN_COUNT or count & (count - 1):
            raise ValueError(f"Count {count} must be a power of two of at least {MIN_COUNT}")
        #: The modes this connection offers (0 = we will not serve this client).
        self.offered = modes
        self.count = count
        self._greeting: ServerGreeting | None = None
        self._setup: SetUpResponse | None = None
        #: An unknown command was answered: nothing after it can be framed.
        self._close_after_answer = False

    def greet(self) -> bytes:
        """Server-Greeting with the offered modes, a fresh Challenge and Salt."""
        self._check_alive()
        if self.phase is not Phase.GREETING:
            raise LocalProtocolError("Server-Greeting is sent once, first")
        self._greeting = ServerGreeting(
            self.offered, self._random(16), self._random(16), self.count
        )
        self.phase = Phase.SETUP if self.offered & SECURITY_MODES else Phase.CLOSED
        return self._greeting.pack()

    def next_event(self) -> ServerEvent | _NeedData:
        """The next complete message from the client, NEED_DATA, or ConnectionClosed."""
        self._check_alive()
        try:
            return self._next_event()
        except ProtocolError as error:
            raise self._fail(error) from None

    def _next_event(self) -> ServerEvent | _NeedData:
        if self.phase is Phase.SETUP and self._setup is None:
            data = self._take(SetUpResponse.SIZE)
            if data is None:
                return self._end_of_stream()
            self._setup = SetUpResponse.unpack(data)
            return self._setup
        if self.phase is not Phase.OPEN or self._awaiting is not None:
            # Nothing is read while we owe an answer (Server-Start or a command's answer).
            return NEED_DATA if not self._eof else self._end_of_stream()
        return self._read_command()

    def setup_refusal(self) -> Accept | None:
        """Why the received Set-Up-Response cannot be served in its mode, or None if it can.

        A mode with no or several security bits, one we did not offer, or a feature we do not
        implement yields NOT_SUPPORTED (RFC 4656 §3.3 code 3); Mode 0 (the client gave up)
        yields FAILURE.
        """
        if self._setup is None:
            raise LocalProtocolError("no Set-Up-Response was received")
        mode = self._setup.mode
        if not mode:
            return Accept.FAILURE
        try:
            chosen = security_mode(mode)
        except ValueError:
            return Accept.NOT_SUPPORTED
        features = Mode(mode & ~SECURITY_MODES)
        if not chosen & self.offered or features & ~(self.offered & SUPPORTED_FEATURES):
            return Accept.NOT_SUPPORTED
        return None

    def start(self, secret: bytes | None, start_time: int) -> tuple[bytes, bool]:
        """Server-Start for the received Set-Up-Response: ``(bytes, accepted)``.

        ``secret`` is the shared secret of the Set-Up-Response's KeyID, or None when the KeyID
        is unknown (a key is then derived anyway, so an unknown KeyID costs the same time as a
        wrong secret).  A refused set-up leaves the connection CLOSED after these bytes.
        """
        self._check_alive()
        if self.phase is not Phase.SETUP or self._setup is None or self._greeting is None:
            raise LocalProtocolError("Server-Start answers a Set-Up-Response")
        refusal = self.setup_refusal()
        if refusal is None and self._setup.mode & SECURE_CONTROL_MODES:
            refusal = self._authenticate(secret)
        if refusal is not None:
            self.phase = Phase.CLOSED
            return ServerStart(refusal).pack(), False
        self.mode = self._setup.mode
        server_iv = self._random(16)
        message = ServerStart(Accept.OK, server_iv, start_time).pack()
        self.phase = Phase.OPEN
        self._start_decrypting_if_secure()
        if not self.secure:
            return message, True
        assert self._keys is not None
        self._out.key(self._keys, server_iv)
        assert self._out.stream is not None and self._out.hmac is not None
        # RFC 5357 §3.2: the first HMAC we send also covers Start-Time and its MBZ.
        self._out.hmac.update(message[32:])
        return message[:32] + self._out.stream.encrypt(message[32:]), True

    def refuse(self, accept: Accept) -> bytes:
        """Server-Start refusing the received Set-Up-Response with ``accept`` without looking
        at its Token (a server shedding load: no key is derived); the connection is CLOSED."""
        self._check_alive()
        if self.phase is not Phase.SETUP or self._setup is None:
            raise LocalProtocolError("Server-Start answers a Set-Up-Response")
        if accept == Accept.OK:
            raise LocalProtocolError("refuse() needs a non-zero Accept")
        self.phase = Phase.CLOSED
        return ServerStart(accept).pack()

    def _authenticate(self, secret: bytes | None) -> Accept | None:
        assert self._setup is not None and self._greeting is not None
        known = secret is not None
        key = crypto.derive_key(
            secret if secret is not None else self._random(16),
            self._greeting.salt,
            self._greeting.count,
        )
        challenge, keys = crypto.decrypt_token(key, self._setup.token)
        if not (hmac.compare_digest(challenge, self._greeting.challenge) and known):
            return Accept.FAILURE
        self._keys = keys
        self._in.key(keys, self._setup.client_iv)
        return None

    def _start_decrypting_if_secure(self) -> None:
        if self._setup is not None and self._setup.mode & SECURE_CONTROL_MODES:
            self._start_decrypting()

    def _read_command(self) -> ServerEvent | _NeedData:
        first = self._peek(BLOCK)
        if first is None:
            return self._end_of_stream()
        command = first[0]
        if self._awaiting is None and command not in CLIENT_COMMANDS:
            self._awaiting = AcceptSession
            self._close_after_answer = True
            return UnknownCommand(command)
        refusal = self._command_allowed(command)
        if refusal is not None:
            raise RemoteProtocolError(
                refusal, message="TWAMP-Control command", field="Command", offset=0
            )
        cls = CLIENT_COMMANDS[command]
        data = self._take_message(cls)
        if data is None:
            return self._end_of_stream()
        self._verify(cls, data)
        message = cast(ClientCommand, cls.unpack(data))
        if isinstance(message, StopSessions):
            if (mismatch := self._session_count_mismatch(message)) is not None:
                raise RemoteProtocolError(
                    mismatch, message=message.NAME, field="Number of Sessions", offset=4
                )
            self._apply_stop_sessions()
        elif isinstance(message, StartNSessions | StopNSessions) and (
            unknown := self._unknown_sids(message.sids)
        ):
            raise RemoteProtocolError(
                f"{len(unknown)} of the SIDs were never accepted on this connection",
                message=cls.NAME,
                field="SID",
                offset=16,
            )
        self._awaiting = self._answer_for(command)
        return message

    def send(self, message: ServerAnswer) -> bytes:
        """Bytes of the answer to the command in flight, HMAC and encryption applied."""
        self._check_alive()
        if self._awaiting is None or not isinstance(message, self._awaiting):
            owed = self._awaiting.NAME if self._awaiting else "nothing"
            raise LocalProtocolError(f"{message.NAME} is not the answer owed ({owed})")
        self._apply_answer(message)
        data = self._seal(message)
        if self._close_after_answer:
            self.phase = Phase.CLOSED
        return data
