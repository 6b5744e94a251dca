"""The protocol's registered numbers: mode bits, command numbers, Accept codes and ports.

Values come from RFC 4656 §3.1/§3.3, RFC 5357 §3, RFC 5618, RFC 5938, RFC 6038 and the IANA
"TWAMP-Modes" and "TWAMP-Control Command Numbers" registries.
"""

from __future__ import annotations

import enum

#: TCP port of TWAMP-Control (RFC 5357 §3.1).
CONTROL_PORT = 862
#: UDP port RFC 8545 assigned to TWAMP-Test reflectors; TWAMP Light conventionally uses it too.
TEST_PORT_IANA = 862
#: UDP reflector port of the configuration users already run (``test_port = 863``).
TEST_PORT_DEFAULT = 863


class Mode(enum.IntFlag):
    """Bits of the Modes field in Server-Greeting and Set-Up-Response."""

    #: Unauthenticated control and test (RFC 4656).
    UNAUTHENTICATED = 1
    #: Encrypted control, test packets with encrypted sequence number and HMAC (RFC 4656).
    AUTHENTICATED = 2
    #: Encrypted control, test packets mostly encrypted, with HMAC (RFC 4656).
    ENCRYPTED = 4
    #: Encrypted control, unauthenticated test packets (RFC 5618, "mixed").
    MIXED = 8
    #: Start-N-Sessions / Stop-N-Sessions by SID (RFC 5938).
    INDIVIDUAL_SESSION_CONTROL = 16
    #: Reflect Octets capability (RFC 6038).
    REFLECT_OCTETS = 32
    #: Symmetrical Size sender packet format (RFC 6038).
    SYMMETRICAL_SIZE = 64
    #: IKEv2-derived keys (RFC 7717); never offered by us.
    IKEV2_DERIVED = 128
    #: DSCP and ECN monitoring (RFC 7750); never offered by us.
    DSCP_ECN = 256
    #: PTPv2 timestamps (RFC 8186); never offered by us.
    PTP_TIMESTAMPS = 512


#: The security modes: a Set-Up-Response picks exactly one of them.
SECURITY_MODES = Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED
#: Security modes whose control stream is AES-CBC encrypted and HMAC protected.
SECURE_CONTROL_MODES = Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED
#: Security modes whose test packets use the authenticated layout (48/112 octets + padding).
AUTHENTICATED_TEST_MODES = Mode.AUTHENTICATED | Mode.ENCRYPTED


def security_mode(mode: Mode) -> Mode:
    """The single security mode bit in ``mode`` (a Set-Up-Response Mode field).

    Raises ``ValueError`` unless exactly one of the four security bits is set.
    """
    chosen = Mode(mode & SECURITY_MODES)
    if chosen.value == 0 or chosen.value & (chosen.value - 1):
        raise ValueError(f"mode {int(mode):#x} must hold exactly one security mode bit")
    return chosen


class Command(enum.IntEnum):
    """TWAMP-Control command numbers (first octet of client commands and RFC 5938 acks)."""

    START_SESSIONS = 2
    STOP_SESSIONS = 3
    REQUEST_TW_SESSION = 5
    START_N_SESSIONS = 7
    START_N_ACK = 8
    STOP_N_SESSIONS = 9
    STOP_N_ACK = 10


class Accept(enum.IntEnum):
    """Accept field values (RFC 4656 §3.3); receivers map any other value to FAILURE."""

    OK = 0
    #: Failure, reason unspecified (catch-all).
    FAILURE = 1
    #: Internal error.
    INTERNAL_ERROR = 2
    #: Some aspect of the request is not supported.
    NOT_SUPPORTED = 3
    #: Cannot perform the request due to permanent resource limitations.
    PERMANENT_RESOURCE_LIMIT = 4
    #: Cannot perform the request due to temporary resource limitations.
    TEMPORARY_RESOURCE_LIMIT = 5

    @classmethod
    def from_wire(cls, value: int) -> Accept:
        """Decode an Accept octet, mapping unknown values to FAILURE as RFC 4656 §3.3 says."""
        try:
            return cls(value)
        except ValueError:
            return cls.FAILURE


def mode_name(mode: Mode) -> str:
    """The security mode of ``mode`` in words ("encrypted"), for logs and output."""
    chosen = Mode(mode & SECURITY_MODES)
    return chosen.name.lower() if chosen.name and chosen.value else f"modes {int(mode):#x}"
