"""The shared secret of ``-u KEYID`` from a ``--key-file``, in the formats people already have.

* ``keys``: twamp-server's keys file (``KEYID passphrase`` or ``KEYID hex:…`` per line, ``#``
  comments): the line of the KeyID is used, so one file serves both ends;
* ``passphrase``: the first line is the passphrase itself (RFC 5357 §3.1: no newline is part of
  it);
* ``pfs``: perfSONAR's pass-phrase store (twampd's ``twamp-server.pfs``, written by
  ``pfstore``): ``KEYID`` and the passphrase in hex on one line.

``auto`` (the default) reads a file whose lines start with the KeyID as a keys file and any
other file as a bare passphrase.  It never reads bare hex as octets: a keys-file line
``alice deadbeef`` means the passphrase "deadbeef" to twamp-server too, so a pfs file must be
named as one.  Octets in either twamp format are written ``hex:…``.
"""

from __future__ import annotations

import re
from pathlib import Path

from twamp_common.keys import KeysFileError, decode, find_key, parse_keys

FORMATS = ("auto", "keys", "passphrase", "pfs")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


class KeyFileError(Exception):
    """A key file that gives no secret for the KeyID: one sentence, never the secret."""


def read_secret_file(path: Path, key_id: str, key_format: str = "auto") -> bytes:
    """The secret of ``key_id`` in ``path``, read as ``key_format`` says."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"cannot read --key-file {path}: {error.strerror}") from None
    try:
        text = decode(data).removeprefix("\ufeff")
    except KeysFileError as error:
        raise KeyFileError(f"--key-file {path}: {error}") from None
    if key_format == "auto":
        key_format = "keys" if _names_key_id(text, key_id) else "passphrase"
    if key_format == "passphrase":
        lines = text.splitlines()
        secret = lines[0].encode("utf-8") if lines else b""
        if not secret:
            raise KeyFileError(f"--key-file {path} is empty (its first line is the passphrase)")
        return secret
    if key_format == "pfs":
        return _pfs_secret(path, text, key_id)
    try:
        found = find_key(parse_keys(text), key_id.encode("utf-8"))
    except KeysFileError as error:
        raise KeyFileError(f"--key-file {path}: {error}") from None
    if found is None:
        raise KeyFileError(f"--key-file {path} has no line for KeyID {key_id!r}")
    return found


def _names_key_id(text: str, key_id: str) -> bool:
    """Whether some line of ``text`` starts with ``key_id`` followed by white space."""
    return any(
        line.split(None, 1)[0] == key_id and len(line.split(None, 1)) == 2
        for line in text.splitlines()
        if line.strip()
    )


def _pfs_secret(path: Path, text: str, key_id: str) -> bytes:
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#") or words[0] != key_id:
            continue
        if len(words) != 2 or not _HEX.fullmatch(words[1]):
            raise KeyFileError(
                f"--key-file {path} line {number}: a pfs line is KEYID and the passphrase in hex"
            )
        return bytes.fromhex(words[1])
    raise KeyFileError(f"--key-file {path} has no pfs line for KeyID {key_id!r}")
