"""The Control-Client's dialogue: greeting, set-up, one test session requested and started.

The dialogue is written as a generator so that it reads top to bottom like the exchange it is,
while the engine drives hundreds of them at once over non-blocking sockets: it yields bytes to
send, or an :class:`Await` naming the message it waits for, and is sent each message as it comes.
Every refusal becomes a :class:`ClientError`: one sentence for the user and, where one helps, a
hint.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Generator

from twamp_common.codes import AUTHENTICATED_TEST_MODES, Accept, Mode, mode_name
from twamp_common.control import ClientControl
from twamp_common.control_messages import (
    AcceptSession,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    StartAck,
    StartSessions,
    StopSessions,
)
from twamp_common.errors import ProtocolError
from twamp_common.timestamp import ns_to_ntp, ns_to_ntp_interval

#: Strictest first: what "-u KEYID" without "-m" picks among the modes the server offers.
PREFERENCE = (Mode.ENCRYPTED, Mode.AUTHENTICATED, Mode.MIXED)
ACCEPT_MEANING = {
    Accept.FAILURE: "refused (unknown KeyID, wrong secret, or not allowed)",
    Accept.INTERNAL_ERROR: "internal error",
    Accept.NOT_SUPPORTED: "something in the request is not supported",
    Accept.PERMANENT_RESOURCE_LIMIT: "permanent resource limit",
    Accept.TEMPORARY_RESOURCE_LIMIT: "temporarily out of resources (too many sessions)",
}


class ClientError(Exception):
    """A failure to report in one sentence, exit status 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclasses.dataclass(frozen=True, slots=True)
class Await:
    """The dialogue waits for the server's ``name`` message."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRequest:
    """What the Request-TW-Session asks for, beside the addresses."""

    sender_port: int
    receiver_port: int
    #: Sender padding for the mode the set-up settles on (the largest, for varying sizes).
    padding: Callable[[Mode], int]
    dscp: int
    #: Seconds the reflector keeps reflecting after Stop-Sessions.
    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class Started:
    """A test session accepted and started."""

    mode: Mode
    #: The reflector's UDP port.
    port: int
    sid: bytes
    padding: int

    @property
    def authenticated(self) -> bool:
        return bool(self.mode & AUTHENTICATED_TEST_MODES)


Step = bytes | Await


def choose_mode(offered: Mode, wanted: Mode | None, key_id: str | None) -> Mode:
    """The mode to set up: ``wanted`` if offered, else the strictest with a KeyID, else open."""
    names = (
        ", ".join(mode_name(m) for m in (Mode.UNAUTHENTICATED, *PREFERENCE) if m & offered)
        or "none"
    )
    if wanted is not None:
        if not wanted & offered:
            raise ClientError(
                f"the server does not offer the {mode_name(wanted)} mode (it offers {names})"
            )
        return wanted
    if key_id:
        for mode in PREFERENCE:
            if mode & offered:
                return mode
        raise ClientError(f"-u was given but the server offers no secure mode (it offers {names})")
    if not Mode.UNAUTHENTICATED & offered:
        raise ClientError(
            f"the server requires a secure mode ({names})", "add -u KEYID and a --key-file"
        )
    return Mode.UNAUTHENTICATED


def dialogue(
    control: ClientControl,
    *,
    mode: Mode | None,
    key_id: str | None,
    secret: bytes | None,
    local: str,
    remote: str,
    request: SessionRequest,
    now_ns: Callable[[], int],
) -> Generator[Step, object, Started]:
    """Set up the control connection, request one session and start it."""
    greeting = yield Await("Server-Greeting")
    assert isinstance(greeting, ServerGreeting)
    if not greeting.modes & (
        Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED
    ):
        raise ClientError(
            "the server does not serve this client (it offered no mode)",
            "its allow-list or limits may exclude this address",
        )
    chosen = choose_mode(greeting.modes, mode, key_id)
    try:
        yield control.set_up(chosen, (key_id or "").encode(), secret)
    except ProtocolError as error:  # e.g. an absurd PBKDF2 Count
        raise ClientError(str(error)) from None
    start = yield Await("Server-Start")
    assert isinstance(start, ServerStart)
    if start.accept != Accept.OK:
        # Only a plain refusal can be the key's fault: a resource limit or an internal error
        # is the server's state, whatever the key.
        keyed = chosen != Mode.UNAUTHENTICATED and start.accept == Accept.FAILURE
        hint = "check the KeyID and the shared secret" if keyed else None
        raise ClientError(
            f"the server refused the {mode_name(chosen)} set-up:"
            f" {ACCEPT_MEANING.get(start.accept, 'refused')} (Accept {int(start.accept)})",
            hint,
        )
    padding = request.padding(chosen)
    yield control.send(
        RequestTWSession(
            sender_address=ipaddress.ip_address(local),
            receiver_address=ipaddress.ip_address(remote),
            sender_port=request.sender_port,
            receiver_port=request.receiver_port,
            padding_length=padding,
            start_time=ns_to_ntp(now_ns()),
            timeout=ns_to_ntp_interval(int(request.timeout * 1e9)),
            type_p=request.dscp << 24,
        )
    )
    answer = yield Await("Accept-Session")
    assert isinstance(answer, AcceptSession)
    if answer.accept != Accept.OK:
        raise ClientError(
            f"the server refused the test session: {ACCEPT_MEANING.get(answer.accept)}"
            f" (Accept {int(answer.accept)})"
        )
    yield control.send(StartSessions())
    ack = yield Await("Start-Ack")
    assert isinstance(ack, StartAck)
    if ack.accept != Accept.OK:
        raise ClientError(f"the server would not start the session (Accept {int(ack.accept)})")
    return Started(chosen, answer.port, answer.sid, padding)


def stop_sessions(control: ClientControl) -> bytes:
    """Stop-Sessions for every session in progress (it has no answer); b"" if none runs."""
    if not control.running:
        return b""
    return control.send(StopSessions(Accept.OK, len(control.running)))
