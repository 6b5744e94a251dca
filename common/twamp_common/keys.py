"""Keys files: the shared secrets of TWAMP's authenticated and encrypted modes, as text.

RFC 4656 §3.1 names a Control-Client's identity by a KeyID (up to 80 octets) and derives the
keys from a shared secret.  Server and client keep them in the same file format, one
``KEYID SECRET`` per line:

- SECRET is a UTF-8 passphrase (the rest of the line, stripped) or ``hex:`` followed by an even
  number of hex digits for raw octets;
- ``#`` at the start of a line, or after white space, begins a comment that runs to the end of
  the line, so a passphrase cannot hold `` #`` (write it as ``hex:`` then);
- a UTF-8 byte-order mark, CRLF line ends and blank lines are allowed.

Sans-I/O: text (or octets) in, :class:`KeyEntry` values out; opening the file and checking its
permissions is the caller's business.  Errors carry the line number and a reason and never
show a secret.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from .errors import TwampError

#: Longest KeyID: the KeyID field of Set-Up-Response is 80 octets (RFC 4656 §3.1).
KEY_ID_MAX = 80
_BOM = "\ufeff"
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
#: A comment: "#" opening the line or following white space.
_COMMENT = re.compile(r"(?:^|\s)#.*$")


class KeysFileError(TwampError):
    """A keys file line that cannot be used: ``line`` (1-based), ``reason`` and what would be
    ``allowed``.  Neither names a secret."""

    def __init__(self, line: int, reason: str, allowed: str | None = None) -> None:
        self.line = line
        self.reason = reason
        self.allowed = allowed
        super().__init__(f"line {line}: {reason}" + (f"; allowed: {allowed}" if allowed else ""))


@dataclasses.dataclass(frozen=True, slots=True)
class KeyEntry:
    """One KeyID and its shared secret; the ``repr`` hides the secret."""

    key_id: bytes
    secret: bytes = dataclasses.field(repr=False)
    #: Where it was written, for messages.
    line: int = 0


def decode(data: bytes) -> str:
    """The text of a keys file's octets; KeysFileError names the first line that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise KeysFileError(data.count(b"\n", 0, error.start) + 1, "not UTF-8 text") from None


def parse_keys(text: str) -> list[KeyEntry]:
    """Every entry of a keys file's text, in file order; KeysFileError for the first bad line.

    A KeyID listed twice is an error: which of the two secrets counts would otherwise depend
    on the reader.
    """
    entries: list[KeyEntry] = []
    first_line: dict[bytes, int] = {}
    for number, raw in enumerate(text.removeprefix(_BOM).splitlines(), start=1):
        content = _COMMENT.sub("", raw).strip()
        if not content:
            continue
        entry = _entry(content, number)
        if entry.key_id in first_line:
            shown, first = entry.key_id.decode("utf-8"), first_line[entry.key_id]
            raise KeysFileError(number, f'KeyID "{shown}" is listed twice (first on line {first})')
        first_line[entry.key_id] = number
        entries.append(entry)
    return entries


def find_key(entries: Iterable[KeyEntry], key_id: bytes) -> bytes | None:
    """The secret of ``key_id`` (the KeyID octets without NUL padding), or None."""
    return next((entry.secret for entry in entries if entry.key_id == key_id), None)


def _entry(content: str, number: int) -> KeyEntry:
    parts = content.split(None, 1)
    key_text, secret_text = parts[0], (parts[1].strip() if len(parts) > 1 else "")
    key_id = key_text.encode("utf-8")
    if len(key_id) > KEY_ID_MAX:
        # The KeyID is not echoed: a line holding only a secret would print it.
        raise KeysFileError(
            number, f"the KeyID is {len(key_id)} octets long", f"KeyIDs of 1 to {KEY_ID_MAX} octets"
        )
    if not key_text.isprintable():
        raise KeysFileError(number, "the KeyID holds control characters", "printable KeyIDs")
    if not secret_text:
        raise KeysFileError(number, "a KeyID without a secret", "KEYID SECRET")
    if not secret_text.startswith("hex:"):
        return KeyEntry(key_id, secret_text.encode("utf-8"), number)
    digits = secret_text[4:]
    if not _HEX.fullmatch(digits):
        raise KeysFileError(
            number,
            f'the secret of KeyID "{key_text}" is not hex',
            "hex: followed by an even number of hex digits",
        )
    return KeyEntry(key_id, bytes.fromhex(digits), number)


__all__ = ["KEY_ID_MAX", "KeyEntry", "KeysFileError", "decode", "find_key", "parse_keys"]
