"""Crypto checked against an independent implementation: the openssl command line.

Each primitive the RFC names (PBKDF2-HMAC-SHA1, AES-128-CBC with zero IV, AES-128-ECB,
HMAC-SHA1 truncated) is computed here by ``openssl`` from the same inputs, so a mistake in how
we drive ``cryptography`` (wrong mode, wrong IV, chaining lost between messages, wrong octets
covered) shows as a mismatch rather than agreeing with itself.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from twamp_common import crypto
from twamp_common.codes import Mode
from twamp_common.errors import AuthenticationError, RemoteProtocolError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

AES_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
HMAC_KEY = bytes(range(0x20, 0x40))
KEYS = crypto.SessionKeys(AES_KEY, HMAC_KEY)
SID = b"this is the SID!"


def openssl(*args: str, data: bytes = b"") -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def aes_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    return openssl("enc", "-aes-128-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex(), data=data)


def aes_ecb(key: bytes, data: bytes) -> bytes:
    return openssl("enc", "-aes-128-ecb", "-nopad", "-K", key.hex(), data=data)


def hmac_sha1_16(key: bytes, data: bytes) -> bytes:
    out = openssl("dgst", "-sha1", "-mac", "HMAC", "-macopt", f"hexkey:{key.hex()}", data=data)
    return bytes.fromhex(out.decode().split("= ")[-1].strip())[:16]


def test_derive_key_is_pbkdf2_hmac_sha1_16_octets() -> None:
    salt = b"some funny saltT"
    expected = openssl(
        "kdf",
        "-keylen",
        "16",
        "-kdfopt",
        "digest:SHA1",
        "-kdfopt",
        "pass:secret phrase",
        "-kdfopt",
        f"hexsalt:{salt.hex()}",
        "-kdfopt",
        "iter:1024",
        "PBKDF2",
    )
    assert (
        crypto.derive_key(b"secret phrase", salt, 1024).hex()
        == expected.decode().replace(":", "").strip().lower()
    )


def test_token_is_cbc_zero_iv_over_challenge_and_keys() -> None:
    key = bytes(range(16))
    challenge = b"just a challenge"
    token = crypto.encrypt_token(key, challenge, KEYS)
    assert token == aes_cbc(key, bytes(16), challenge + AES_KEY + HMAC_KEY)
    assert crypto.decrypt_token(key, token) == (challenge, KEYS)


def test_decrypt_token_with_wrong_key_gives_wrong_challenge() -> None:
    token = crypto.encrypt_token(bytes(16), b"just a challenge", KEYS)
    challenge, _keys = crypto.decrypt_token(bytes(range(16)), token)
    assert challenge != b"just a challenge"


def test_decrypt_token_of_wrong_length_names_the_field() -> None:
    with pytest.raises(RemoteProtocolError, match="Token"):
        crypto.decrypt_token(bytes(16), bytes(63))


def test_cbc_stream_carries_the_chain_across_messages() -> None:
    iv = b"this is the IV!!"
    messages = [bytes([n]) * 16 * (n + 1) for n in range(3)]
    stream = crypto.CBCStream(AES_KEY, iv)
    pieces = [stream.encrypt(message) for message in messages]
    assert b"".join(pieces) == aes_cbc(AES_KEY, iv, b"".join(messages))
    reader = crypto.CBCStream(AES_KEY, iv)
    assert [reader.decrypt(piece) for piece in pieces] == messages


def test_cbc_stream_refuses_partial_blocks() -> None:
    with pytest.raises(ValueError, match="AES blocks"):
        crypto.CBCStream(AES_KEY, bytes(16)).encrypt(bytes(15))


def test_running_hmac_restarts_at_each_digest() -> None:
    running = crypto.RunningHMAC(HMAC_KEY)
    running.update(b"first ")
    running.update(b"message")
    assert running.digest() == hmac_sha1_16(HMAC_KEY, b"first message")
    running.update(b"second")
    assert running.verify(hmac_sha1_16(HMAC_KEY, b"second"))
    running.update(b"third")
    assert not running.verify(bytes(16))


def test_test_session_keys_are_control_keys_encrypted_under_the_sid() -> None:
    derived = crypto.keys_for_test_session(SID, KEYS)
    assert derived.aes_key == aes_ecb(SID, AES_KEY)
    assert derived.hmac_key == aes_cbc(SID, bytes(16), HMAC_KEY)


def test_keys_never_show_in_repr() -> None:
    shown = repr(KEYS) + repr(crypto.TestPacketProtection(Mode.ENCRYPTED, KEYS))
    assert AES_KEY.hex() not in shown and repr(AES_KEY) not in shown
    assert "SessionKeys()" in shown


def _packet(size: int) -> bytes:
    return bytes((7 * n + 3) % 256 for n in range(size))


@pytest.mark.parametrize(
    ("mode", "seal", "size", "protected", "hmac_at"),
    [
        (Mode.AUTHENTICATED, "seal_sender", 48 + 20, 16, 32),
        (Mode.ENCRYPTED, "seal_sender", 48 + 20, 32, 32),
        (Mode.AUTHENTICATED, "seal_reflector", 112 + 5, 16, 96),
        (Mode.ENCRYPTED, "seal_reflector", 112 + 5, 96, 96),
    ],
)
def test_test_packet_protection_matches_the_rfc_layout(
    mode: Mode, seal: str, size: int, protected: int, hmac_at: int
) -> None:
    """Authenticated: first block ECB, HMAC over it; encrypted: CBC with zero IV over 32 (sender)
    or 96 (reflector) octets, HMAC over the same plaintext.  The rest travels as it was."""
    plain = _packet(size)
    sealed = getattr(crypto.TestPacketProtection(mode, KEYS), seal)(plain)
    assert len(sealed) == size
    assert sealed[:protected] == aes_cbc(AES_KEY, bytes(16), plain[:protected])
    assert sealed[protected:hmac_at] == plain[protected:hmac_at]
    assert sealed[hmac_at : hmac_at + 16] == hmac_sha1_16(HMAC_KEY, plain[:protected])
    assert sealed[hmac_at + 16 :] == plain[hmac_at + 16 :]


@pytest.mark.parametrize("mode", [Mode.AUTHENTICATED, Mode.ENCRYPTED])
def test_open_undoes_seal_and_rejects_tampering(mode: Mode) -> None:
    protection = crypto.TestPacketProtection(mode, KEYS)
    plain = bytearray(_packet(130))
    plain[96:112] = bytes(16)
    sealed = protection.seal_reflector(bytes(plain))
    opened = protection.open_reflector(sealed)
    assert opened[:96] == plain[:96] and opened[112:] == plain[112:]
    tampered = bytearray(sealed)
    tampered[3] ^= 1
    with pytest.raises(AuthenticationError, match="HMAC"):
        protection.open_reflector(bytes(tampered))
    other = crypto.TestPacketProtection(mode, crypto.SessionKeys(bytes(16), HMAC_KEY))
    with pytest.raises(AuthenticationError):
        other.open_reflector(sealed)


def test_open_of_a_short_packet_is_a_protocol_error() -> None:
    protection = crypto.TestPacketProtection(Mode.ENCRYPTED, KEYS)
    with pytest.raises(RemoteProtocolError, match="shorter than the 48"):
        protection.open_sender(bytes(47))
    with pytest.raises(RemoteProtocolError, match="shorter than the 112"):
        protection.open_reflector(bytes(111))


def test_protection_exists_only_for_authenticated_and_encrypted_modes() -> None:
    with pytest.raises(ValueError, match="authenticated or encrypted"):
        crypto.TestPacketProtection(Mode.MIXED, KEYS)
