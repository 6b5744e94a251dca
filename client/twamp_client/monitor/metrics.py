"""Prometheus series of every target, written as text when a run of it ends.

Its own series rather than prometheus_client's Counter/Gauge objects: a reload removes a
target's series with the target, and targets may carry different user labels (every series
has the union of their names; a target without one has it empty, which Prometheus treats as
absent).  Each target's sample lines are written when one of its runs ends (its figures change
only then; see exposition.py for why not at each scrape), kept per family, and a scrape joins
each family's HELP/TYPE and every target's lines for it, so each family's samples stay
together as the format requires.  Lines written under another union of label names (a reload
changed it) are written again by the next scrape.  The daemon's own series (IPFIX drops) go
through prometheus_client's collector and formatter.  Units are base units (seconds, bytes),
counters end in ``_total``.  Updated on the daemon's main thread, read on the HTTP server's:
one lock.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, Metric

from ..ipfix_export import IpfixSender
from ..measurement import Measurement
from ..quality import voice_quality
from .config import TargetConfig
from .exposition import Family, label_text, sample

#: 10 µs to 10 s in 1-2.5-5 steps.
RTT_BUCKETS = (*(round(m * 10.0**e, 9) for e in range(-5, 1) for m in (1, 2.5, 5)), 10.0)
#: The ``le`` label of each bucket but +Inf.
_LE = tuple(repr(bound) for bound in RTT_BUCKETS)
#: Each bucket's bound in nanoseconds, as round trips are counted.
_BOUNDS_NS = tuple(round(bound * 1e9) for bound in RTT_BUCKETS)
RESULTS = ("ok", "lost", "error")

RTT = Family("twamp_rtt_seconds", "histogram", "Round-trip time of every reply.")
SENT = Family("twamp_packets_sent", "counter", "Test packets sent.")
RECEIVED = Family("twamp_packets_received", "counter", "Test packets answered (first replies).")
LOST = Family(
    "twamp_packets_lost",
    "counter",
    "Test packets lost: out (to the reflector), in (back), unknown (not told apart).",
)
BYTES_SENT = Family("twamp_sent_bytes", "counter", "UDP payload octets of the test packets sent.")
BYTES_RECEIVED = Family(
    "twamp_received_bytes", "counter", "UDP payload octets of the replies received."
)
DROPPED = Family(
    "twamp_packets_dropped_by_host",
    "counter",
    "Datagrams this host dropped at the test socket (its receive buffer full): replies among"
    " them count in twamp_packets_lost_total though the path delivered them.",
)
RUNS = Family("twamp_runs", "counter", "Runs by result: ok, lost (no reply), error.")
DELAY = {
    stat: Family(
        f"twamp_delay_{stat}_seconds",
        "gauge",
        f"The last run's {stat} delay: out, in (one-way) and rt (round trip).",
    )
    for stat in ("min", "avg", "max")
}
JITTER = Family(
    "twamp_jitter_seconds",
    "gauge",
    "The last run's jitter: out and in (one-way), rt (RFC 3550 over the round trip).",
)
MOS = Family(
    "twamp_mos",
    "gauge",
    "The last voice-model run's Mean Opinion Score (ITU-T G.107): out and in.",
)
DURATION = Family("twamp_run_duration_seconds", "gauge", "How long the last run took.")
SUCCESS = Family(
    "twamp_last_success_timestamp_seconds", "gauge", "Unix time of the last run that got replies."
)
#: Every per-target family, in the order of the exposition.
FAMILIES = (
    RTT,
    SENT,
    RECEIVED,
    LOST,
    BYTES_SENT,
    BYTES_RECEIVED,
    DROPPED,
    RUNS,
    *DELAY.values(),
    JITTER,
    MOS,
    DURATION,
    SUCCESS,
)


@dataclasses.dataclass(slots=True)
class _Series:
    """One target's figures: counters since the daemon started, gauges of the last run; and
    its sample lines of each family, as last written."""

    config: TargetConfig
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * len(RTT_BUCKETS))
    rtt_count: int = 0
    rtt_sum: float = 0.0
    sent: int = 0
    received: int = 0
    lost: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"out": 0, "in": 0, "unknown": 0}
    )
    bytes_sent: int = 0
    bytes_received: int = 0
    dropped_by_host: int = 0
    runs: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    #: (direction, min, avg, max, jitter) in seconds, of the last run that had replies.
    delays: list[tuple[str, float, float, float, float | None]] = dataclasses.field(
        default_factory=list
    )
    duration: float | None = None
    last_success: float | None = None
    #: (direction, MOS) of the last voice-model run that had replies.
    mos: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    #: The user label names ``lines`` was written with (None: not written yet).
    written_for: tuple[str, ...] | None = None
    lines: dict[Family, str] = dataclasses.field(default_factory=dict)


class Metrics:
    """The targets' series, and the registry of the daemon's own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        #: The union of the targets' user label names.
        self._names: tuple[str, ...] = ()
        #: The IPFIX senders whose drops are counted (set by the daemon).
        self.ipfix: Sequence[IpfixSender] = ()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def configure(self, targets: Mapping[str, TargetConfig]) -> None:
        """The targets now configured: new ones start at zero, changed and removed ones
        lose their series (a changed target measures something else)."""
        with self._lock:
            self._series = {
                name: self._series[name]
                if name in self._series and self._series[name].config == config
                else _Series(config)
                for name, config in targets.items()
            }
            self._names = tuple(
                sorted({label for config in targets.values() for label, _ in config.labels})
            )

    def record(self, name: str, measurement: Measurement, duration: float) -> None:
        with self._lock:
            series = self._series.get(name)
            if series is None:
                return
            _add(series, measurement, duration)
            _write(series, self._names)

    def exposition(self) -> bytes:
        """The whole text exposition: every target's series, then the daemon's own."""
        with self._lock:
            for series in self._series.values():
                if series.written_for != self._names:
                    _write(series, self._names)
            written = [series.lines for series in self._series.values()]
        text = "".join(
            family.header() + "".join(lines[family] for lines in written) for family in FAMILIES
        )
        return text.encode() + generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The daemon's own series, for prometheus_client's formatter."""
        if not self.ipfix:
            return
        dropped = CounterMetricFamily(
            "twamp_ipfix_records_dropped",
            "IPFIX records known not to have reached the collector: buffer full, or refused"
            " by its host (UDP, ICMP port unreachable).",
            labels=["collector"],
        )
        for sender in self.ipfix:
            host, port = sender.address
            dropped.add_metric([f"{host}:{port}"], sender.dropped)
        yield dropped


def _write(s: _Series, names: tuple[str, ...]) -> None:
    """Write the sample lines of ``s`` with the user label names ``names``."""
    own = dict(s.config.labels)
    # Label names in order, as prometheus_client writes them (readers need not care).
    pairs = sorted([("target", s.config.name), *((name, own.get(name, "")) for name in names)])
    labels = label_text(pairs)
    around = {
        extra: (
            label_text(pair for pair in pairs if pair[0] < extra),
            label_text(pair for pair in pairs if pair[0] > extra),
        )
        for extra in ("direction", "le", "result")
    }

    def extra(name: str, value: str) -> str:
        """``labels`` with one of the monitor's own (whose values need no escaping)."""
        before, after = around[name]
        return ",".join(filter(None, (before, f'{name}="{value}"', after)))

    rtt, running = [], 0
    for le, count in zip(_LE, s.buckets, strict=True):
        running += count
        rtt.append(sample("twamp_rtt_seconds_bucket", extra("le", le), running))
    rtt.append(sample("twamp_rtt_seconds_bucket", extra("le", "+Inf"), s.rtt_count))
    rtt.append(sample("twamp_rtt_seconds_count", labels, s.rtt_count))
    rtt.append(sample("twamp_rtt_seconds_sum", labels, s.rtt_sum))
    delay: dict[Family, list[str]] = {family: [] for family in DELAY.values()}
    jitter = []
    for direction, low, avg, high, spread in s.delays:
        own_labels = extra("direction", direction)
        for stat, value in (("min", low), ("avg", avg), ("max", high)):
            delay[DELAY[stat]].append(sample(DELAY[stat].name, own_labels, value))
        if spread is not None:
            jitter.append(sample(JITTER.name, own_labels, spread))
    lines: dict[Family, list[str]] = {
        RTT: rtt,
        SENT: [sample("twamp_packets_sent_total", labels, s.sent)],
        RECEIVED: [sample("twamp_packets_received_total", labels, s.received)],
        LOST: [
            sample("twamp_packets_lost_total", extra("direction", direction), count)
            for direction, count in s.lost.items()
        ],
        BYTES_SENT: [sample("twamp_sent_bytes_total", labels, s.bytes_sent)],
        BYTES_RECEIVED: [sample("twamp_received_bytes_total", labels, s.bytes_received)],
        DROPPED: [sample("twamp_packets_dropped_by_host_total", labels, s.dropped_by_host)],
        RUNS: [
            sample("twamp_runs_total", extra("result", result), count)
            for result, count in s.runs.items()
        ],
        **delay,
        JITTER: jitter,
        MOS: [sample(MOS.name, extra("direction", direction), score) for direction, score in s.mos],
        DURATION: [] if s.duration is None else [sample(DURATION.name, labels, s.duration)],
        SUCCESS: [] if s.last_success is None else [sample(SUCCESS.name, labels, s.last_success)],
    }
    s.lines = {family: "".join(text) for family, text in lines.items()}
    s.written_for = names


def _add(series: _Series, measurement: Measurement, duration: float) -> None:
    series.duration = duration
    series.runs[RESULTS[measurement.status]] += 1
    summary, outcome, header = measurement.summary, measurement.outcome, measurement.header
    if summary is None:
        return
    series.sent += summary.sent
    series.received += summary.received
    series.lost["out"] += summary.forward_lost or 0
    series.lost["in"] += summary.reverse_lost or 0
    series.lost["unknown"] += summary.unplaced_lost
    if header is not None:
        series.bytes_sent += header.octets(summary.sent)
        if outcome is not None:
            series.bytes_received += sum(header.size_of(seq) for seq in outcome.answered())
    if outcome is not None:
        series.dropped_by_host += outcome.host_dropped or 0
    rtt = summary.round_trip
    if rtt is not None:
        # The summary's round trips (first replies with true timestamps), counted per bucket
        # from their sorted order: a search per bucket, not one per reply.
        below = 0
        for index, bound in enumerate(_BOUNDS_NS):
            upto = rtt.at_most(bound)
            series.buckets[index] += upto - below
            below = upto
        series.rtt_count += rtt.count
        series.rtt_sum += sum(rtt.ordered) / 1e9
    if summary.received:
        series.last_success = time.time()
        series.delays = [
            (direction, dist.min / 1e9, dist.avg / 1e9, dist.max / 1e9, _seconds(spread))
            for direction, dist, spread in (
                ("out", summary.outbound, summary.outbound_jitter),
                ("in", summary.inbound, summary.inbound_jitter),
                ("rt", summary.round_trip, summary.jitter_rfc3550),
            )
            if dist is not None
        ]
        voice = voice_quality(measurement)
        if voice is not None:
            series.mos = [("out", voice.outbound.mos), ("in", voice.inbound.mos)]


def _seconds(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e9
