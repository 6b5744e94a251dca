"""A measurement as one IPFIX data record (the elements of ``twamp_common.ipfix``).

Delays are nanoseconds, as the elements say; a mean or a jitter is the ``--json`` figure in
nanoseconds (rounded once, by ``units.us``): rounding the float again here would differ by one
at a tie (a mean of four delays often ends in .5), and both reports of a run must agree.  A
figure the run could not compute (no reply, a loss the reflector's numbering cannot split, a
MOS without a voice model, drops a kernel does not count) is left out, which
``twamp_common.ipfix`` turns into a template without that element rather than a made-up value.
"""

from __future__ import annotations

import datetime

from twamp_common.ipfix import endpoint_fields
from twamp_common.stats import Distribution

from .. import quality
from ..measurement import Measurement
from .units import us


def _ms(moment: datetime.datetime) -> int:
    return round(moment.timestamp() * 1000)


def _ns(value: float) -> int:
    """A mean or a jitter in whole nanoseconds, as --json gives it (microseconds, 3 decimals)."""
    return round(us(value) * 1000)  # type: ignore[operator]


def _delays(prefix: str, dist: Distribution | None) -> dict[str, object]:
    if dist is None:
        return {}
    return {
        f"{prefix}Min": dist.min,
        f"{prefix}Avg": _ns(dist.avg),
        f"{prefix}Max": dist.max,
    }


def record(measurement: Measurement, name: str | None = None) -> dict[str, object] | None:
    """The record of a run that got to send (None for one that failed before), ``name`` the
    target's name (default: its host)."""
    header, summary = measurement.header, measurement.summary
    if header is None or summary is None:
        return None
    fields: dict[str, object] = {
        "flowStartMilliseconds": _ms(header.started),
        "flowEndMilliseconds": _ms(measurement.ended),
        **endpoint_fields(
            header.local_address, header.sender_port, header.address, header.test_port
        ),
        "ipDiffServCodePoint": measurement.test.dscp,
        "packetTotalCount": summary.sent,
        "postPacketTotalCount": summary.received,
        **_delays("roundTripDelay", summary.round_trip),
        **_delays("outboundDelay", summary.outbound),
        **_delays("inboundDelay", summary.inbound),
        "totalLossCount": summary.lost,
        "duplicateCount": summary.duplicates,
        "reorderedCount": summary.reordered,
        "targetName": name or measurement.target.host,
        "securityMode": header.mode,
        "clocksSynchronised": measurement.unsync_reason is None,
    }
    for element, value in (
        ("outboundJitter", summary.outbound_jitter),
        ("inboundJitter", summary.inbound_jitter),
        ("roundTripJitter", summary.jitter_rfc3550),
    ):
        if value is not None:
            fields[element] = _ns(value)
    if summary.forward_lost is not None and summary.reverse_lost is not None:
        fields["forwardLossCount"] = summary.forward_lost
        fields["reverseLossCount"] = summary.reverse_lost
    outcome = measurement.outcome
    if outcome is not None and outcome.host_dropped is not None:
        fields["hostDroppedCount"] = outcome.host_dropped
    if measurement.test.traffic is not None:
        fields["trafficModel"] = measurement.test.traffic.name
    voice = quality.voice_quality(measurement)
    if voice is not None:
        fields["outboundMos"] = voice.outbound.mos
        fields["inboundMos"] = voice.inbound.mos
    return fields
