"""Voice quality of a measurement: the E-model's R and MOS in each direction, for voice models.

Only runs of a voice traffic model (``g711``, ``g729``) are scored: the E-model's codec
constants mean nothing for packets of another size and rate.  Per direction (``out``: sender to
reflector, heard at the reflector's side; ``in``: the way back):

* loss: the direction's share of the packets sent when the reflector's numbering tells the
  directions apart, else all of the loss in both directions (the pessimistic reading);
* BurstR: from the pattern of unanswered packets in sender order, the same for both;
* delay: the direction's mean one-way delay with synchronised clocks, else half the mean round
  trip, which ``delay_basis`` says;
* jitter: the direction's RFC 3550 jitter (the round trip's without synchronised clocks).
"""

from __future__ import annotations

import dataclasses

from twamp_common import mos
from twamp_common.test_session import Outcome

from .measurement import Measurement

ONE_WAY = "one-way delay"
HALF_ROUND_TRIP = "half the round trip (clocks not synchronised)"


@dataclasses.dataclass(frozen=True, slots=True)
class VoiceQuality:
    """R and MOS of both directions, and what they were computed from."""

    codec: str
    outbound: mos.Assessment
    inbound: mos.Assessment
    delay_basis: str


def voice_quality(measurement: Measurement) -> VoiceQuality | None:
    """The scores of a voice-model run with replies; None for anything else."""
    traffic, summary, outcome = measurement.test.traffic, measurement.summary, measurement.outcome
    if traffic is None or traffic.name not in mos.CODECS or summary is None or outcome is None:
        return None
    if not summary.sent or summary.round_trip is None:
        return None
    codec = mos.CODECS[traffic.name]
    burst = mos.burst_ratio(_lost_pattern(outcome))
    synced = summary.clocks_synchronized and summary.outbound is not None
    basis = ONE_WAY if synced else HALF_ROUND_TRIP
    scores = []
    for lost, delay, jitter in (
        (summary.forward_lost, summary.outbound, summary.outbound_jitter),
        (summary.reverse_lost, summary.inbound, summary.inbound_jitter),
    ):
        # What no direction can be given is counted in both, as all of it is when the
        # reflector's numbering cannot split the loss at all.
        loss = 100.0 * ((lost or 0) + summary.unplaced_lost) / summary.sent
        if synced and delay is not None:
            mean, wobble = delay.avg, jitter
        else:
            mean, wobble = summary.round_trip.avg / 2, summary.jitter_rfc3550
        scores.append(
            mos.assess(
                codec,
                loss_percent=loss,
                one_way_delay_ns=max(mean, 0.0),
                jitter_ns=wobble or 0.0,
                burst_ratio=burst,
            )
        )
    return VoiceQuality(traffic.name, scores[0], scores[1], basis)


def _lost_pattern(outcome: Outcome) -> list[bool]:
    answered = outcome.answered()
    return [seq not in answered for seq in range(outcome.sent)]


def as_json(quality: VoiceQuality | None) -> dict[str, object] | None:
    """The ``mos`` object of the --json document."""
    if quality is None:
        return None
    return {
        "codec": quality.codec,
        "out": round(quality.outbound.mos, 3),
        "in": round(quality.inbound.mos, 3),
        "r_out": round(quality.outbound.r, 2),
        "r_in": round(quality.inbound.r, 2),
        "delay_basis": quality.delay_basis,
    }


def summary_line(quality: VoiceQuality) -> str:
    return (
        f"MOS ({quality.codec}, ITU-T G.107) out {quality.outbound.mos:.2f}"
        f" (R {quality.outbound.r:.1f}), in {quality.inbound.mos:.2f}"
        f" (R {quality.inbound.r:.1f}), from {quality.delay_basis}\n"
    )
