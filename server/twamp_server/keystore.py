"""The server's keys file: the secrets shared with Control-Clients, read safely.

RFC 4656 §3.1: a KeyID and the passphrase PBKDF2 turns into keys.  The file must not be open to
every user, and no error or ``repr`` ever shows a secret.  The format itself is
:mod:`twamp_common.keys`, which twamp-client and twamp-monitor read too; this module adds what
only the server needs: the store the control server looks KeyIDs up in, and the mode check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from twamp_common import keys
from twamp_common.service import ConfigError


class KeyStore:
    """The shared secrets by KeyID; its ``repr`` counts them and never shows one."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Mapping[bytes, bytes] | None = None) -> None:
        self._secrets = dict(secrets or {})

    def get(self, key_id: bytes) -> bytes | None:
        """The secret of ``key_id`` (the KeyID octets, NUL padding stripped), or None."""
        return self._secrets.get(key_id)

    def key_ids(self) -> tuple[bytes, ...]:
        """The KeyIDs held, for logs (the secrets stay in here)."""
        return tuple(self._secrets)

    def __len__(self) -> int:
        return len(self._secrets)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._secrets

    def __eq__(self, other: object) -> bool:
        # A reload compares the old and new store to log whether the keys changed.
        if not isinstance(other, KeyStore):
            return NotImplemented
        return self._secrets == other._secrets

    def __hash__(self) -> int:
        return hash(frozenset(self._secrets.items()))

    def __repr__(self) -> str:
        count = len(self._secrets)
        return f"KeyStore({count} key{'' if count == 1 else 's'})"


def decode(data: bytes, path: Path | None) -> str:
    """The text of a keys or configuration file, decoded as :mod:`twamp_common.keys` says (the
    configuration file follows the same rules); ConfigError names the file and the line."""
    try:
        return keys.decode(data)
    except keys.KeysFileError as error:
        raise ConfigError(error.reason, path=path, line=error.line) from None


def parse_keys(text: str, path: Path | None = None) -> KeyStore:
    """The secrets of a keys file's text (format: :mod:`twamp_common.keys`), as a KeyStore;
    errors name the file and the line, never a secret."""
    try:
        entries = keys.parse_keys(text)
    except keys.KeysFileError as error:
        raise ConfigError(error.reason, path=path, line=error.line, allowed=error.allowed) from None
    return KeyStore({entry.key_id: entry.secret for entry in entries})


def read_keys(path: Path) -> KeyStore:
    """The keys file at ``path``; OSError if it cannot be read, ConfigError if it is unsafe.

    The mode is checked on the open file, so the file checked is the file read.
    """
    with path.open("rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if mode & 0o007:
            what = "readable" if mode & 0o004 else "accessible"
            raise ConfigError(
                f"is {what} by every user (mode {mode & 0o777:04o}); chmod 640 it", path=path
            )
        data = file.read()
    return parse_keys(decode(data, path), path)
