"""Keys files (twamp_common.keys): the format server and client share, text in, entries out."""

from __future__ import annotations

import pytest
from twamp_common.keys import KeyEntry, KeysFileError, decode, find_key, parse_keys


def test_passphrases_hex_comments_bom_and_crlf() -> None:
    text = (
        "\ufeff# KeyID  secret\r\n"
        "\r\n"
        "alice   two words  # a trailing comment\r\n"
        "router-7 hex:00FF10ab   # hex, commented\r\n"
        "bob p#ss\r\n"
        "  # indented comment\n"
        "zoë päss"
    )
    entries = parse_keys(text)
    assert [(entry.key_id, entry.secret, entry.line) for entry in entries] == [
        (b"alice", b"two words", 3),
        (b"router-7", bytes([0x00, 0xFF, 0x10, 0xAB]), 4),
        (b"bob", b"p#ss", 5),
        ("zoë".encode(), "päss".encode(), 7),
    ]
    assert find_key(entries, b"alice") == b"two words"
    assert find_key(entries, b"carol") is None


def test_bom_first_line_is_a_key() -> None:
    """A byte-order mark before the first KeyID is not part of it."""
    assert find_key(parse_keys("\ufeffalice s\n"), b"alice") == b"s"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("alice hex:abc\n", 1, 'the secret of KeyID "alice" is not hex'),
        ("alice hex:zz # comment\n", 1, 'the secret of KeyID "alice" is not hex'),
        ("alice # only a comment\n", 1, "a KeyID without a secret"),
        ("# c\r\nalice one\r\nbob two\r\nalice three\r\n", 4, 'KeyID "alice" is listed twice'),
        ("k" * 81 + " secret\n", 1, "the KeyID is 81 octets long"),
        ("al\x1bice secret\n", 1, "the KeyID holds control characters"),
    ],
)
def test_bad_lines_name_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(KeysFileError) as caught:
        parse_keys(text)
    assert (caught.value.line, caught.value.reason.split(" (")[0]) == (line, reason)
    assert str(caught.value).startswith(f"line {line}: {reason}")


def test_errors_and_repr_never_show_a_secret() -> None:
    for text in ("alice sw0rdfish\nalice sw0rdfish\n", "alice hex:c0ffeeXX\n", "sw0rdfish\n"):
        with pytest.raises(KeysFileError) as caught:
            parse_keys(text)
        assert "sw0rdfish" not in str(caught.value) and "c0ffee" not in str(caught.value)
    assert "sw0rdfish" not in repr(KeyEntry(b"alice", b"sw0rdfish", 1))


def test_decode_names_the_line_that_is_not_utf8() -> None:
    with pytest.raises(KeysFileError) as caught:
        decode(b"alice one\nbob \xff\n")
    assert (caught.value.line, caught.value.reason) == (2, "not UTF-8 text")
    assert decode("alice é\n".encode()) == "alice é\n"
