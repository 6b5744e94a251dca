"""Keys, the Token, the control-stream cipher and HMAC, and test-packet protection.

Everything here follows RFC 4656 §3.1–3.2 and §4.1.2 as RFC 5357 §3.2 and §4.1.2 apply them to
TWAMP; the interoperable reading of each ambiguous point is the one perfSONAR's owamp ships:

* the shared-secret key is PBKDF2-HMAC-SHA1(passphrase, Salt, Count) cut to 16 octets;
* the Token is AES-128-CBC with a zero IV over Challenge ‖ AES session key ‖ HMAC session key;
* each control direction is one AES-CBC stream whose chaining value runs across messages;
* HMACs are HMAC-SHA1 truncated to 16 octets, computed over plaintext, and each one covers what
  was sent in its direction since the previous HMAC;
* test-session keys are the control keys encrypted under the SID (ECB for the AES key, CBC with
  a zero IV for the HMAC key);
* test packets: authenticated mode encrypts (ECB) and authenticates the first 16 octets only;
  encrypted mode encrypts (CBC, zero IV) and authenticates 32 octets of a sender packet and 96
  of a reflector packet.  Padding is never encrypted nor covered.

Key material lives in bytes objects that no ``repr`` shows, so a key cannot reach a log line by
way of an object that holds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from .codes import Mode
from .control_messages import BLOCK, HMAC_SIZE
from .errors import AuthenticationError, RemoteProtocolError

#: The Token: Challenge ‖ AES session key ‖ HMAC session key, encrypted.
TOKEN_SIZE = 64
_ZERO_IV = bytes(BLOCK)


def derive_key(passphrase: bytes, salt: bytes, count: int) -> bytes:
    """The 16-octet key that encrypts the Token, from the shared secret (RFC 4656 §3.1)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase, salt, count, BLOCK)


@dataclasses.dataclass(frozen=True, slots=True)
class SessionKeys:
    """An AES key (16 octets) and an HMAC key (32 octets): of a control connection, or of a
    test session derived from them."""

    aes_key: bytes = dataclasses.field(repr=False)
    hmac_key: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if len(self.aes_key) != BLOCK or len(self.hmac_key) != 2 * BLOCK:
            raise ValueError("session keys are 16 octets (AES) and 32 octets (HMAC)")

    @classmethod
    def generate(cls) -> SessionKeys:
        """Fresh random keys, as the Control-Client makes them for each connection."""
        return cls(os.urandom(BLOCK), os.urandom(2 * BLOCK))


def _cbc(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def _ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - the RFC's choice, one block


def encrypt_token(key: bytes, challenge: bytes, keys: SessionKeys) -> bytes:
    """The Set-Up-Response Token: the server's Challenge and our session keys, under ``key``."""
    if len(challenge) != BLOCK:
        raise ValueError("the Challenge is 16 octets")
    encryptor = _cbc(key, _ZERO_IV).encryptor()
    return encryptor.update(challenge + keys.aes_key + keys.hmac_key) + encryptor.finalize()


def decrypt_token(key: bytes, token: bytes) -> tuple[bytes, SessionKeys]:
    """``(challenge, session keys)`` from a Token.  A wrong key yields a wrong challenge."""
    if len(token) != TOKEN_SIZE:
        raise RemoteProtocolError(
            f"the Token is {TOKEN_SIZE} octets, not {len(token)}",
            message="Set-Up-Response",
            field="Token",
            offset=84,
        )
    decryptor = _cbc(key, _ZERO_IV).decryptor()
    plain = decryptor.update(token) + decryptor.finalize()
    return plain[:16], SessionKeys(plain[16:32], plain[32:64])


class CBCStream:
    """One direction of the control stream: AES-CBC whose chaining runs across messages.

    The cipher context itself carries the last ciphertext block from one call to the next,
    which is exactly the "IV chain" RFC 4656 §3.4 asks for.  A stream is used either to encrypt
    or to decrypt, never both.
    """

    __slots__ = ("_cipher", "_decryptor", "_encryptor")

    def __init__(self, aes_key: bytes, iv: bytes) -> None:
        self._cipher = _cbc(aes_key, iv)
        self._encryptor: CipherContext | None = None
        self._decryptor: CipherContext | None = None

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt whole blocks, continuing the chain."""
        _check_blocks(data)
        if self._encryptor is None:
            self._encryptor = self._cipher.encryptor()
        return self._encryptor.update(data)

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt whole blocks, continuing the chain."""
        _check_blocks(data)
        if self._decryptor is None:
            self._decryptor = self._cipher.decryptor()
        return self._decryptor.update(data)

    def __repr__(self) -> str:
        return "CBCStream()"


def _check_blocks(data: bytes) -> None:
    if len(data) % BLOCK:
        raise ValueError(f"{len(data)} octets is not a whole number of AES blocks")


class RunningHMAC:
    """The HMAC of one control direction: fed as messages pass, cut at each HMAC field.

    Each digest covers everything fed since the previous digest (RFC 4656 §3.2), so taking a
    digest restarts the computation.
    """

    __slots__ = ("_base", "_current")

    def __init__(self, hmac_key: bytes) -> None:
        self._base = hmac.new(hmac_key, digestmod=hashlib.sha1)
        self._current = self._base.copy()

    def update(self, data: bytes) -> None:
        self._current.update(data)

    def digest(self) -> bytes:
        """The 16-octet HMAC of what was fed since the last digest; starts a new one."""
        mac = self._current.digest()[:HMAC_SIZE]
        self._current = self._base.copy()
        return mac

    def verify(self, received: bytes) -> bool:
        """Whether ``received`` is the HMAC of what was fed (constant time); starts anew."""
        return hmac.compare_digest(self.digest(), received)

    def __repr__(self) -> str:
        return "RunningHMAC()"


def stamp_hmac(key: bytes, data: bytes) -> bytes:
    """STAMP's HMAC: HMAC-SHA-256 truncated to 16 octets (RFC 8762 §4.4, RFC 8972 §4.8)."""
    return hmac.new(key, data, hashlib.sha256).digest()[:HMAC_SIZE]


def keys_for_test_session(sid: bytes, keys: SessionKeys) -> SessionKeys:
    """A test session's keys: the control session keys encrypted with the SID as the AES key.

    RFC 4656 §4.1.2: the AES key is encrypted in ECB mode, the HMAC key in CBC mode with a
    zero IV; the SID is 16 octets, an AES-128 key.
    """
    if len(sid) != BLOCK:
        raise ValueError("a SID is 16 octets")
    ecb = _ecb(sid).encryptor()
    cbc = _cbc(sid, _ZERO_IV).encryptor()
    return SessionKeys(ecb.update(keys.aes_key), cbc.update(keys.hmac_key) + cbc.finalize())


@dataclasses.dataclass(frozen=True, slots=True)
class _Layout:
    """Where the protected part and the HMAC sit in one kind of packet."""

    name: str
    #: Octets encrypted and covered by the HMAC in the encrypted mode (authenticated mode: 16).
    encrypted_size: int
    hmac_offset: int

    @property
    def minimum(self) -> int:
        return self.hmac_offset + HMAC_SIZE


_SENDER = _Layout("TWAMP-Test sender packet", 32, 32)
_REFLECTOR = _Layout("TWAMP-Test reflector packet", 96, 96)


class TestPacketProtection:
    """Sealing and opening TWAMP-Test packets of one session (authenticated or encrypted mode).

    ``seal_*`` takes a whole plaintext packet (HMAC field included, its content ignored) and
    returns the bytes to send; ``open_*`` takes received bytes and returns the plaintext packet
    after checking its HMAC.  The cipher contexts are made once: ECB has no state between blocks,
    and CBC with a zero IV per packet is run as ECB with the chaining done here, so a packet
    costs no key schedule.
    """

    __test__ = False  # not a pytest test class

    __slots__ = ("_decrypt", "_encrypt", "_hmac", "_region")

    def __init__(self, mode: Mode, keys: SessionKeys) -> None:
        if mode not in (Mode.AUTHENTICATED, Mode.ENCRYPTED):
            raise ValueError("test packets are protected in authenticated or encrypted mode")
        cipher = _ecb(keys.aes_key)
        self._encrypt = cipher.encryptor().update
        self._decrypt = cipher.decryptor().update
        self._hmac = hmac.new(keys.hmac_key, digestmod=hashlib.sha1)
        #: None: the layout's encrypted size (encrypted mode); else 16 (authenticated mode).
        self._region: int | None = BLOCK if mode == Mode.AUTHENTICATED else None

    def __repr__(self) -> str:
        mode = "authenticated" if self._region else "encrypted"
        return f"TestPacketProtection({mode})"

    def _size(self, layout: _Layout) -> int:
        return self._region or layout.encrypted_size

    def _mac(self, data: bytes) -> bytes:
        mac = self._hmac.copy()
        mac.update(data)
        return mac.digest()[:HMAC_SIZE]

    def _seal(self, layout: _Layout, packet: bytes) -> bytes:
        if len(packet) < layout.minimum:
            raise ValueError(f"a {layout.name} is at least {layout.minimum} octets")
        size = self._size(layout)
        plain = packet[:size]
        cipher = bytearray()
        previous = _ZERO_IV
        for start in range(0, size, BLOCK):
            block = _xor(plain[start : start + BLOCK], previous)
            previous = self._encrypt(block)
            cipher += previous
        return b"".join(
            (
                cipher,
                packet[size : layout.hmac_offset],
                self._mac(plain),
                packet[layout.minimum :],
            )
        )

    def _open(self, layout: _Layout, data: bytes) -> bytes:
        if len(data) < layout.minimum:
            raise RemoteProtocolError(
                f"{len(data)} octets, shorter than the {layout.minimum} of this mode",
                message=layout.name,
            )
        size = self._size(layout)
        cipher = data[:size]
        decrypted = self._decrypt(cipher)
        plain = _xor(decrypted, _ZERO_IV + cipher[:-BLOCK])
        received = data[layout.hmac_offset : layout.minimum]
        if not hmac.compare_digest(self._mac(plain), received):
            raise AuthenticationError(
                "HMAC does not match", message=layout.name, field="HMAC", offset=layout.hmac_offset
            )
        return plain + data[size:]

    def seal_sender(self, packet: bytes) -> bytes:
        """Protect a Session-Sender packet (at least 48 octets)."""
        return self._seal(_SENDER, packet)

    def open_sender(self, data: bytes) -> bytes:
        """Check and decrypt a Session-Sender packet; AuthenticationError if its HMAC fails."""
        return self._open(_SENDER, data)

    def seal_reflector(self, packet: bytes) -> bytes:
        """Protect a Session-Reflector packet (at least 112 octets)."""
        return self._seal(_REFLECTOR, packet)

    def open_reflector(self, data: bytes) -> bytes:
        """Check and decrypt a Session-Reflector packet; AuthenticationError if its HMAC fails."""
        return self._open(_REFLECTOR, data)


def _xor(a: bytes, b: bytes) -> bytes:
    """Octet-wise XOR of two equally long byte strings."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
