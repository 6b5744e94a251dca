"""The TWAMP-Control state machines, walked through whole sessions in memory.

A :class:`Pair` wires a ClientControl to a ServerControl through byte strings (no sockets), the
way h11's ConnectionPair does, so every mode can be driven message by message: full sessions in
open, authenticated, encrypted and mixed modes and with Individual Session Control; then every
out-of-order command, every bad HMAC and every wrong key, each of which must be refused with an
error that names the message.
"""

from __future__ import annotations

import ipaddress

import pytest
from twamp_common.codes import SECURE_CONTROL_MODES, Accept, Mode
from twamp_common.control import (
    NEED_DATA,
    ClientControl,
    ConnectionClosed,
    Phase,
    ServerControl,
    UnknownCommand,
)
from twamp_common.control_messages import (
    AcceptSession,
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
from twamp_common.errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
)

SECRET = b"correct horse battery staple"
ALL_MODES = Mode(15)
SECURE = [Mode.AUTHENTICATED, Mode.ENCRYPTED, Mode.MIXED]
EVERY_MODE = [Mode.UNAUTHENTICATED, *SECURE]


def request(port: int = 863) -> RequestTWSession:
    return RequestTWSession(
        sender_address=ipaddress.IPv4Address("127.0.0.1"),
        receiver_address=ipaddress.IPv4Address("127.0.0.1"),
        sender_port=40000,
        receiver_port=port,
        padding_length=27,
    )


class Pair:
    """A client and a server state machine joined back to back."""

    def __init__(self, offered: Mode = ALL_MODES, *, count: int = 1024) -> None:
        self.client = ClientControl()
        self.server = ServerControl(offered, count=count)

    def to_server(self, data: bytes) -> object:
        self.server.receive_data(data)
        return self.server.next_event()

    def to_client(self, data: bytes) -> object:
        self.client.receive_data(data)
        return self.client.next_event()

    def set_up(
        self, mode: Mode, *, secret: bytes = SECRET, server_secret: bytes | None = SECRET
    ) -> ServerStart:
        greeting = self.to_client(self.server.greet())
        assert isinstance(greeting, ServerGreeting)
        setup = self.to_server(self.client.set_up(mode, b"alice", secret))
        assert isinstance(setup, SetUpResponse)
        assert setup.key_id == (b"alice" if mode & SECURE_CONTROL_MODES else b"")
        start, _accepted = self.server.start(server_secret, start_time=0xE000_0000_0000_0000)
        event = self.to_client(start)
        assert isinstance(event, ServerStart)
        return event

    def open_session(self, port: int = 863) -> bytes:
        """Request a session and accept it; the SID (one per port)."""
        event = self.to_server(self.client.send(request(port)))
        assert isinstance(event, RequestTWSession)
        sid = port.to_bytes(2, "big") * 8
        answer = self.to_client(self.server.send(AcceptSession(Accept.OK, port, sid)))
        assert answer == AcceptSession(Accept.OK, port, sid)
        return sid


@pytest.mark.parametrize("mode", EVERY_MODE)
def test_full_session_in_every_mode(mode: Mode) -> None:
    pair = Pair()
    start = pair.set_up(mode)
    assert start.accept == Accept.OK
    assert start.start_time == 0xE000_0000_0000_0000
    assert pair.client.mode == pair.server.mode == mode
    assert pair.client.secure == pair.server.secure == (mode != Mode.UNAUTHENTICATED)

    sids = [pair.open_session(), pair.open_session(864)]
    assert pair.server.sessions == pair.client.sessions == sids

    assert isinstance(pair.to_server(pair.client.send(StartSessions())), StartSessions)
    assert pair.to_client(pair.server.send(StartAck(Accept.OK))) == StartAck(Accept.OK)
    assert pair.server.running == pair.client.running == set(sids)

    stop = pair.to_server(pair.client.send(StopSessions(Accept.OK, 2)))
    assert stop == StopSessions(Accept.OK, 2)
    assert not pair.server.running and not pair.client.running

    # The connection can carry another round, then closes cleanly.
    pair.open_session()
    pair.server.receive_data(b"")
    assert isinstance(pair.server.next_event(), ConnectionClosed)
    assert pair.server.phase is Phase.CLOSED


@pytest.mark.parametrize("mode", EVERY_MODE)
def test_test_packet_keys_agree_on_both_sides(mode: Mode) -> None:
    pair = Pair()
    pair.set_up(mode)
    sid = pair.open_session()
    client_side, server_side = pair.client.test_protection(sid), pair.server.test_protection(sid)
    if mode in (Mode.UNAUTHENTICATED, Mode.MIXED):
        assert client_side is None and server_side is None
        return
    assert client_side is not None and server_side is not None
    packet = bytes(range(48)) + b"padding"
    assert server_side.open_sender(client_side.seal_sender(packet))[:32] == packet[:32]


def test_client_iv_and_session_keys_are_fresh_for_every_set_up() -> None:
    """Two clients answering the very same greeting with the same secret still differ."""
    greeting = ServerControl(ALL_MODES).greet()
    answers = []
    for _ in range(2):
        client = ClientControl()
        client.receive_data(greeting)
        assert isinstance(client.next_event(), ServerGreeting)
        setup = SetUpResponse.unpack(client.set_up(Mode.AUTHENTICATED, b"alice", SECRET))
        answers.append((setup.client_iv, client.session_keys))
    (first_iv, first_keys), (second_iv, second_keys) = answers
    assert first_iv != second_iv and bytes(16) not in (first_iv, second_iv)
    assert first_keys is not None and second_keys is not None
    assert first_keys.aes_key != second_keys.aes_key
    assert first_keys.hmac_key != second_keys.hmac_key


def test_secure_control_stream_is_encrypted_on_the_wire() -> None:
    pair = Pair()
    pair.set_up(Mode.ENCRYPTED)
    wire = pair.client.send(request())
    assert len(wire) == 112
    assert wire != request().pack()
    assert wire[0] != 5  # the command number is not visible


def test_open_mode_hmac_fields_are_zero() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    assert pair.client.send(request()) == request().pack()


def test_slow_drip_delivers_each_message_once_complete() -> None:
    pair = Pair()
    pair.to_client(pair.server.greet())
    setup = pair.client.set_up(Mode.AUTHENTICATED, b"alice", SECRET)
    events = []
    for index in range(len(setup)):
        pair.server.receive_data(setup[index : index + 1])
        events.append(pair.server.next_event())
    assert events[:-1] == [NEED_DATA] * (len(setup) - 1)
    assert isinstance(events[-1], SetUpResponse)
    start, accepted = pair.server.start(SECRET, 0)
    assert accepted
    pair.to_client(start)
    wire = pair.client.send(request())
    for octet in wire[:-1]:
        pair.server.receive_data(bytes([octet]))
        assert pair.server.next_event() is NEED_DATA
    pair.server.receive_data(wire[-1:])
    assert isinstance(pair.server.next_event(), RequestTWSession)


@pytest.mark.parametrize("mode", SECURE)
def test_wrong_secret_is_refused_with_accept_1(mode: Mode) -> None:
    pair = Pair()
    start = pair.set_up(mode, secret=b"wrong secret")
    assert start.accept == Accept.FAILURE
    assert pair.server.phase is Phase.CLOSED
    assert pair.client.phase is Phase.CLOSED


def test_unknown_key_id_is_refused_with_accept_1() -> None:
    pair = Pair()
    start = pair.set_up(Mode.AUTHENTICATED, server_secret=None)
    assert start.accept == Accept.FAILURE


def test_mode_not_offered_is_refused_with_accept_3() -> None:
    pair = Pair(offered=Mode.UNAUTHENTICATED | Mode.ENCRYPTED)
    pair.to_client(pair.server.greet())
    # A client that ignores the offer (ours refuses to, see below).
    pair.to_server(SetUpResponse(Mode.AUTHENTICATED, b"alice").pack())
    assert pair.server.setup_refusal() == Accept.NOT_SUPPORTED
    start, accepted = pair.server.start(SECRET, 0)
    assert not accepted
    assert ServerStart.unpack(start).accept == Accept.NOT_SUPPORTED


def test_set_up_with_two_security_modes_is_refused() -> None:
    pair = Pair()
    pair.to_client(pair.server.greet())
    pair.to_server(SetUpResponse(Mode(3)).pack())
    assert pair.server.setup_refusal() == Accept.NOT_SUPPORTED


def test_client_gives_up_with_mode_0() -> None:
    pair = Pair()
    pair.to_client(pair.server.greet())
    pair.to_server(SetUpResponse(Mode(0)).pack())
    assert pair.server.setup_refusal() == Accept.FAILURE


def test_client_refuses_a_mode_not_offered() -> None:
    pair = Pair(offered=Mode.UNAUTHENTICATED)
    pair.to_client(pair.server.greet())
    with pytest.raises(LocalProtocolError, match="offers modes"):
        pair.client.set_up(Mode.ENCRYPTED, b"alice", SECRET)


def test_greeting_with_modes_0_closes() -> None:
    pair = Pair(offered=Mode(0))
    greeting = pair.to_client(pair.server.greet())
    assert isinstance(greeting, ServerGreeting)
    assert greeting.modes == 0
    assert pair.client.phase is Phase.CLOSED
    assert pair.server.phase is Phase.CLOSED


def test_client_refuses_an_absurd_count_before_deriving() -> None:
    server = ServerControl(ALL_MODES, count=1 << 20)
    client = ClientControl()
    client.receive_data(server.greet())
    client.next_event()
    with pytest.raises(RemoteProtocolError, match="PBKDF2") as caught:
        client.set_up(Mode.AUTHENTICATED, b"alice", SECRET)
    assert caught.value.field == "Count"
    assert client.phase is Phase.ERROR
    # The open mode does not derive anything, so the Count does not matter.
    client = ClientControl()
    client.receive_data(ServerControl(ALL_MODES, count=1 << 20).greet())
    client.next_event()
    client.set_up(Mode.UNAUTHENTICATED)


@pytest.mark.parametrize("count", [0, 512, 1000, 3000])
def test_client_refuses_a_count_that_is_not_a_power_of_two_of_at_least_1024(count: int) -> None:
    client = ClientControl()
    client.receive_data(ServerGreeting(ALL_MODES, bytes(16), bytes(16), count).pack())
    with pytest.raises(RemoteProtocolError, match="power of two"):
        client.next_event()


@pytest.mark.parametrize("mode", SECURE)
def test_tampered_command_fails_its_hmac(mode: Mode) -> None:
    pair = Pair()
    pair.set_up(mode)
    wire = bytearray(pair.client.send(request()))
    wire[40] ^= 0x01
    pair.server.receive_data(bytes(wire))
    with pytest.raises(AuthenticationError) as caught:
        pair.server.next_event()
    assert caught.value.message == "Request-TW-Session"
    assert caught.value.field == "HMAC"
    assert pair.server.phase is Phase.ERROR
    with pytest.raises(LocalProtocolError):
        pair.server.next_event()


@pytest.mark.parametrize("mode", SECURE)
def test_tampered_answer_fails_its_hmac(mode: Mode) -> None:
    pair = Pair()
    pair.set_up(mode)
    pair.to_server(pair.client.send(request()))
    wire = bytearray(pair.server.send(AcceptSession(Accept.OK, 863, bytes(range(16)))))
    wire[-1] ^= 0x80
    pair.client.receive_data(bytes(wire))
    with pytest.raises(AuthenticationError):
        pair.client.next_event()


def test_tampered_server_start_block_breaks_the_first_answer_hmac() -> None:
    pair = Pair()
    pair.to_client(pair.server.greet())
    pair.to_server(pair.client.set_up(Mode.AUTHENTICATED, b"alice", SECRET))
    start, _ = pair.server.start(SECRET, 12345)
    tampered = start[:40] + bytes([start[40] ^ 1]) + start[41:]
    pair.to_client(tampered)
    pair.to_server(pair.client.send(request()))
    pair.client.receive_data(pair.server.send(AcceptSession(Accept.OK, 863, bytes(range(16)))))
    with pytest.raises(AuthenticationError):
        pair.client.next_event()


def test_request_after_start_is_refused_without_individual_session_control() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    pair.open_session()
    pair.to_server(pair.client.send(StartSessions()))
    pair.to_client(pair.server.send(StartAck(Accept.OK)))
    with pytest.raises(LocalProtocolError, match="only Stop-Sessions"):
        pair.client.send(request())
    pair.server.receive_data(request().pack())
    with pytest.raises(RemoteProtocolError, match="only Stop-Sessions") as caught:
        pair.server.next_event()
    assert caught.value.offset == 0


def test_stop_sessions_must_count_the_sessions_in_progress() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    pair.open_session()
    pair.to_server(pair.client.send(StartSessions()))
    pair.to_client(pair.server.send(StartAck(Accept.OK)))
    with pytest.raises(LocalProtocolError, match="Number of Sessions"):
        pair.client.send(StopSessions(Accept.OK, 3))
    pair.server.receive_data(StopSessions(Accept.OK, 3).pack())
    with pytest.raises(RemoteProtocolError, match="1 sessions are in progress"):
        pair.server.next_event()


def test_stop_sessions_before_start_is_refused() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    pair.server.receive_data(StopSessions(Accept.OK, 0).pack())
    with pytest.raises(RemoteProtocolError, match="no session is running"):
        pair.server.next_event()


@pytest.mark.parametrize("mode", EVERY_MODE)
def test_unknown_command_gets_accept_3_then_the_connection_closes(mode: Mode) -> None:
    """RFC 5357 §3.5: an unexpected Command Number is answered with Accept-Session, Accept 3."""
    pair = Pair()
    pair.set_up(mode)
    command = bytes([4]) + bytes(31)  # 4: Fetch-Session, OWAMP only
    if pair.client.secure:  # what a client would put on the wire: the encrypted stream
        assert pair.client._out.stream is not None
        command = pair.client._out.stream.encrypt(command)
    assert pair.to_server(command) == UnknownCommand(4)
    answer = pair.server.send(AcceptSession(Accept.NOT_SUPPORTED))
    assert pair.server.phase is Phase.CLOSED
    pair.client._awaiting = AcceptSession  # the client sent it behind its state machine's back
    assert pair.to_client(answer) == AcceptSession(Accept.NOT_SUPPORTED)


def test_server_reads_nothing_more_until_it_answers() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    pair.server.receive_data(request().pack() + StartSessions().pack())
    assert isinstance(pair.server.next_event(), RequestTWSession)
    assert pair.server.next_event() is NEED_DATA  # Start-Sessions waits for our answer
    pair.server.send(AcceptSession(Accept.OK, 863, bytes(range(16))))
    assert isinstance(pair.server.next_event(), StartSessions)


def test_server_may_only_send_the_answer_owed() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    with pytest.raises(LocalProtocolError, match="not the answer owed"):
        pair.server.send(StartAck(Accept.OK))
    pair.to_server(pair.client.send(request()))
    with pytest.raises(LocalProtocolError, match="Accept-Session"):
        pair.server.send(StartAck(Accept.OK))


def test_client_commands_need_set_up_first() -> None:
    client = ClientControl()
    with pytest.raises(LocalProtocolError):
        client.send(StartSessions())


def test_accept_session_with_port_0_or_zero_sid_is_refused_by_the_client() -> None:
    for bad in (AcceptSession(Accept.OK, 0, bytes(range(16))), AcceptSession(Accept.OK, 863)):
        pair = Pair()
        pair.set_up(Mode.UNAUTHENTICATED)
        pair.to_server(pair.client.send(request()))
        pair.client.receive_data(bad.pack())
        with pytest.raises(RemoteProtocolError):
            pair.client.next_event()


def test_refused_session_is_not_counted() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    pair.to_server(pair.client.send(request()))
    refusal = AcceptSession(Accept.TEMPORARY_RESOURCE_LIMIT)
    assert pair.to_client(pair.server.send(refusal)) == refusal
    assert pair.client.sessions == pair.server.sessions == []


def test_eof_inside_a_message_is_an_error() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    pair.server.receive_data(request().pack()[:50])
    pair.server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed inside a message"):
        pair.server.next_event()


@pytest.mark.parametrize("mode", [Mode.UNAUTHENTICATED, Mode.ENCRYPTED])
def test_individual_session_control(mode: Mode) -> None:
    pair = Pair(offered=ALL_MODES | Mode.INDIVIDUAL_SESSION_CONTROL)
    pair.set_up(mode | Mode.INDIVIDUAL_SESSION_CONTROL)
    assert pair.server.individual_session_control
    first = pair.open_session()
    with pytest.raises(LocalProtocolError, match="Start-N"):
        pair.client.send(StartSessions())

    event = pair.to_server(pair.client.send(StartNSessions((first,))))
    assert event == StartNSessions((first,))
    assert pair.to_client(pair.server.send(StartNAck((first,)))) == StartNAck((first,))
    assert pair.client.running == {first}

    # Unlike RFC 5357, more sessions can be requested while one runs.
    pair.to_server(pair.client.send(request(900)))
    second = bytes(range(1, 17))
    pair.to_client(pair.server.send(AcceptSession(Accept.OK, 900, second)))
    pair.to_server(pair.client.send(StartNSessions((second,))))
    pair.to_client(pair.server.send(StartNAck((second,))))
    assert pair.server.running == {first, second}

    pair.to_server(pair.client.send(StopNSessions((first,))))
    assert pair.to_client(pair.server.send(StopNAck((first,)))) == StopNAck((first,))
    assert pair.client.running == pair.server.running == {second}
    assert pair.server.sessions == [second]


def test_start_n_sessions_with_unknown_sid_is_refused() -> None:
    pair = Pair(offered=ALL_MODES | Mode.INDIVIDUAL_SESSION_CONTROL)
    pair.set_up(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
    pair.server.receive_data(StartNSessions((b"\x99" * 16,)).pack())
    with pytest.raises(RemoteProtocolError, match="never accepted") as caught:
        pair.server.next_event()
    assert caught.value.field == "SID"


def test_start_n_sessions_needs_the_mode() -> None:
    pair = Pair()
    pair.set_up(Mode.UNAUTHENTICATED)
    sid = pair.open_session()
    pair.server.receive_data(StartNSessions((sid,)).pack())
    with pytest.raises(RemoteProtocolError, match="Individual Session Control"):
        pair.server.next_event()


def test_individual_session_control_not_offered_is_refused() -> None:
    pair = Pair()
    pair.to_client(pair.server.greet())
    pair.to_server(SetUpResponse(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL).pack())
    assert pair.server.setup_refusal() == Accept.NOT_SUPPORTED
