"""The ``--json`` document of a measurement (schema in README.md): the same figures as the text,
in microseconds under stable names.  A measurement that failed still gets a document, with
``error`` set and the figures it has (none before its session was set up)."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from twamp_common.stamp_sender import StampSummary, code_name
from twamp_common.stamp_tlv import SyncSource, TimestampMethod
from twamp_common.stats import Distribution

from .. import quality
from ..measurement import Header, Measurement
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


def _sizes(header: Header | None) -> dict[str, Any]:
    """``packet_size``: every packet's; for a model of several sizes (imix) their mean over
    its cycle, one number where one was always found, and ``packet_sizes`` the cycle."""
    if header is None:
        return {"packet_size": None}
    if len(header.packet_sizes) == 1:
        return {"packet_size": header.packet_sizes[0]}
    return {
        "packet_size": round(header.mean_packet_size, 3),
        "packet_sizes": list(header.packet_sizes),
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
        **_sizes(header),
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
            "unplaced_lost": summary.unplaced_lost,
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
            "host_dropped": outcome.host_dropped,
        }
    if measurement.stamp is not None:
        result["stamp"] = stamp_document(measurement.stamp)
    result["error"] = measurement.error
    result["hint"] = measurement.hint
    return result


def stamp_document(stamp: StampSummary) -> dict[str, Any]:
    """What the reflector's TLVs answered; None for a TLV no reply carried understood."""
    info = stamp.timestamp_information
    counters = stamp.direct_measurement
    location = stamp.location
    return {
        "ssid": stamp.ssid,
        "timestamp_information": None
        if info is None
        else {
            "sync_in": code_name(SyncSource, info.sync_in),
            "method_in": code_name(TimestampMethod, info.method_in),
            "sync_out": code_name(SyncSource, info.sync_out),
            "method_out": code_name(TimestampMethod, info.method_out),
        },
        "class_of_service": None
        if stamp.dscp_requested is None
        else {
            "dscp_requested": stamp.dscp_requested,
            "dscp_at_reflector": stamp.dscp_at_reflector,
            "ecn_at_reflector": stamp.ecn_at_reflector,
            "dscp_of_replies": stamp.dscp_of_replies,
            "ecn_of_replies": stamp.ecn_of_replies,
            "refused": stamp.dscp_refused,
        },
        "direct_measurement": None
        if counters is None
        else {
            "s_txc": counters.s_txc,
            "r_rxc": counters.r_rxc,
            "r_txc": counters.r_txc,
            "forward_lost": stamp.forward_lost,
            "reverse_lost": stamp.reverse_lost,
        },
        "location": None
        if location is None
        else {
            "source_address": location.source_address,
            "source_port": location.source_port,
            "destination_address": location.destination_address,
            "destination_port": location.destination_port,
        },
        "follow_up_inbound_us": _distribution(stamp.follow_up_inbound),
        "follow_up_replies": 0
        if stamp.follow_up_inbound is None
        else stamp.follow_up_inbound.count,
        "follow_up_method": None
        if stamp.follow_up_method is None
        else code_name(TimestampMethod, stamp.follow_up_method),
        "tlv_flags": stamp.flags,
        "tlv_integrity_failed": stamp.integrity_failed,
    }


def write(measurements: list[Measurement], out: IO[str] = sys.stdout) -> None:
    """One document for one measurement, an array of them for several."""
    documents = [document(measurement) for measurement in measurements]
    json.dump(documents[0] if len(documents) == 1 else documents, out, indent=2)
    out.write("\n")
