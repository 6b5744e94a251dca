"""What a STAMP Session-Sender asks for with TLVs (RFC 8972 §4) and what the answers add up to.

:class:`StampSetup` is one session's choice: SSID, TLVs, authenticated mode and key.  Each valid
reply leaves a :class:`StampReading` (the TLVs the reflector filled in, their flags, the DSCP the
reply arrived with); :func:`summarize` turns the readings of a run into the figures reported
beside the round-trip statistics, which stay those of :mod:`twamp_common.stats`.

Figures and why they are worth having:

* Timestamp Information: how the reflector's clock is synchronised and how it takes T2 and T3;
* Class of Service: the DSCP and ECN our packets reached the reflector with (the forward path's
  re-marking), the DSCP its replies reached us with (the reverse path's), and how often the
  reflector refused the DSCP we asked for (RP);
* Direct Measurement: the two ends' packet counters of the last reply, so loss per direction
  even from a reflector that numbers its replies with our sequence numbers;
* Follow-Up Telemetry: the reflector's real (kernel) send time of its previous reply, which
  replaces that reply's user-space T3: the inbound delay without the reflector's own delay
  between stamping and sending;
* the U, M and I flags of every TLV the reflector returned, counted per TLV type: a TLV it did
  not understand, found malformed or could not verify is reported, never read as an answer.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import ipaddress
from collections.abc import Iterable, Sequence

from .stamp import FollowUp, StampReply
from .stamp_access_report import DEFAULT_RETRANSMISSIONS, DEFAULT_TIMEOUT_NS, AccessReportTimer
from .stamp_tlv import (
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Location,
    LocationSubType,
    TimestampInformation,
    TlvFlags,
    TlvType,
    TlvValue,
)
from .stats import Distribution, distribution


def code_name(registry: type[enum.IntEnum], value: int) -> str:
    """A registry code as reports and options spell it: ``ntp``, ``hw-assist``,
    ``class-of-service``; ``unassigned-N`` for a value the registry does not have."""
    try:
        return registry(value).name.lower().replace("_", "-")
    except ValueError:
        return f"unassigned-{value}"


#: The TLVs a sender can ask for, by the name the command line and the monitor use.
TLV_CHOICES = tuple(code_name(TlvType, kind) for kind in TlvType)
#: Letters of the TLV flags, as RFC 8972 §4 names them.
FLAG_LETTERS = {TlvFlags.UNRECOGNIZED: "U", TlvFlags.MALFORMED: "M", TlvFlags.INTEGRITY: "I"}
_MASK32 = 0xFFFFFFFF


def parse_tlv_choices(texts: Iterable[str]) -> tuple[str, ...]:
    """TLV names from repeated or comma-separated words, in order, each once.

    ValueError naming the word that is not one of :data:`TLV_CHOICES`.
    """
    chosen: list[str] = []
    for text in texts:
        for word in text.split(","):
            name = word.strip().lower()
            if not name:
                continue
            if name not in TLV_CHOICES:
                raise ValueError(f"{name!r} is not a STAMP TLV")
            if name not in chosen:
                chosen.append(name)
    return tuple(chosen)


def sender_tlvs(names: Sequence[str], *, dscp: int) -> tuple[TlvValue, ...]:
    """The TLVs a sender sends for ``names`` (HMAC aside: it is added when sealing).

    Class of Service asks the reflector to answer with ``dscp``, the one our packets carry, so
    that both directions are measured with the same marking.  Location asks for the source and
    destination addresses (the generic sub-TLVs, which the reflector answers with the family
    it saw).  An Extra Padding TLV named here is a bare header; the padding a size asks for is
    added per packet.
    """
    made: dict[str, TlvValue] = {
        "extra-padding": ExtraPadding(),
        "location": Location.asking(LocationSubType.SOURCE_IP, LocationSubType.DESTINATION_IP),
        "timestamp-information": TimestampInformation(),
        "class-of-service": ClassOfService(dscp1=dscp),
        "direct-measurement": DirectMeasurement(),
        "access-report": AccessReport(),
        "follow-up-telemetry": FollowUpTelemetry(),
    }
    return tuple(made[name] for name in names if name in made)


@dataclasses.dataclass(frozen=True, slots=True)
class StampSetup:
    """One STAMP session's choices (the rest of the plan is the TWAMP Session-Sender's)."""

    #: Session Sender Identifier (RFC 8972 §3), in every packet of the session.
    ssid: int = 0
    tlvs: tuple[TlvValue, ...] = ()
    #: RFC 8762 §4.2.2 layout with its HMAC.
    authenticated: bool = False
    #: The session's key (RFC 8762 §4.4): signs the authenticated layout; with TLVs (or in
    #: authenticated mode) it also seals an HMAC TLV (RFC 8972 §4.8).  None: no HMAC at all.
    key: bytes | None = dataclasses.field(default=None, repr=False)
    #: The Access Report's retransmission timer and retransmissions (RFC 8972 §4.6: both
    #: configurable), when ``tlvs`` hold one.
    access_report_timeout_ns: int = DEFAULT_TIMEOUT_NS
    access_report_retransmissions: int = DEFAULT_RETRANSMISSIONS

    def __post_init__(self) -> None:
        if not 0 <= self.ssid <= 0xFFFF:
            raise ValueError(f"SSID {self.ssid} is outside 0..65535")
        if self.authenticated and self.key is None:
            raise ValueError("authenticated STAMP needs a key")
        self.access_report_timer()  # its figures checked

    def access_report_timer(self) -> AccessReportTimer:
        """A retransmission timer for this session's Access Report."""
        return AccessReportTimer(self.access_report_timeout_ns, self.access_report_retransmissions)

    def with_counter(self, seq: int) -> list[TlvValue]:
        """The TLVs of packet ``seq``: a Direct Measurement TLV carries S_TxC, the packets sent
        so far this one included (RFC 8972 §4.5)."""
        return [
            DirectMeasurement((seq + 1) & _MASK32) if isinstance(tlv, DirectMeasurement) else tlv
            for tlv in self.tlvs
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class StampReading:
    """What one valid reply said beyond its timestamps."""

    sender_seq: int
    reflector_seq: int
    t4: int
    #: Distinct replies received when this one came, this one included.
    received: int
    #: (TLV type, flags) of every TLV in the reply, in order.
    flags: tuple[tuple[int, int], ...]
    #: HMAC TLV verification (see :func:`twamp_common.stamp.tlv_integrity`).
    tlv_integrity: bool | None
    timestamp_information: TimestampInformation | None
    class_of_service: ClassOfService | None
    direct_measurement: DirectMeasurement | None
    location: Location | None
    follow_up: FollowUp | None
    #: The TOS / Traffic Class octet (DSCP and ECN) the reply arrived with, when the socket
    #: reported it.
    reply_traffic_class: int | None

    @classmethod
    def of(
        cls, reply: StampReply, *, t4: int, received: int, reply_traffic_class: int | None
    ) -> StampReading:
        return cls(
            sender_seq=reply.sender_seq,
            reflector_seq=reply.seq,
            t4=t4,
            received=received,
            flags=tuple((tlv.type, int(tlv.flags)) for tlv in reply.tlvs),
            tlv_integrity=reply.tlv_integrity,
            timestamp_information=reply.timestamp_information,
            class_of_service=reply.class_of_service,
            direct_measurement=reply.direct_measurement,
            location=reply.location,
            follow_up=reply.follow_up,
            reply_traffic_class=reply_traffic_class,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LocationAnswer:
    """The reflector's view of our packet's addresses and ports (Location TLV)."""

    source_port: int
    destination_port: int
    source_address: str | None
    destination_address: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class StampSummary:
    """The STAMP figures of a run (see the module's docstring)."""

    ssid: int
    #: Of the last reply that carried one.
    timestamp_information: TimestampInformation | None
    #: DSCP we asked the reflector to answer with (Class of Service DSCP1).
    dscp_requested: int | None
    #: DSCP and ECN our packets reached the reflector with: value -> replies.
    dscp_at_reflector: dict[int, int]
    ecn_at_reflector: dict[int, int]
    #: DSCP and ECN the replies reached us with: value -> replies.
    dscp_of_replies: dict[int, int]
    ecn_of_replies: dict[int, int]
    #: Replies whose Class of Service TLV had RP = 1 (the reflector did not use DSCP1).
    dscp_refused: int
    #: The counters of the last reply that carried them, and loss per direction from them.
    direct_measurement: DirectMeasurement | None
    forward_lost: int | None
    reverse_lost: int | None
    location: LocationAnswer | None
    #: Inbound delays T4 − (the reflector's real send time), from Follow-Up Telemetry.
    follow_up_inbound: Distribution | None
    #: Timestamping method of those send times (TimestampMethod), of the last one.
    follow_up_method: int | None
    #: Per TLV type name, per flag letter, the replies that had it set.
    flags: dict[str, dict[str, int]]
    #: Replies whose TLVs failed HMAC verification at our end.
    integrity_failed: int


def _address(location: Location, kind: LocationSubType) -> str | None:
    answer = location.answer(kind)
    return None if answer is None else str(ipaddress.ip_address(answer))


def _location(location: Location) -> LocationAnswer:
    return LocationAnswer(
        source_port=location.source_port,
        destination_port=location.destination_port,
        source_address=_address(location, LocationSubType.SOURCE_IP),
        destination_address=_address(location, LocationSubType.DESTINATION_IP),
    )


def follow_up_inbound(readings: Sequence[StampReading]) -> list[int]:
    """Inbound delays of the replies a later Follow-Up Telemetry TLV gave the real T3 of.

    The TLV names the earlier reply by the reflector's Sequence Number; the first reply that
    came with that number is the one corrected.
    """
    arrived: dict[int, int] = {}
    for reading in readings:
        arrived.setdefault(reading.reflector_seq, reading.t4)
    return [
        arrived[reading.follow_up.seq] - reading.follow_up.t3_ns
        for reading in readings
        if reading.follow_up is not None and reading.follow_up.seq in arrived
    ]


def summarize(readings: Sequence[StampReading], *, ssid: int) -> StampSummary:
    """The STAMP figures of a run's readings (duplicates included: each reply is a reading)."""
    last_info = last_counters = last_location = None
    last_follow_up = None
    requested: int | None = None
    at_reflector: collections.Counter[int] = collections.Counter()
    ecn: collections.Counter[int] = collections.Counter()
    of_replies: collections.Counter[int] = collections.Counter()
    ecn_of_replies: collections.Counter[int] = collections.Counter()
    refused = integrity_failed = 0
    flags: dict[str, collections.Counter[str]] = {}
    for reading in readings:
        last_info = reading.timestamp_information or last_info
        if reading.direct_measurement is not None:
            last_counters = reading
        last_location = reading.location or last_location
        last_follow_up = reading.follow_up or last_follow_up
        cos = reading.class_of_service
        if cos is not None:
            requested = cos.dscp1
            at_reflector[cos.dscp2] += 1
            ecn[cos.ecn] += 1
            refused += cos.rp == 1
        if reading.reply_traffic_class is not None:
            of_replies[reading.reply_traffic_class >> 2] += 1
            ecn_of_replies[reading.reply_traffic_class & 0b11] += 1
        integrity_failed += reading.tlv_integrity is False
        for kind, bits in reading.flags:
            for flag, letter in FLAG_LETTERS.items():
                if bits & flag:
                    flags.setdefault(code_name(TlvType, kind), collections.Counter())[letter] += 1
    counters = None if last_counters is None else last_counters.direct_measurement
    forward = reverse = None
    if last_counters is not None and counters is not None:
        forward = max(counters.s_txc - counters.r_rxc, 0)
        reverse = max(counters.r_txc - last_counters.received, 0)
    return StampSummary(
        ssid=ssid,
        timestamp_information=last_info,
        dscp_requested=requested,
        dscp_at_reflector=dict(sorted(at_reflector.items())),
        ecn_at_reflector=dict(sorted(ecn.items())),
        dscp_of_replies=dict(sorted(of_replies.items())),
        ecn_of_replies=dict(sorted(ecn_of_replies.items())),
        dscp_refused=refused,
        direct_measurement=counters,
        forward_lost=forward,
        reverse_lost=reverse,
        location=None if last_location is None else _location(last_location),
        follow_up_inbound=distribution(follow_up_inbound(readings)),
        follow_up_method=None if last_follow_up is None else last_follow_up.method,
        flags={name: dict(sorted(counts.items())) for name, counts in sorted(flags.items())},
        integrity_failed=integrity_failed,
    )
