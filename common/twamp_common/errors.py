"""The one exception hierarchy of the TWAMP library.

Every error that the wire codecs, the crypto helpers and the control state machines raise is a
:class:`TwampError`.  A :class:`ProtocolError` names the message, the field and the octet offset
where the problem sits, so that a log line or a CLI error can say exactly what a peer got wrong
instead of "bad packet".
"""

from __future__ import annotations


class TwampError(Exception):
    """Base class of every error raised by ``twamp_common``."""


class ProtocolError(TwampError):
    """Bytes or a message that break RFC 4656/5357 rules.

    ``message`` names the TWAMP message (``"Request-TW-Session"``), ``field`` the field within it
    and ``offset`` the octet offset of that field inside the message, when known.
    """

    def __init__(
        self,
        reason: str,
        *,
        message: str | None = None,
        field: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.message = message
        self.field = field
        self.offset = offset
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.message is not None:
            where.append(self.message)
        if self.field is not None:
            where.append(f"field {self.field}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, out of order or not allowed."""


class LocalProtocolError(ProtocolError):
    """Our own side tried to send something invalid or out of order (a programming error)."""


class AuthenticationError(RemoteProtocolError):
    """A Token, an HMAC or a KeyID failed: the peer does not hold the shared secret."""
