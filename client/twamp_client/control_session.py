"""The Control-Client: TWAMP-Control over a blocking TCP socket, around ClientControl.

A command-line client does one thing at a time, so plain blocking sockets with timeouts are the
clearest driver for the sans-I/O state machine.  Every failure becomes a :class:`ClientError`:
one sentence for the user and, where one helps, a hint.
"""

from __future__ import annotations

import ipaddress
import socket
import time

from twamp_common.codes import AUTHENTICATED_TEST_MODES, Accept, Mode, mode_name
from twamp_common.control import NEED_DATA, ClientControl, ConnectionClosed
from twamp_common.control_messages import (
    AcceptSession,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    StartAck,
    StartSessions,
    StopSessions,
)
from twamp_common.crypto import TestPacketProtection
from twamp_common.errors import AuthenticationError, ProtocolError
from twamp_common.timestamp import ns_to_ntp, ns_to_ntp_interval

#: Seconds to wait for the server at each step of the control exchange.
CONTROL_TIMEOUT = 10.0
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


class ControlSession:
    """One TWAMP-Control connection to a server."""

    def __init__(
        self,
        address: tuple[str, int] | tuple[str, int, int, int],
        family: int,
        *,
        source: str | None = None,
        max_count: int,
    ) -> None:
        self.address = address
        self.control = ClientControl(max_count=max_count)
        self.greeting: ServerGreeting | None = None
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(CONTROL_TIMEOUT)
        where = f"{address[0]} port {address[1]}"
        try:
            if source is not None:
                self.sock.bind((source, 0))
            self.sock.connect(address)
        except ConnectionRefusedError:
            self.sock.close()
            raise ClientError(
                f"connection refused by {where}",
                f"is twamp-server running there, and TCP port {address[1]} open in its firewall?",
            ) from None
        except TimeoutError:
            self.sock.close()
            raise ClientError(
                f"no answer from {where} within {CONTROL_TIMEOUT:g} s",
                f"a firewall may be dropping TCP port {address[1]}",
            ) from None
        except OSError as error:
            self.sock.close()
            raise ClientError(f"cannot connect to {where}: {error.strerror}") from None

    def close(self) -> None:
        self.sock.close()

    @property
    def local_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.sock.getsockname()[0])

    @property
    def remote_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.sock.getpeername()[0])

    def _event(self, waiting_for: str) -> object:
        try:
            while (event := self.control.next_event()) is NEED_DATA:
                self.control.receive_data(self.sock.recv(65536))
        except TimeoutError:
            raise ClientError(
                f"the server sent no {waiting_for} within {CONTROL_TIMEOUT:g} s"
            ) from None
        except AuthenticationError as error:
            raise ClientError(
                f"the server's {error.message} failed its HMAC", "the shared secret differs"
            ) from None
        except ProtocolError as error:
            raise ClientError(f"protocol error from the server: {error}") from None
        except OSError as error:
            raise ClientError(f"the control connection failed: {error.strerror}") from None
        if isinstance(event, ConnectionClosed):
            raise ClientError(f"the server closed the connection instead of sending {waiting_for}")
        return event

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise ClientError(f"the control connection failed: {error.strerror}") from None

    def set_up(self, mode: Mode | None, key_id: str | None, secret: bytes | None) -> Mode:
        """Greeting, Set-Up-Response, Server-Start; the mode in use."""
        greeting = self._event("Server-Greeting")
        assert isinstance(greeting, ServerGreeting)
        self.greeting = greeting
        if not greeting.modes & (
            Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED
        ):
            raise ClientError(
                "the server does not serve this client (it offered no mode)",
                "its allow-list or limits may exclude this address",
            )
        chosen = self._choose(greeting.modes, mode, key_id)
        try:
            self._send(self.control.set_up(chosen, (key_id or "").encode(), secret))
        except ProtocolError as error:  # e.g. an absurd PBKDF2 Count
            raise ClientError(str(error)) from None
        start = self._event("Server-Start")
        assert isinstance(start, ServerStart)
        if start.accept != Accept.OK:
            hint = (
                "check the KeyID and the shared secret" if chosen != Mode.UNAUTHENTICATED else None
            )
            raise ClientError(
                f"the server refused the {mode_name(chosen)} set-up:"
                f" {ACCEPT_MEANING.get(start.accept, 'refused')}"
                f" (Accept {int(start.accept)})",
                hint,
            )
        return chosen

    @staticmethod
    def _choose(offered: Mode, wanted: Mode | None, key_id: str | None) -> Mode:
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
            raise ClientError(
                f"-u was given but the server offers no secure mode (it offers {names})"
            )
        if not Mode.UNAUTHENTICATED & offered:
            raise ClientError(
                f"the server requires a secure mode ({names})", "add -u KEYID and a --key-file"
            )
        return Mode.UNAUTHENTICATED

    def request(
        self, *, sender_port: int, receiver_port: int, padding: int, dscp: int, timeout: float
    ) -> AcceptSession:
        """Request-TW-Session and its Accept-Session (refusals raise ClientError)."""
        message = RequestTWSession(
            sender_address=self.local_address,
            receiver_address=self.remote_address,
            sender_port=sender_port,
            receiver_port=receiver_port,
            padding_length=padding,
            start_time=ns_to_ntp(time.time_ns()),
            timeout=ns_to_ntp_interval(int(timeout * 1e9)),
            type_p=dscp << 24,
        )
        self._send(self.control.send(message))
        answer = self._event("Accept-Session")
        assert isinstance(answer, AcceptSession)
        if answer.accept != Accept.OK:
            raise ClientError(
                f"the server refused the test session: {ACCEPT_MEANING.get(answer.accept)}"
                f" (Accept {int(answer.accept)})"
            )
        return answer

    def start(self) -> None:
        self._send(self.control.send(StartSessions()))
        answer = self._event("Start-Ack")
        assert isinstance(answer, StartAck)
        if answer.accept != Accept.OK:
            raise ClientError(
                f"the server would not start the session (Accept {int(answer.accept)})"
            )

    def stop(self) -> None:
        """Stop-Sessions for every session in progress (it has no answer)."""
        if self.control.running:
            self._send(self.control.send(StopSessions(Accept.OK, len(self.control.running))))

    def protection(self, sid: bytes) -> TestPacketProtection | None:
        return self.control.test_protection(sid)

    @property
    def authenticated_layout(self) -> bool:
        return bool(self.control.mode & AUTHENTICATED_TEST_MODES)
