"""The server configuration: the users' section-less file, every rule, the keys file.

Every refusal must come back as one sentence that names the file, the line, the key, the bad
value and what is allowed, because that sentence is all an operator sees from --check-config or
a failed reload.  Real files in tmp_path are used wherever file access is the point.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from twamp_common.codes import Mode
from twamp_common.errors import TwampError
from twamp_server import config as config_module
from twamp_server.config import (
    DEFAULT_PATH,
    KNOWN_KEYS,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from twamp_server.keystore import KeyStore, parse_keys, read_keys

USERS_FILE = "control_port = 862\ntest_port = 863\nmax_sessions = 100\nsession_timeout = 5\n"
SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "twamp" / "twamp-server.conf"
SECRET = "correct horse battery staple"
ALL_MODES = Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED


@pytest.fixture(autouse=True)
def no_default_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a real /etc/twamp/twamp-server.keys on the test machine out of every test."""
    monkeypatch.setattr(config_module, "DEFAULT_KEYS_PATH", tmp_path / "no-such-default.keys")


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def keys_file(tmp_path: Path, text: str = f"alice {SECRET}\n", mode: int = 0o600) -> Path:
    return write(tmp_path / "twamp-server.keys", text, mode)


def conf(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "twamp-server.conf", text, 0o644)


# ----------------------------------------------------------------------------------------------
# The file users already have, sections, defaults.


def test_users_section_less_file(tmp_path: Path) -> None:
    path = conf(tmp_path, USERS_FILE)
    config = load_config(path)
    assert config.path == path
    assert config.control_port == 862
    assert config.test_port == 863
    assert config.max_sessions == 100
    assert config.session_timeout == 5.0
    assert config.session_timeout_seconds == 300.0


def test_server_section_header_is_accepted(tmp_path: Path) -> None:
    config = load_config(conf(tmp_path, "# mine\n\n[server]\n" + USERS_FILE.replace("100", "7")))
    assert config.max_sessions == 7
    assert config.control_port == 862


def test_defaults() -> None:
    config = parse_config("")
    assert config.path is None
    assert config.control_port == 862
    assert config.test_port == 863
    assert config.max_sessions == 100
    assert config.max_sessions_per_client == 10  # a tenth of max_sessions
    assert config.session_timeout == 5.0
    assert config.control_timeout == 900.0
    assert config.max_connections == 1000
    assert config.max_connections_per_client == 16
    assert config.listen == (IPv4Address("0.0.0.0"), IPv6Address("::"))
    assert config.modes == Mode.UNAUTHENTICATED  # no keys file: the secure modes are dropped
    assert config.keys_file is None
    assert len(config.keys) == 0
    assert config.test_ports == (61000, 61099)
    assert config.light_ports == ()
    assert config.pbkdf2_count == 8192
    assert config.status_interval == 10.0
    assert config.log_level == "info"
    assert config.warnings == ("no keys: only unauthenticated mode is offered",)
    assert config.client_allowed("192.0.2.1")
    assert config.client_allowed("2001:db8::1")
    assert not config.light_allowed("127.0.0.1")


def test_every_key_set(tmp_path: Path) -> None:
    keys_file(tmp_path)
    text = """
    control_port = 8620
    test_port = 8630   # the reflector
    max_sessions = 50
    max_sessions_per_client = 5
    session_timeout = 0.5
    control_timeout = 60
    max_connections = 40
    max_connections_per_client = 4
    listen = 127.0.0.1, ::1 127.0.0.1
    modes = Encrypted mixed
    keys_file = twamp-server.keys
    allow = 10.0.0.0/8, 2001:db8::/32
    test_ports = 20000 - 20099
    light_ports = 862, 9000 862
    light_allow = 192.0.2.7
    pbkdf2_count = 1024
    status_interval = 2.5
    ; another comment style
    log_level = DEBUG
    """
    config = load_config(conf(tmp_path, text))
    assert config.control_port == 8620
    assert config.test_port == 8630
    assert config.max_sessions == 50
    assert config.max_sessions_per_client == 5
    assert config.session_timeout_seconds == 30.0
    assert config.control_timeout == 60.0
    assert config.max_connections == 40
    assert config.max_connections_per_client == 4
    assert config.listen == (IPv4Address("127.0.0.1"), IPv6Address("::1"))
    assert config.modes == Mode.ENCRYPTED | Mode.MIXED
    assert config.keys_file == tmp_path / "twamp-server.keys"
    assert config.keys.get(b"alice") == SECRET.encode()
    assert config.test_ports == (20000, 20099)
    assert config.light_ports == (862, 9000)
    assert config.pbkdf2_count == 1024
    assert config.status_interval == 2.5
    assert config.log_level == "debug"
    assert config.warnings == ()
    assert config.client_allowed("10.1.2.3")
    assert not config.client_allowed("11.1.2.3")
    assert config.light_allowed("192.0.2.7")
    assert not config.light_allowed("192.0.2.8")


def test_value_continued_on_an_indented_line() -> None:
    config = parse_config("listen = 127.0.0.1\n    ::1\nmax_sessions = 3\n")
    assert config.listen == (IPv4Address("127.0.0.1"), IPv6Address("::1"))
    assert config.max_sessions == 3


def test_per_client_limit_is_a_tenth_of_max_sessions() -> None:
    assert parse_config("max_sessions = 7").max_sessions_per_client == 1
    assert parse_config("max_sessions = 250").max_sessions_per_client == 25
    assert parse_config("test_ports = any").test_ports is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_connections = 7", 7),  # the default never exceeds max_connections
        ("max_connections = 16", 16),
        ("max_connections = 17", 16),
        ("max_connections = 5\nmax_connections_per_client = 1", 1),
        ("max_connections = 5\nmax_connections_per_client = 5", 5),
        ("max_connections_per_client = 1000", 1000),
    ],
)
def test_connections_per_client_limit_is_capped_by_max_connections(
    text: str, expected: int
) -> None:
    assert parse_config(text).max_connections_per_client == expected


def test_config_is_frozen() -> None:
    config = parse_config("")
    with pytest.raises(AttributeError):
        config.max_sessions = 5  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# Every rule, refused with file, line, key, value and what is allowed.

BAD_VALUES = [
    ("control_port", "0", "1 to 65535"),
    ("control_port", "65536", "1 to 65535"),
    ("control_port", "http", "1 to 65535"),
    ("test_port", "-1", "1 to 65535"),
    ("test_port", "86.3", "1 to 65535"),
    ("max_sessions", "lots", "1 to 100000"),
    ("max_sessions", "0", "1 to 100000"),
    ("max_sessions", "100001", "1 to 100000"),
    ("max_sessions_per_client", "0", "1 to 100000"),
    ("session_timeout", "0", "more than 0 and at most 1440 (minutes)"),
    ("session_timeout", "1441", "more than 0 and at most 1440 (minutes)"),
    ("session_timeout", "nan", "more than 0 and at most 1440 (minutes)"),
    ("session_timeout", "five", "more than 0 and at most 1440 (minutes)"),
    ("control_timeout", "-3", "more than 0 and at most 86400 (seconds)"),
    ("control_timeout", "86401", "more than 0 and at most 86400 (seconds)"),
    ("max_connections", "0", "1 to 100000"),
    ("max_connections_per_client", "0", "1 to 100000"),
    ("max_connections_per_client", "100001", "1 to 100000"),
    ("max_connections_per_client", "some", "1 to 100000"),
    ("listen", "localhost", "IP addresses (not names)"),
    ("listen", ",", "IP addresses (not names)"),
    ("listen", "10.0.0.0/8", "IP addresses (not names)"),
    ("modes", "open", "unauthenticated, authenticated, encrypted, mixed"),
    ("modes", "", "unauthenticated, authenticated, encrypted, mixed"),
    ("allow", "10.0.0.0/33", "IP networks"),
    ("allow", "example.net", "IP networks"),
    ("test_ports", "1000-2000", "any, or LO-HI with 1024 <= LO <= HI <= 65535"),
    ("test_ports", "3000-2000", "any, or LO-HI with 1024 <= LO <= HI <= 65535"),
    ("test_ports", "2000-70000", "any, or LO-HI with 1024 <= LO <= HI <= 65535"),
    ("test_ports", "some", "any, or LO-HI with 1024 <= LO <= HI <= 65535"),
    ("light_ports", "0", "UDP ports 1 to 65535"),
    ("light_ports", "70000", "UDP ports 1 to 65535"),
    ("light_ports", "twamp", "UDP ports 1 to 65535"),
    ("light_allow", "192.0.2.300", "IP networks"),
    ("stamp_ports", "0", "UDP ports 1 to 65535"),
    ("stamp_ports", "stamp", "UDP ports 1 to 65535"),
    ("stamp_allow", "2001:db8::/129", "IP networks"),
    ("stamp_mode", "reflecting", "stateless or stateful"),
    ("stamp_mode", "", "stateless or stateful"),
    ("stamp_key_id", "two words", "a KeyID of the keys file"),
    ("stamp_key_id", "k" * 81, "a KeyID of the keys file"),
    ("stamp_sessions_per_address", "0", "1 to 100000"),
    ("pbkdf2_count", "1000", "a power of two from 1024 to 16777216"),
    ("pbkdf2_count", "512", "a power of two from 1024 to 16777216"),
    ("pbkdf2_count", str(2**25), "a power of two from 1024 to 16777216"),
    ("pbkdf2_count", "many", "a power of two from 1024 to 16777216"),
    ("status_interval", "0.05", "at least 0.1 (seconds)"),
    ("status_interval", "inf", "at least 0.1 (seconds)"),
    ("log_level", "verbose", "debug, info, warning, error"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES)
def test_bad_value_is_refused_with_a_full_sentence(
    tmp_path: Path, key: str, value: str, allowed: str
) -> None:
    after = "control_port = 862" if key != "control_port" else "log_level = info"
    path = conf(tmp_path, f"# line 1\n\n{key} = {value}\n{after}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert isinstance(error, TwampError)
    assert (error.path, error.line, error.key, error.value) == (path, 3, key, value)
    assert error.allowed is not None
    assert error.allowed.startswith(allowed)
    message = str(error)
    assert message.startswith(f'{path}:3: {key} = "{value}": ')
    assert message.endswith(f"; allowed: {error.allowed}")
    assert "\n" not in message


def test_message_shape_of_the_brief() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("control_port = 862\n\nmax_sessions = lots\n", DEFAULT_PATH)
    assert str(caught.value) == (
        '/etc/twamp/twamp-server.conf:3: max_sessions = "lots": not a whole number; '
        "allowed: 1 to 100000"
    )


def test_per_client_limit_above_max_sessions() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("max_sessions = 10\nmax_sessions_per_client = 11\n", Path("s.conf"))
    assert str(caught.value) == (
        's.conf:2: max_sessions_per_client = "11": more than max_sessions; '
        "allowed: 1 to 10 (max_sessions)"
    )


@pytest.mark.parametrize(
    ("text", "line", "allowed"),
    [
        ("max_connections = 10\nmax_connections_per_client = 11\n", 2, "1 to 10"),
        ("max_connections_per_client = 1001\n", 1, "1 to 1000"),  # the default max_connections
    ],
)
def test_connections_per_client_limit_above_max_connections(
    text: str, line: int, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("c.conf"))
    value = text.splitlines()[line - 1].split("= ")[1]
    assert str(caught.value) == (
        f'c.conf:{line}: max_connections_per_client = "{value}": more than max_connections; '
        f"allowed: {allowed} (max_connections)"
    )


def test_light_port_equal_to_test_port() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("test_port = 9000\nlight_ports = 862 9000\n", Path("l.conf"))
    error = caught.value
    assert (error.line, error.key, error.value) == (2, "light_ports", "862 9000")
    assert error.allowed == "UDP ports other than test_port 9000"


def test_light_port_may_equal_control_port() -> None:
    config = parse_config("control_port = 862\nlight_ports = 862\nlight_allow = ::1\n")
    assert config.light_ports == (862,)


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("control_port = 862\nmax_session = 10\n", Path("u.conf"))
    error = caught.value
    assert (error.line, error.key, error.value) == (2, "max_session", "10")
    assert "did you mean max_sessions?" in str(error)
    assert error.allowed == ", ".join(KNOWN_KEYS)
    assert str(error).startswith('u.conf:2: max_session = "10": unknown key')


def test_unknown_key_without_a_close_match() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("frobnicate = yes\n")
    assert "did you mean" not in str(caught.value)
    assert str(caught.value).startswith('line 1: frobnicate = "yes": unknown key; allowed: ')


def test_duplicate_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("max_sessions = 1\n# again\nmax_sessions = 2\n", Path("d.conf"))
    assert (caught.value.line, caught.value.key) == (3, "max_sessions")
    assert str(caught.value) == "d.conf:3: max_sessions: set twice (first on line 1)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[global]\nmax_sessions = 1\n", 1),
        ("[DEFAULT]\nmax_sessions = 1\n", 1),
        ("[server]\nmax_sessions = 1\n[client]\n", 3),
        ("max_sessions = 1\n[server]\n", 2),
        ("[server]\n[server]\n", 2),
    ],
)
def test_wrong_or_misplaced_section(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("s.conf"))
    assert caught.value.line == line
    assert str(caught.value).startswith(f"s.conf:{line}: section [")
    assert caught.value.allowed is not None
    assert "[server]" in caught.value.allowed


def test_line_without_equals_sign() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("max_sessions = 1\ncontrol_port 862\n", Path("e.conf"))
    assert str(caught.value) == (
        'e.conf:2: "control_port 862" is not a setting; allowed: key = value'
    )


def test_missing_config_file_names_file_and_os_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.conf"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.conf"
    path.write_bytes(b"max_sessions = 1\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.path, caught.value.line) == (path, 2)


# ----------------------------------------------------------------------------------------------
# The keys file.


def test_keys_passphrase_hex_and_comments(tmp_path: Path) -> None:
    text = (
        "# KeyID  secret\n"
        "\n"
        f"alice   {SECRET}  \n"
        "  # indented comment\n"
        "router-7 hex:00FF10ab\n"
        "bob has#in it # and a comment\n"
        "zoë p\u00e4ss\n"
    )
    store = read_keys(keys_file(tmp_path, text))
    assert len(store) == 4
    assert store.get(b"alice") == SECRET.encode()
    assert store.get(b"router-7") == bytes([0x00, 0xFF, 0x10, 0xAB])
    assert store.get(b"bob") == b"has#in it"
    assert store.get("zoë".encode()) == "päss".encode()
    assert store.get(b"carol") is None
    assert b"alice" in store
    assert b"carol" not in store
    assert set(store.key_ids()) == {b"alice", b"router-7", b"bob", "zoë".encode()}


def test_keys_file_relative_to_config_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc" / "my.keys", "alice hex:0102\n", 0o640)
    config = load_config(conf(tmp_path / "etc", "keys_file = my.keys\n"))
    assert config.keys_file == tmp_path / "etc" / "my.keys"
    assert config.keys.get(b"alice") == b"\x01\x02"
    assert config.modes == ALL_MODES
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("alice hex:abc\n", 1, 'the secret of KeyID "alice" is not hex'),
        ("alice hex:zz\n", 1, 'the secret of KeyID "alice" is not hex'),
        ("alice hex:\n", 1, 'the secret of KeyID "alice" is not hex'),
        ("# c\nalice one\nbob two\nalice three\n", 4, 'KeyID "alice" is listed twice'),
        ("alice\n", 1, "a KeyID without a secret"),
        ("k" * 81 + " secret\n", 1, "the KeyID is 81 octets long"),
    ],
)
def test_bad_keys_file(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = keys_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(conf(tmp_path, f"max_sessions = 5\nkeys_file = {path}\n"))
    assert (caught.value.path, caught.value.line) == (path, line)
    assert str(caught.value).startswith(f"{path}:{line}: {reason}")


def test_keys_file_errors_never_show_a_secret(tmp_path: Path) -> None:
    for text in (
        f"alice {SECRET}\nalice {SECRET}\n",
        "alice hex:c0ffeeXX\n",
        "sw0rdfish-long-secret-pasted-alone-" * 3 + "\n",
        "sw0rdfish\n",
    ):
        with pytest.raises(ConfigError) as caught:
            parse_keys(text, Path("k.keys"))
        message = str(caught.value)
        assert SECRET not in message
        assert "c0ffee" not in message
        assert "sw0rdfish" not in message


def test_longest_key_id() -> None:
    store = parse_keys("é" * 40 + " s\n")  # 80 octets of UTF-8
    assert store.get(("é" * 40).encode()) == b"s"


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o602, 0o601, 0o777])
def test_keys_file_open_to_every_user_is_refused(tmp_path: Path, mode: int) -> None:
    path = keys_file(tmp_path, mode=mode)
    with pytest.raises(ConfigError) as caught:
        load_config(conf(tmp_path, f"keys_file = {path}\n"))
    assert caught.value.path == path
    assert str(caught.value).endswith("; chmod 640 it")
    assert "every user" in str(caught.value)
    if mode & 0o004:
        assert "is readable by every user" in str(caught.value)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o660])
def test_keys_file_private_enough(tmp_path: Path, mode: int) -> None:
    path = keys_file(tmp_path, mode=mode)
    assert len(load_config(conf(tmp_path, f"keys_file = {path}\n")).keys) == 1


def test_missing_explicit_keys_file(tmp_path: Path) -> None:
    path = conf(tmp_path, "max_sessions = 2\nkeys_file = absent.keys\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.path, error.line, error.key, error.value) == (path, 2, "keys_file", "absent.keys")
    assert str(tmp_path / "absent.keys") in str(error)


def test_missing_default_keys_file_is_no_keys() -> None:
    config = parse_config("modes = unauthenticated\n")
    assert config.keys == KeyStore()
    assert config.keys_file is None
    assert config.warnings == ()


def test_default_keys_file_is_read_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = keys_file(tmp_path, "alice hex:ff\n", 0o640)
    monkeypatch.setattr(config_module, "DEFAULT_KEYS_PATH", default)
    config = parse_config("")
    assert config.keys_file == default
    assert config.keys.get(b"alice") == b"\xff"
    assert config.modes == ALL_MODES


def test_unreadable_default_keys_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory stands in for a file that exists but cannot be read (root reads any file).
    monkeypatch.setattr(config_module, "DEFAULT_KEYS_PATH", tmp_path)
    with pytest.raises(ConfigError) as caught:
        parse_config("", Path("x.conf"))
    assert caught.value.key == "keys_file"
    assert f"cannot read {tmp_path}" in str(caught.value)


def test_empty_keys_file_value_means_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_KEYS_PATH", keys_file(tmp_path))
    config = parse_config("keys_file =\n")
    assert config.keys_file is None
    assert len(config.keys) == 0
    assert config.modes == Mode.UNAUTHENTICATED


def test_modes_downgraded_without_keys(tmp_path: Path) -> None:
    empty = keys_file(tmp_path, "# nobody yet\n")
    config = parse_config(f"modes = unauthenticated mixed\nkeys_file = {empty}\n")
    assert config.modes == Mode.UNAUTHENTICATED
    assert config.warnings == ("no keys: only unauthenticated mode is offered",)


def test_only_secure_modes_without_keys_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("max_sessions = 1\nmodes = authenticated, encrypted\n", Path("m.conf"))
    error = caught.value
    assert (error.line, error.key, error.value) == (2, "modes", "authenticated, encrypted")
    assert str(error).startswith('m.conf:2: modes = "authenticated, encrypted": ')
    assert error.allowed == "unauthenticated, or a keys_file that holds keys"


# ----------------------------------------------------------------------------------------------
# Secrets stay out of every repr.


def test_repr_never_shows_a_secret(tmp_path: Path) -> None:
    keys_file(tmp_path, f"alice {SECRET}\nbob hex:5eC12e70\n")
    config = load_config(conf(tmp_path, "keys_file = twamp-server.keys\n"))
    assert config.keys.get(b"bob") == bytes.fromhex("5ec12e70")
    assert repr(config.keys) == "KeyStore(2 keys)"
    assert repr(KeyStore({b"a": b"b"})) == "KeyStore(1 key)"
    for text in (repr(config), str(config), repr(config.keys), str(config.keys)):
        assert SECRET not in text
        assert "5ec12e70" not in text.lower()
        assert "\\x5e" not in text


def test_keystore_equality_for_reload() -> None:
    assert KeyStore({b"a": b"1"}) == KeyStore({b"a": b"1"})
    assert KeyStore({b"a": b"1"}) != KeyStore({b"a": b"2"})
    assert KeyStore() != KeyStore({b"a": b"1"})
    assert parse_keys("a 1\n") == KeyStore({b"a": b"1"})


# ----------------------------------------------------------------------------------------------
# Who may connect.


def test_client_allowed_ipv4_ipv6_and_mapped() -> None:
    config = parse_config("allow = 192.0.2.0/24, 2001:db8::/32 198.51.100.7\n")
    assert config.client_allowed("192.0.2.200")
    assert config.client_allowed(IPv4Address("198.51.100.7"))
    assert not config.client_allowed("198.51.100.8")
    assert config.client_allowed("2001:db8:1::5")
    assert config.client_allowed(IPv6Address("2001:db8::1"))
    assert not config.client_allowed("2001:db9::1")
    assert config.client_allowed("::ffff:192.0.2.9")
    assert config.client_allowed(IPv6Address("::ffff:192.0.2.9"))
    assert not config.client_allowed("::ffff:203.0.113.1")
    assert not config.client_allowed("not an address")


def test_allow_with_host_bits_is_taken_as_network() -> None:
    config = parse_config("allow = 10.1.2.3/8\n")
    assert config.client_allowed("10.200.0.1")
    assert not config.client_allowed("::1")


def test_empty_allow_refuses_everybody_with_a_warning() -> None:
    config = parse_config("allow =\nmodes = unauthenticated\n")
    assert not config.client_allowed("127.0.0.1")
    assert config.warnings == ("allow is empty: every control connection is refused",)


def test_light_allowed_ipv4_ipv6_and_mapped() -> None:
    config = parse_config("light_ports = 862\nlight_allow = 127.0.0.1/32 ::1\n")
    assert config.light_allowed("127.0.0.1")
    assert config.light_allowed("::ffff:127.0.0.1")
    assert config.light_allowed(IPv6Address("::1"))
    assert not config.light_allowed("127.0.0.2")
    assert not config.light_allowed("::2")
    assert not config.client_allowed("not an address")


def test_light_ports_without_light_allow_warns() -> None:
    config = parse_config("light_ports = 862\n")
    assert config.light_ports == (862,)
    assert not config.light_allowed("127.0.0.1")
    assert "light_ports set but light_allow is empty: TWAMP Light answers nobody" in config.warnings


def test_light_allow_without_light_ports_warns() -> None:
    config = parse_config("light_allow = 10.0.0.0/8\nmodes = unauthenticated\n")
    assert config.warnings == ("light_allow set but light_ports is empty: TWAMP Light is off",)


def test_light_port_inside_test_ports_warns() -> None:
    config = parse_config(
        "modes = unauthenticated\ntest_ports = 5000-6000\nlight_ports = 5500\nlight_allow = ::1\n"
    )
    assert len(config.warnings) == 1
    assert "light port 5500 lies in test_ports 5000-6000" in config.warnings[0]


def test_stamp_settings(tmp_path: Path) -> None:
    keys = keys_file(tmp_path, f"alice {SECRET}\nprobes hex:00ff\n")
    config = load_config(
        conf(
            tmp_path,
            f"keys_file = {keys}\ncontrol_port = 862\nstamp_ports = 862, 8620\n"
            "stamp_allow = 192.0.2.0/24 2001:db8::/32\nstamp_mode = Stateless\n"
            "stamp_key_id = probes\nstamp_sessions_per_address = 3\n",
        )
    )
    assert config.stamp_ports == (862, 8620)  # UDP 862 beside TWAMP-Control's TCP 862
    assert config.stamp_allowed("192.0.2.9") and config.stamp_allowed("::ffff:192.0.2.9")
    assert config.stamp_allowed("2001:db8::1") and not config.stamp_allowed("192.0.3.1")
    assert not config.light_allowed("192.0.2.9")
    assert (config.stamp_mode, config.stamp_key_id, config.stamp_key) == (
        "stateless",
        b"probes",
        b"\x00\xff",
    )
    assert config.stamp_sessions_per_address == 3
    assert config.warnings == ()


def test_stamp_defaults_are_off_stateful_and_unauthenticated() -> None:
    config = parse_config("")
    assert (config.stamp_ports, config.stamp_mode, config.stamp_key) == ((), "stateful", None)
    assert not config.stamp_allowed("127.0.0.1")


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        ("test_port = 9000\nstamp_ports = 862 9000\n", "test_port 9000"),
        ("light_ports = 9001\nstamp_ports = 9001\n", "light port 9001"),
    ],
)
def test_stamp_port_is_no_twamp_test_port(text: str, taken: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("s.conf"))
    assert str(caught.value) == (
        f's.conf:2: stamp_ports = "{text.splitlines()[1].split("= ")[1]}": {taken} is a'
        " TWAMP-Test port already; allowed: UDP ports other than test_port and light_ports"
    )


def test_stamp_key_id_must_name_a_key_of_the_keys_file(tmp_path: Path) -> None:
    keys = keys_file(tmp_path)
    path = conf(tmp_path, f"keys_file = {keys}\nstamp_ports = 862\nstamp_key_id = bob\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f'{path}:3: stamp_key_id = "bob": no such KeyID in the keys file; allowed: a KeyID of'
        " the keys file, or no stamp_key_id for unauthenticated STAMP"
    )
    with pytest.raises(ConfigError, match="no keys file holds keys"):
        parse_config("keys_file =\nstamp_key_id = alice\n")


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("stamp_ports = 862\n", "stamp_ports set but stamp_allow is empty: STAMP answers nobody"),
        ("stamp_allow = ::1\n", "stamp_allow set but stamp_ports is empty: STAMP is off"),
        (
            "stamp_ports = 61010\nstamp_allow = ::1\n",
            "stamp port 61010 lies in test_ports 61000-61099: test sessions asking for it are"
            " refused",
        ),
    ],
)
def test_stamp_settings_that_look_wrong_warn(text: str, warning: str) -> None:
    assert parse_config("modes = unauthenticated\n" + text).warnings == (warning,)


def test_config_built_directly_has_the_file_defaults() -> None:
    config = Config()
    assert config.modes == ALL_MODES
    assert config.client_allowed("203.0.113.5")
    assert not config.light_allowed("203.0.113.5")
    assert config._allow == (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))


# ----------------------------------------------------------------------------------------------
# The shipped file.


def test_shipped_file_loads_as_the_defaults() -> None:
    config = load_config(SHIPPED)
    assert config.path == SHIPPED
    assert config.control_port == 862
    assert config.keys_file is None
    assert config.modes == Mode.UNAUTHENTICATED


def test_shipped_file_documents_every_key_with_its_default(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    setting = re.compile(r"^# (\w+) =(.*)$", re.MULTILINE)
    documented = {name: value.strip() for name, value in setting.findall(text)}
    assert list(documented) == list(KNOWN_KEYS)
    assert documented["keys_file"] == "/etc/twamp/twamp-server.keys"
    # Uncommented, every documented default must give exactly what leaving the key out gives.
    active = setting.sub(
        lambda match: "" if match[1] == "keys_file" else f"{match[1]} ={match[2]}", text
    )
    path = conf(tmp_path, active)
    defaults = parse_config("", path)
    uncommented = load_config(path)
    assert uncommented == defaults
    assert uncommented.warnings == ("no keys: only unauthenticated mode is offered",)


def test_keys_file_with_bom_crlf_and_trailing_comments(tmp_path: Path) -> None:
    path = keys_file(tmp_path, f"\ufeffalice {SECRET}   # the lab router\r\nbob hex:0102 # raw\r\n")
    store = load_config(conf(tmp_path, f"keys_file = {path}\n")).keys
    assert store.get(b"alice") == SECRET.encode()
    assert store.get(b"bob") == b"\x01\x02"


def test_config_file_with_a_bom(tmp_path: Path) -> None:
    assert load_config(conf(tmp_path, "\ufeffmax_sessions = 7\n")).max_sessions == 7


@pytest.mark.parametrize(
    ("text", "idle", "reserved"),
    [
        ("", 250, 50),  # a quarter and a twentieth of max_connections = 1000
        ("max_connections = 20", 16, 1),  # at least one client's worth
        ("max_connections = 2", 2, 0),
        ("max_idle_connections = 7\nreserved_connections = 0", 7, 0),
    ],
)
def test_idle_budget_and_reserve_defaults(text: str, idle: int, reserved: int) -> None:
    config = parse_config(text)
    assert (config.max_idle_connections, config.reserved_connections) == (idle, reserved)


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("max_connections = 10\nmax_idle_connections = 11\n", "max_idle_connections", "1 to 10"),
        ("max_connections = 10\nreserved_connections = 10\n", "reserved_connections", "0 to 9"),
    ],
)
def test_idle_budget_and_reserve_must_fit_max_connections(
    text: str, key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("c.conf"))
    assert (caught.value.line, caught.value.key) == (2, key)
    assert str(caught.value.allowed).startswith(allowed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 40),  # four clients' worth: 4 x a tenth of max_sessions = 100
        ("max_sessions = 10\nmax_sessions_per_client = 5", 10),  # capped at max_sessions
        ("max_sessions_per_network = 10", 10),
    ],
)
def test_sessions_per_network_default(text: str, expected: int) -> None:
    assert parse_config(text).max_sessions_per_network == expected


@pytest.mark.parametrize("value", ["9", "101"])
def test_sessions_per_network_between_per_client_and_max_sessions(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"max_sessions_per_network = {value}\n", Path("c.conf"))
    assert (caught.value.line, caught.value.key) == (1, "max_sessions_per_network")
    assert caught.value.allowed == "10 (max_sessions_per_client) to 100 (max_sessions)"
