"""The ``--json`` document of a measurement (schema in README.md): the same figures as the text,
in microseconds under stable names.  A measurement that failed still gets a document, with
``error`` set and the figures it has (none before its session was set up)."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from twamp_common.stats import Distribution

from .. import quality
from ..measurement import Measurement
from .units import us


def _distribution(dist: Distribution | None) -> dict[str, float | None] | None:
    if dist is None:
        return None
    return {
        "min": us(dist.min),
        "avg": us(dist.avg),
        "max": us(dist.max),
        "stddev": us(dist.stddev),
        "median": us(dist.median),
        "p95": us(dist.p95),
        "p99": us(dist.p99),
    }


def document(measurement: Measurement) -> dict[str, Any]:
    """The JSON document of one measurement."""
    target, header, summary, outcome = (
        measurement.target,
        measurement.header,
        measurement.summary,
        measurement.outcome,
    )
    result: dict[str, Any] = {
        "peer": {
            "host": target.host,
            "address": None if header is None else header.address,
            "port": target.effective_port,
        },
        "mode": None if header is None else header.mode,
        "start_time": None if header is None else header.started.isoformat(),
        "count": measurement.test.count,
        "interval_ms": measurement.test.interval_ms,
        "packet_size": None if header is None else header.packet_size,
        "test_port": None if header is None else header.test_port,
    }
    if summary is not None:
        one_way = {}
        for name, dist, jitter in (
            ("outbound_us", summary.outbound, summary.outbound_jitter),
            ("inbound_us", summary.inbound, summary.inbound_jitter),
        ):
            values = _distribution(dist)
            if values is not None:
                values["jitter"] = us(jitter)
            one_way[name] = values
        result |= {
            "sent": summary.sent,
            "received": summary.received,
            "lost": summary.lost,
            "loss_percent": round(summary.loss_percent, 3),
            "forward_lost": summary.forward_lost,
            "reverse_lost": summary.reverse_lost,
            "duplicates": summary.duplicates,
            "reordered": summary.reordered,
            "rtt_us": _distribution(summary.round_trip),
            **one_way,
            "jitter_us": {
                "rfc3550": us(summary.jitter_rfc3550),
                "ipdv": _distribution(summary.ipdv),
            },
            "processing_us": _distribution(summary.processing),
            "inconsistent": summary.inconsistent,
            "loss_split_note": summary.split_note,
            "mos": quality.as_json(quality.voice_quality(measurement)),
            "clocks_synchronized": measurement.unsync_reason is None,
            "clock_note": measurement.unsync_reason,
            "hops": None
            if summary.hops is None
            else {"min": summary.hops[0], "max": summary.hops[1]},
        }
    if outcome is not None:
        result |= {
            "late": outcome.late,
            "invalid": sum(outcome.invalid.values()),
            "invalid_reasons": dict(outcome.invalid),
            "send_errors": dict(outcome.send_errors),
            "icmp_errors": dict(outcome.icmp_errors),
        }
    result["error"] = measurement.error
    result["hint"] = measurement.hint
    return result


def write(measurements: list[Measurement], out: IO[str] = sys.stdout) -> None:
    """One document for one measurement, an array of them for several."""
    documents = [document(measurement) for measurement in measurements]
    json.dump(documents[0] if len(documents) == 1 else documents, out, indent=2)
    out.write("\n")
