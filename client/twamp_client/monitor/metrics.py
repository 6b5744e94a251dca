"""Prometheus series of every target, built at each scrape from what its runs left here.

A custom collector rather than prometheus_client's Counter/Gauge objects: a reload removes a
target's series with the target, and targets may carry different user labels (every series
has the union of their names; a target without one has it empty, which Prometheus treats as
absent).  Units are base units (seconds, bytes), counters end in ``_total``.  Updated on the
daemon's main thread, read on the HTTP server's: one lock.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..ipfix_export import IpfixSender
from ..measurement import Measurement
from ..quality import voice_quality
from .config import TargetConfig

#: 10 µs to 10 s in 1-2.5-5 steps.
RTT_BUCKETS = (*(round(m * 10.0**e, 9) for e in range(-5, 1) for m in (1, 2.5, 5)), 10.0)
RESULTS = ("ok", "lost", "error")


@dataclasses.dataclass(slots=True)
class _Series:
    """One target's figures: counters since the daemon started, gauges of the last run."""

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
    runs: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    #: (direction, min, avg, max, jitter) in seconds, of the last run that had replies.
    delays: list[tuple[str, float, float, float, float | None]] = dataclasses.field(
        default_factory=list
    )
    duration: float | None = None
    last_success: float | None = None
    #: (direction, MOS) of the last voice-model run that had replies.
    mos: list[tuple[str, float]] = dataclasses.field(default_factory=list)


class Metrics:
    """The collector the registry scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
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

    def record(self, name: str, measurement: Measurement, duration: float) -> None:
        with self._lock:
            series = self._series.get(name)
            if series is None:
                return
            _add(series, measurement, duration)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            series = list(self._series.values())
        names = sorted({label for s in series for label, _ in s.config.labels})
        keys = ["target", *names]

        def labels(s: _Series, *extra: str) -> list[str]:
            own = dict(s.config.labels)
            return [s.config.name, *(own.get(label, "") for label in names), *extra]

        rtt = HistogramMetricFamily(
            "twamp_rtt_seconds", "Round-trip time of every reply.", labels=keys
        )
        sent = CounterMetricFamily("twamp_packets_sent", "Test packets sent.", labels=keys)
        received = CounterMetricFamily(
            "twamp_packets_received", "Test packets answered (first replies).", labels=keys
        )
        lost = CounterMetricFamily(
            "twamp_packets_lost",
            "Test packets lost: out (to the reflector), in (back), unknown (not told apart).",
            labels=[*keys, "direction"],
        )
        bytes_sent = CounterMetricFamily(
            "twamp_sent_bytes", "UDP payload octets of the test packets sent.", labels=keys
        )
        bytes_received = CounterMetricFamily(
            "twamp_received_bytes", "UDP payload octets of the replies received.", labels=keys
        )
        runs = CounterMetricFamily(
            "twamp_runs", "Runs by result: ok, lost (no reply), error.", labels=[*keys, "result"]
        )
        delay = {
            stat: GaugeMetricFamily(
                f"twamp_delay_{stat}_seconds",
                f"The last run's {stat} delay: out, in (one-way) and rt (round trip).",
                labels=[*keys, "direction"],
            )
            for stat in ("min", "avg", "max")
        }
        jitter = GaugeMetricFamily(
            "twamp_jitter_seconds",
            "The last run's jitter: out and in (one-way), rt (RFC 3550 over the round trip).",
            labels=[*keys, "direction"],
        )
        duration = GaugeMetricFamily(
            "twamp_run_duration_seconds", "How long the last run took.", labels=keys
        )
        mos = GaugeMetricFamily(
            "twamp_mos",
            "The last voice-model run's Mean Opinion Score (ITU-T G.107): out and in.",
            labels=[*keys, "direction"],
        )
        success = GaugeMetricFamily(
            "twamp_last_success_timestamp_seconds",
            "Unix time of the last run that got replies.",
            labels=keys,
        )
        for s in series:
            own = labels(s)
            cumulative, running = [], 0
            for bound, count in zip(RTT_BUCKETS, s.buckets, strict=True):
                running += count
                cumulative.append((repr(bound), running))
            cumulative.append(("+Inf", s.rtt_count))
            rtt.add_metric(own, cumulative, s.rtt_sum)
            sent.add_metric(own, s.sent)
            received.add_metric(own, s.received)
            for direction, count in s.lost.items():
                lost.add_metric(labels(s, direction), count)
            bytes_sent.add_metric(own, s.bytes_sent)
            bytes_received.add_metric(own, s.bytes_received)
            for result, count in s.runs.items():
                runs.add_metric(labels(s, result), count)
            for direction, low, avg, high, spread in s.delays:
                for stat, value in (("min", low), ("avg", avg), ("max", high)):
                    delay[stat].add_metric(labels(s, direction), value)
                if spread is not None:
                    jitter.add_metric(labels(s, direction), spread)
            if s.duration is not None:
                duration.add_metric(own, s.duration)
            if s.last_success is not None:
                success.add_metric(own, s.last_success)
            for direction, score in s.mos:
                mos.add_metric(labels(s, direction), score)
        yield from (rtt, sent, received, lost, bytes_sent, bytes_received, runs)
        yield from delay.values()
        yield from (jitter, mos, duration, success)
        if self.ipfix:
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


def _add(series: _Series, measurement: Measurement, duration: float) -> None:
    series.duration = duration
    series.runs[RESULTS[measurement.status]] += 1
    summary, outcome, header = measurement.summary, measurement.outcome, measurement.header
    if summary is None:
        return
    series.sent += summary.sent
    series.received += summary.received
    if summary.forward_lost is not None and summary.reverse_lost is not None:
        series.lost["out"] += summary.forward_lost
        series.lost["in"] += summary.reverse_lost
    else:
        series.lost["unknown"] += summary.lost
    if header is not None:
        series.bytes_sent += summary.sent * header.packet_size
        series.bytes_received += summary.received * header.packet_size
    if outcome is not None:
        answered: set[int] = set()
        for reply in outcome.replies:
            # First replies with true timestamps only, as in every figure of the summary.
            if reply.sender_seq in answered or not reply.consistent:
                continue
            answered.add(reply.sender_seq)
            seconds = reply.round_trip / 1e9
            index = bisect.bisect_left(RTT_BUCKETS, seconds)
            if index < len(RTT_BUCKETS):
                series.buckets[index] += 1
            series.rtt_count += 1
            series.rtt_sum += seconds
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
