"""The monitor's own text exposition says what prometheus_client's formatter says of the same
figures: the same families, series, labels (odd ones escaped) and values."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from twamp_client import Measurement, Target, Test
from twamp_client.measurement import Header
from twamp_client.monitor.config import TargetConfig
from twamp_client.monitor.exposition import accepts_gzip
from twamp_client.monitor.metrics import DELAY, FAMILIES, RTT_BUCKETS, Metrics, _Series
from twamp_common.test_session import Outcome

#: Label values and target names that need escaping, or look like the format's syntax.
ODD = ('say "hi"', "back\\slash", "two\nlines", "", "a,b=c}", "é ☃", '\\"\\n')
LABEL_NAMES = ("site", "zone", "a_b")


class Reference:
    """The figures of ``metrics`` as prometheus_client's metric families: the oracle."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        series = list(self.metrics._series.values())
        names = sorted({label for s in series for label, _ in s.config.labels})
        keys = ["target", *names]

        def labels(s: _Series, *extra: str) -> list[str]:
            own = dict(s.config.labels)
            return [s.config.name, *(own.get(label, "") for label in names), *extra]

        made: dict[str, Metric] = {}
        for f in FAMILIES:
            kind = {
                "histogram": HistogramMetricFamily,
                "counter": CounterMetricFamily,
                "gauge": GaugeMetricFamily,
            }[f.kind]
            extra = {
                "twamp_packets_lost": ["direction"],
                "twamp_runs": ["result"],
                "twamp_jitter_seconds": ["direction"],
                "twamp_mos": ["direction"],
                **{d.name: ["direction"] for d in DELAY.values()},
            }.get(f.name, [])
            made[f.name] = kind(f.name, f.help, labels=[*keys, *extra])
        for s in series:
            own = labels(s)
            cumulative, running = [], 0
            for bound, count in zip(RTT_BUCKETS, s.buckets, strict=True):
                running += count
                cumulative.append((repr(bound), running))
            cumulative.append(("+Inf", s.rtt_count))
            made["twamp_rtt_seconds"].add_metric(own, cumulative, s.rtt_sum)
            made["twamp_packets_sent"].add_metric(own, s.sent)
            made["twamp_packets_received"].add_metric(own, s.received)
            for direction, count in s.lost.items():
                made["twamp_packets_lost"].add_metric(labels(s, direction), count)
            made["twamp_sent_bytes"].add_metric(own, s.bytes_sent)
            made["twamp_received_bytes"].add_metric(own, s.bytes_received)
            made["twamp_packets_dropped_by_host"].add_metric(own, s.dropped_by_host)
            for result, count in s.runs.items():
                made["twamp_runs"].add_metric(labels(s, result), count)
            for direction, low, avg, high, spread in s.delays:
                for stat, value in (("min", low), ("avg", avg), ("max", high)):
                    made[DELAY[stat].name].add_metric(labels(s, direction), value)
                if spread is not None:
                    made["twamp_jitter_seconds"].add_metric(labels(s, direction), spread)
            if s.duration is not None:
                made["twamp_run_duration_seconds"].add_metric(own, s.duration)
            if s.last_success is not None:
                made["twamp_last_success_timestamp_seconds"].add_metric(own, s.last_success)
            for direction, score in s.mos:
                made["twamp_mos"].add_metric(labels(s, direction), score)
        yield from made.values()


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def parsed(text: str) -> list[tuple[str, str, str, list[Sample]]]:
    """Each family as read back, its samples in order of name and labels."""
    return [
        (
            family.name,
            family.type,
            family.documentation,
            sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples),
        )
        for family in text_string_to_metric_families(text)
    ]


def reference_text(metrics: Metrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference(metrics))
    return generate_latest(registry).decode()


def configure(metrics: Metrics, names: list[str], labels: list[dict[str, str]]) -> None:
    metrics.configure(
        {
            name: TargetConfig(name, Target("192.0.2.1"), Test(), 10.0, tuple(sorted(own.items())))
            for name, own in zip(names, labels, strict=True)
        }
    )


counts = st.integers(0, 10**12)
seconds = st.floats(0, 1e4, allow_nan=False)
odd_text = st.sampled_from(ODD) | st.text(max_size=8)


@st.composite
def figures(draw: st.DrawFn, series: _Series) -> None:
    series.buckets = draw(st.lists(counts, min_size=len(RTT_BUCKETS), max_size=len(RTT_BUCKETS)))
    series.rtt_count = sum(series.buckets) + draw(counts)
    series.rtt_sum = draw(seconds)
    series.sent, series.received = draw(counts), draw(counts)
    series.lost = {direction: draw(counts) for direction in ("out", "in", "unknown")}
    series.bytes_sent, series.bytes_received = draw(counts), draw(counts)
    series.dropped_by_host = draw(counts)
    series.runs = {result: draw(counts) for result in ("ok", "lost", "error")}
    series.delays = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("out", "in", "rt")),
                seconds,
                seconds,
                seconds,
                st.none() | seconds,
            ),
            max_size=3,
            unique_by=lambda row: row[0],
        )
    )
    series.duration = draw(st.none() | seconds)
    series.last_success = draw(st.none() | st.floats(1.7e9, 1.9e9))
    series.mos = draw(st.lists(st.tuples(st.sampled_from(("out", "in")), st.floats(1, 4.5))))


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(odd_text.filter(bool), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_the_exposition_reads_back_as_prometheus_clients_of_the_same_figures(
    names: list[str], data: st.DataObject
) -> None:
    labels = [
        data.draw(st.dictionaries(st.sampled_from(LABEL_NAMES), odd_text, max_size=3))
        for _ in names
    ]
    metrics = Metrics()
    configure(metrics, names, labels)
    for series in metrics._series.values():
        data.draw(figures(series))
    ours = metrics.exposition().decode()
    assert parsed(ours) == parsed(reference_text(metrics))
    assert [line.split()[2] for line in ours.splitlines() if line.startswith("# TYPE")] == [
        family.exposed for family in FAMILIES
    ]


def test_lines_written_before_a_reload_take_the_new_label_names() -> None:
    metrics = Metrics()
    configure(metrics, ["a", 'say "b"'], [{}, {}])
    for series in metrics._series.values():
        series.sent = 7
    before = metrics.exposition().decode()
    assert 'twamp_packets_sent_total{target="say \\"b\\""} 7.0' in before
    # Figures change only through record(), which writes the lines again; a reload that
    # brings a new label name must reach the lines already written too.
    configure(metrics, ["a", 'say "b"', "c"], [{}, {}, {"site": "x\ny"}])
    after = metrics.exposition().decode()
    assert 'twamp_packets_sent_total{site="",target="say \\"b\\""} 7.0' in after
    assert 'twamp_packets_sent_total{site="x\\ny",target="c"} 0.0' in after
    assert parsed(after) == parsed(reference_text(metrics))


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),  # what Prometheus sends, give or take the weights
        ("*", True),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),  # a coding named outweighs the wildcard
        ("gzip;q=x", False),
        ("br, x-gzip", True),
    ],
)
def test_accept_encoding_takes_gzip_by_name_or_wildcard(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def record_run(metrics: Metrics, outcome: Outcome) -> None:
    """``outcome`` as a run of target "a" (configured first)."""
    target, test = Target("192.0.2.1"), Test()
    started = datetime.datetime.now(datetime.UTC)
    header = Header("192.0.2.1", "192.0.2.1", 862, "unauthenticated", outcome.sent, 1000.0,
                    (14,), started, 5000, 6000, "192.0.2.2")  # fmt: skip
    run = Measurement.of(target, test, header, outcome, sender_synchronized=True)
    metrics.record("a", run, 1.0)


def test_datagrams_dropped_by_this_host_add_up_over_runs() -> None:
    metrics = Metrics()
    configure(metrics, ["a"], [{}])
    for dropped in (5, None, 2):  # None: the kernel did not say
        record_run(metrics, Outcome(sent=3, host_dropped=dropped))
    assert 'twamp_packets_dropped_by_host_total{target="a"} 7.0' in metrics.exposition().decode()


def test_a_runs_round_trips_fill_the_buckets_as_its_summary_counts_them() -> None:
    def row(seq: int, rtt: int, inside: int = 0) -> tuple[int, ...]:
        t1 = 1_800_000_000 * 10**9 + seq * 10**9
        return (seq, seq, t1, t1 + 1, t1 + 1 + inside, t1 + rtt + inside, 64, None)

    metrics = Metrics()
    configure(metrics, ["a"], [{}])
    outcome = Outcome(sent=6)
    outcome.rows += [
        row(0, 5_000),
        row(1, 10_000),  # on the bound: in its bucket (le is "at most")
        row(0, 7_000_000),  # a duplicate: the first reply counts
        row(2, 10_001),
        row(3, 20 * 10**9),  # above the last bound: +Inf only
        row(4, 1_000, inside=-5),  # T3 before T2: left out, as of the summary's figures
    ]
    record_run(metrics, outcome)
    text = metrics.exposition().decode()
    for le, count in (("1e-05", 2), ("2.5e-05", 3), ("10.0", 3), ("+Inf", 4)):
        assert f'twamp_rtt_seconds_bucket{{le="{le}",target="a"}} {count}.0' in text, text
    assert 'twamp_rtt_seconds_count{target="a"} 4.0' in text
    assert 'twamp_rtt_seconds_sum{target="a"} 20.000025001' in text
