"""What a measurement is asked to do and what it found: plain data, no I/O.

A :class:`Target` names the peer, a :class:`Test` says how to measure it (the same knobs as the
command line), and a :class:`Measurement` is the result every reporter reads: the figures of
``--json``, the raw timestamps of ``--raw`` and, when the run failed, the error.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import ClassVar

from twamp_common import stamp_sender
from twamp_common.codes import AUTHENTICATED_TEST_MODES, CONTROL_PORT, TEST_PORT_IANA, Mode
from twamp_common.stamp_sender import StampSummary
from twamp_common.stats import Reply, Summary, summarize
from twamp_common.test_packets import SENDER_HEADER_SIZE, SYMMETRIC_SENDER_PADDING
from twamp_common.test_session import Lost, Outcome
from twamp_common.traffic import TrafficModel

#: Seconds for connection, greeting and set-up together, unless a Test says otherwise.
CONNECT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A TWAMP server (its TWAMP-Control port), or with ``light`` a TWAMP Light reflector, or
    with ``stamp`` a STAMP Session-Reflector (RFC 8762)."""

    host: str
    port: int | None = None
    light: bool = False
    stamp: bool = False

    def __post_init__(self) -> None:
        if self.light and self.stamp:
            raise ValueError("a target is TWAMP Light or STAMP, not both")

    @property
    def connectionless(self) -> bool:
        """Test packets go straight to the reflector's UDP port: no control session."""
        return self.light or self.stamp

    @property
    def effective_port(self) -> int:
        """The port given, or the registered one (862 for TWAMP-Control, Light and STAMP)."""
        if self.port is not None:
            return self.port
        return TEST_PORT_IANA if self.connectionless else CONTROL_PORT


@dataclasses.dataclass(frozen=True, slots=True)
class Test:
    """How to measure: the command line's test, connection and security options."""

    #: Not a test case, for pytest's collector.
    __test__: ClassVar[bool] = False

    #: Packets to send; 0 sends until the engine is told to stop.
    count: int = 10
    interval_ms: float = 1000.0
    #: "periodic" or "poisson" (exponential gaps of mean ``interval_ms``).
    schedule: str = "periodic"
    #: Sender padding; None: from ``size``, else what makes both directions the same size.
    padding: int | None = None
    #: UDP payload size of each sender packet (instead of ``padding``).
    size: int | None = None
    zero_padding: bool = False
    dscp: int = 0
    ttl: int = 255
    dont_fragment: bool = False
    #: Seconds to wait for a reply before its packet is lost.
    wait: float = 1.0
    #: None: unauthenticated, or with ``key_id`` the strictest mode the server offers.
    mode: Mode | None = None
    key_id: str | None = None
    secret: bytes | None = dataclasses.field(default=None, repr=False)
    #: UDP port to ask the server to reflect on (0: the server's choice).
    reflector_port: int = 0
    #: Local (address, UDP port) to send from.
    source: tuple[str, int] | None = None
    #: 4 or 6 to force the address family.
    family: int | None = None
    #: Largest PBKDF2 Count accepted from a server.
    max_count: int = 32768
    #: Seconds for connection, greeting and set-up together.
    connect_timeout: float = CONNECT_TIMEOUT
    #: A traffic model (g711, g729, cbr, imix) instead of interval and size.
    traffic: TrafficModel | None = None
    #: STAMP: the TLVs to ask for (names of twamp_common.stamp_sender.TLV_CHOICES).
    stamp_tlvs: tuple[str, ...] = ()
    #: STAMP: the SSID of every session; None: a random one per session.
    ssid: int | None = None

    def sender_padding(self, mode: Mode) -> int:
        """Sender padding: as given, from ``size``, or what makes both directions the same size.

        ValueError when ``size`` is below the sender header of ``mode``.
        """
        authenticated = bool(mode & AUTHENTICATED_TEST_MODES)
        if self.padding is not None:
            return self.padding
        if self.size is not None:
            header = SENDER_HEADER_SIZE[authenticated]
            if self.size < header:
                raise ValueError(f"--size {self.size} is below the {header}-octet sender header")
            return self.size - header
        return SYMMETRIC_SENDER_PADDING[authenticated]

    def stamp_padding(self, header: int) -> int:
        """STAMP padding beyond a ``header``-octet packet (base, TLVs, HMAC TLV): as given, from
        ``size``, else none (STAMP is symmetric already).  ValueError when ``size`` is below
        the header."""
        if self.padding is not None:
            return self.padding
        if self.size is not None:
            if self.size < header:
                raise ValueError(f"--size {self.size} is below the {header}-octet STAMP packet")
            return self.size - header
        return 0


def stamp_mode(mode: Mode | None, *, keyed: bool, tlvs: tuple[str, ...]) -> Mode | None:
    """The mode of a STAMP target (RFC 8762 §4 has the unauthenticated and authenticated ones):
    a key alone means authenticated; ValueError for a mode or key the TLVs cannot use.

    The command line and the monitor's configuration both ask this, in their own words around
    the one sentence.
    """
    if mode in (Mode.ENCRYPTED, Mode.MIXED):
        raise ValueError("STAMP has no such mode: unauthenticated or authenticated (RFC 8762 §4)")
    if "hmac" in tlvs and not keyed:
        raise ValueError("the HMAC TLV needs the secret of a KeyID")
    if keyed and mode == Mode.UNAUTHENTICATED and "hmac" not in tlvs:
        raise ValueError(
            "unauthenticated STAMP uses a KeyID's secret only for the HMAC TLV: ask for it,"
            " or use the authenticated mode"
        )
    return Mode.AUTHENTICATED if keyed and mode is None else mode


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """What is being measured, known once the session is set up."""

    host: str
    address: str
    port: int
    mode: str
    count: int
    interval_ms: float
    #: UDP payload octets of the test packets, one cycle of them: packet k has the size
    #: ``packet_sizes[k % len(packet_sizes)]`` (a single size but for a model of several).
    packet_sizes: tuple[int, ...]
    started: datetime.datetime
    #: The reflector's UDP test port.
    test_port: int
    #: Our own UDP port, where replies come back to.
    sender_port: int
    #: The address our test packets leave from.
    local_address: str
    #: The STAMP session's SSID; None for TWAMP.
    ssid: int | None = None

    def size_of(self, seq: int) -> int:
        """UDP payload octets of packet ``seq``."""
        return self.packet_sizes[seq % len(self.packet_sizes)]

    def octets(self, count: int) -> int:
        """UDP payload octets of the first ``count`` packets (a long run in whole cycles)."""
        cycles, rest = divmod(count, len(self.packet_sizes))
        return cycles * sum(self.packet_sizes) + sum(self.packet_sizes[:rest])

    @property
    def mean_packet_size(self) -> float:
        """Octets per packet over a cycle: what one number can say of several sizes."""
        return sum(self.packet_sizes) / len(self.packet_sizes)


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """One finished measurement of one target: figures, or an error, or both (a run cut
    short)."""

    target: Target
    test: Test
    #: None when the run failed before its session was set up.
    header: Header | None
    summary: Summary | None
    outcome: Outcome | None
    #: Why the run failed or ended early, and what may help.
    error: str | None = None
    hint: str | None = None
    #: Why one-way delays are unreliable, or None when both clocks are synchronised.
    unsync_reason: str | None = None
    #: What the STAMP TLVs answered (STAMP targets only).
    stamp: StampSummary | None = None
    #: When the run ended (its result was made).
    ended: datetime.datetime = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC)
    )

    @property
    def status(self) -> int:
        """The exit status this measurement alone gives: 0 replies came, 1 every packet was
        lost, 2 an error."""
        if self.error is not None:
            return 2
        return 0 if self.summary is not None and self.summary.received else 1

    @classmethod
    def failed(cls, target: Target, test: Test, error: str, hint: str | None = None) -> Measurement:
        """A measurement that never got to send."""
        return cls(target, test, None, None, None, error=error, hint=hint)

    @classmethod
    def of(
        cls,
        target: Target,
        test: Test,
        header: Header,
        outcome: Outcome,
        *,
        sender_synchronized: bool,
        error: str | None = None,
    ) -> Measurement:
        """The figures of ``outcome``."""
        replies = outcome.replies
        summary = summarize(
            outcome.sent,
            replies,
            sender_synchronized=sender_synchronized,
            reflector_synchronized=outcome.reflector_synchronized,
            initial_ttl=test.ttl,
            stateless_possible=target.connectionless,
        )
        return cls(
            target,
            test,
            header,
            summary,
            outcome,
            error=error,
            hint=None
            if error is not None or summary.received
            else silence_hint(header, outcome, test.wait),
            unsync_reason=unsync_reason(outcome, replies, sender_synchronized),
            stamp=None
            if header.ssid is None
            else stamp_sender.summarize(outcome.stamp, ssid=header.ssid),
        )


def unsync_reason(
    outcome: Outcome, replies: Sequence[Reply], sender_synchronized: bool
) -> str | None:
    """Why one-way delays cannot be trusted, in one phrase; None when they can (``replies``:
    the outcome's)."""
    if not sender_synchronized:
        return "this host's clock is not synchronised (check chrony/ntpd: timedatectl)"
    if not outcome.reflector_synchronized:
        return "the reflector says its clock is not synchronised"
    if any(reply.outbound < 0 or reply.inbound < 0 for reply in replies):
        return "some one-way delays are negative, so the clocks disagree"
    return None


def silence_hint(header: Header, outcome: Outcome, wait: float) -> str | None:
    """What to check when packets went out and none was answered in time (``wait``: seconds
    a reply was waited for)."""
    if outcome.sent == sum(outcome.send_errors.values()):
        return None  # nothing left at all: the send errors say why
    if outcome.late:
        return (
            f"no reply came back in time: {outcome.late} came after the wait of {wait:g} s and"
            " count as lost (twamp-client --wait sets the wait)"
        )
    if outcome.icmp_errors.get("port unreachable"):
        return (
            f"{header.address} answered 'port unreachable': nothing listens on UDP port"
            f" {header.test_port} there"
        )
    if header.ssid is not None:
        # A STAMP reflector answers one security mode per port and key: it drops the rest.
        security = "authenticated" if header.mode == "STAMP authenticated" else "unauthenticated"
        opening = (
            f"no reply came back: is a STAMP reflector listening on UDP port {header.test_port}"
            f" in the {security} mode (it drops packets of the other mode, or signed with"
            " another key, unanswered), and is"
        )
    elif header.mode == "TWAMP Light":
        opening = (
            f"no reply came back: is a TWAMP Light reflector listening on UDP port"
            f" {header.test_port}, and is"
        )
    else:
        opening = "no reply came back though the control connection works: is"
    return (
        f"{opening} UDP open in both directions, to {header.address} port {header.test_port}"
        f" and back to this host's port {header.sender_port}?"
    )


class Observer:
    """What a run tells as it goes (the text report's line per packet); does nothing here."""

    def started(self, header: Header) -> None:
        """The session is set up and its first packet is about to leave."""

    def answered(self, reply: Reply, duplicate: bool) -> None:
        """A valid reply came."""

    def lost(self, lost: Lost) -> None:
        """A packet was given up."""
