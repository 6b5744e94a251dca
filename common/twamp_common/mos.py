"""Mean Opinion Score of a voice call over a measured path: the ITU-T G.107 E-model, pure functions.

R = Ro − Is − Id − Ie,eff + A.  Everything a TWAMP run does not measure keeps the G.107 default
(Table 3: send/receive loudness, room noise, sidetone, TELR 65 dB, WEPL 110 dB, A = 0), so with
no delay and no loss R = 93.2, the standard's own figure.  What the run does measure enters in
two places:

* **Ie,eff**, the equipment impairment under packet loss:
  Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl), with the codec's Ie and Bpl from ITU-T
  G.113 Appendix I (:data:`CODECS`), Ppl the loss in percent, BurstR from the loss pattern
  (:func:`burst_ratio`).
* **Id**, the delay impairment, from the one-way mouth-to-ear delay Ta = network one-way delay
  + a jitter buffer of twice the jitter + the codec's packetisation delay
  (:func:`mouth_to_ear_ms`).

Which Id: the full G.107 §7.4 one, Id = Idte + Idle + Idd, with the talker echo path T = Ta,
the listener echo round trip Tr = 2·Ta and the default TELR and WEPL, not the Cole–Rosenbluth
straight-line approximation (Id ≈ 0.024 d + 0.11 (d − 177.3) above 177.3 ms).  The standard is
what the figures claim to follow, its curve is smooth where the approximation has a kink, and
the two agree within 0.01 MOS up to 300 ms anyway (100 ms: 4.355 against 4.358; 300 ms: 3.719
against 3.712).  Idle at Tr = 0 (0.149) is already inside the 93.2, so Id enters R as
Id(Ta) − Id(0): R stays exactly 93.2 at no delay and no loss.

MOS from R by G.107 Annex B, clamped to [1, 4.5] (the polynomial dips below 1 for R < 6.5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

#: Ro − Is − Id with every G.107 default and no delay (G.107 §7, Table 3).
R_DEFAULT = 93.2
#: Basic signal-to-noise ratio Ro = 15 − 1.5 (SLR + No) with the defaults (No = −61.18 dBm0p);
#: Roe of the talker echo formula has the same value with RLR = 2 dB.
_RO = 94.77
#: Talker echo loudness rating and weighted echo path loss, G.107 defaults (dB).
_TELR = 65.0
_WEPL = 110.0
#: Delay below which Idd is zero (G.107 mT, default 100 ms).
_IDD_THRESHOLD_MS = 100.0
#: G.107 Table 3's permitted range of BurstR: outside it the model was not validated.
BURST_RATIO_MIN = 1.0
BURST_RATIO_MAX = 8.0
_NS_PER_MS = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Codec:
    """A codec's E-model constants (ITU-T G.113 Appendix I) and its packetisation delay."""

    name: str
    #: Equipment impairment factor without loss.
    ie: float
    #: Packet-loss robustness factor.
    bpl: float
    #: Delay the codec adds before the first packet of speech leaves: the voice in one packet
    #: plus the encoder's look-ahead (ms).
    packetization_ms: float


#: The codecs of the traffic models, by the name a configuration uses.  ``g711`` is G.711 with
#: the packet loss concealment of G.711 Appendix I, what every current VoIP endpoint does; one
#: packet of the g711 model carries 20 ms of voice.  ``g729`` is G.729A, two 10 ms
#: frames a packet plus its 5 ms look-ahead.
CODECS: Mapping[str, Codec] = MappingProxyType(
    {
        codec.name: codec
        for codec in (
            Codec("g711", ie=0.0, bpl=25.1, packetization_ms=20.0),
            Codec("g711-noplc", ie=0.0, bpl=4.3, packetization_ms=20.0),
            Codec("g729", ie=11.0, bpl=19.0, packetization_ms=25.0),
        )
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """An E-model result and every input it came from, so a reader can check it."""

    codec: Codec
    loss_percent: float
    burst_ratio: float
    one_way_delay_ms: float
    jitter_ms: float
    #: Mouth-to-ear delay Ta the delay impairment used (ms).
    mouth_to_ear_ms: float
    #: Delay impairment, relative to no delay (Id(Ta) − Id(0)).
    delay_impairment: float
    #: Effective equipment impairment Ie,eff.
    equipment_impairment: float
    r: float
    mos: float


def codec(name: str) -> Codec:
    """The codec called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return CODECS[name]
    except KeyError:
        known = ", ".join(CODECS)
        raise ValueError(f"unknown codec {name!r}: known codecs are {known}") from None


def burst_ratio(lost: Sequence[bool]) -> float:
    """G.107 BurstR of a per-packet loss pattern in sender order (True = lost).

    BurstR is the mean length of the observed loss bursts over the mean burst length random
    loss at the same rate p would give, 1 / (1 − p): (lost / bursts) · (1 − p).  A burst is a
    maximal run of consecutive losses.  1 with no loss; the value is clamped to G.107's
    permitted range [1, 8], so loss that is spread out more evenly than random loss (which the
    formula would rate below 1) counts as random, and every packet lost (p = 1, no burst
    length to compare with) counts as random too.
    """
    total = len(lost)
    dropped = sum(lost)
    if dropped in (0, total):
        return BURST_RATIO_MIN
    bursts = sum(1 for i, gone in enumerate(lost) if gone and (i == 0 or not lost[i - 1]))
    ratio = (dropped / bursts) * (1 - dropped / total)
    return min(max(ratio, BURST_RATIO_MIN), BURST_RATIO_MAX)


def mouth_to_ear_ms(one_way_delay_ms: float, jitter_ms: float, codec: Codec) -> float:
    """Ta: network one-way delay + a jitter buffer of twice the jitter + packetisation."""
    return one_way_delay_ms + 2 * jitter_ms + codec.packetization_ms


def delay_impairment(ta_ms: float) -> float:
    """G.107 Id = Idte + Idle + Idd at mouth-to-ear delay ``ta_ms``, relative to Id(0).

    T = Ta (talker echo), Tr = 2·Ta (listener echo), defaults for everything else.
    """
    if not math.isfinite(ta_ms) or ta_ms < 0:
        raise ValueError(f"mouth-to-ear delay {ta_ms} ms must be a finite number ≥ 0")
    return _idte(ta_ms) + _idle(2 * ta_ms) + _idd(ta_ms) - _idle(0.0)


def _idte(t: float) -> float:
    """Talker echo impairment (G.107 §7.4, STMR 15 dB default: no sidetone correction)."""
    terv = _TELR - 40 * math.log10((1 + t / 10) / (1 + t / 150)) + 6 * math.exp(-0.3 * t * t)
    re = 80 + 2.5 * (terv - 14)
    half = (_RO - re) / 2
    return (half + math.sqrt(half * half + 100) - 1) * (1 - math.exp(-t))


def _idle(tr: float) -> float:
    """Listener echo impairment (G.107 §7.4)."""
    rle = 10.5 * (_WEPL + 7) * math.pow(tr + 1, -0.25)
    half = (_RO - rle) / 2
    return half + math.sqrt(half * half + 169)


def _idd(ta: float) -> float:
    """Impairment of a too-long absolute delay (G.107 §7.4, mT = 100 ms, sT = 1)."""
    if ta <= _IDD_THRESHOLD_MS:
        return 0.0
    x = math.log2(ta / _IDD_THRESHOLD_MS)
    return 25 * (math.pow(1 + x**6, 1 / 6) - 3 * math.pow(1 + (x / 3) ** 6, 1 / 6) + 2)


def equipment_impairment(codec: Codec, loss_percent: float, burst_ratio: float = 1.0) -> float:
    """Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)."""
    if not 0 <= loss_percent <= 100:
        raise ValueError(f"loss {loss_percent} % must be between 0 and 100")
    if not BURST_RATIO_MIN <= burst_ratio <= BURST_RATIO_MAX:
        raise ValueError(
            f"BurstR {burst_ratio} must be between {BURST_RATIO_MIN:g} and {BURST_RATIO_MAX:g}"
        )
    return codec.ie + (95 - codec.ie) * loss_percent / (loss_percent / burst_ratio + codec.bpl)


def r_factor(codec: Codec, *, loss_percent: float, ta_ms: float, burst_ratio: float = 1.0) -> float:
    """R = 93.2 − Id(Ta) − Ie,eff at mouth-to-ear delay ``ta_ms`` (G.107's tables use Ta)."""
    return (
        R_DEFAULT - delay_impairment(ta_ms) - equipment_impairment(codec, loss_percent, burst_ratio)
    )


def mos_from_r(r: float) -> float:
    """G.107 Annex B: MOS of a rating R, within [1, 4.5]."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def assess(
    codec: Codec,
    *,
    loss_percent: float,
    one_way_delay_ns: float,
    jitter_ns: float,
    burst_ratio: float = 1.0,
) -> Assessment:
    """R and MOS of one direction of a path.

    ``one_way_delay_ns`` is the direction's mean delay (half the round trip when the clocks
    are not synchronised: the caller decides and says so), ``jitter_ns`` its jitter; a
    negative delay (clocks that disagree) is refused with ``ValueError``, like a loss outside
    0–100 % or a BurstR outside [1, 8].
    """
    if not math.isfinite(jitter_ns) or jitter_ns < 0:
        raise ValueError(f"jitter {jitter_ns} ns must be a finite number ≥ 0")
    if not math.isfinite(one_way_delay_ns) or one_way_delay_ns < 0:
        raise ValueError(f"one-way delay {one_way_delay_ns} ns must be a finite number ≥ 0")
    delay_ms = one_way_delay_ns / _NS_PER_MS
    jitter_ms = jitter_ns / _NS_PER_MS
    ta = mouth_to_ear_ms(delay_ms, jitter_ms, codec)
    id_ = delay_impairment(ta)
    ie_eff = equipment_impairment(codec, loss_percent, burst_ratio)
    r = r_factor(codec, loss_percent=loss_percent, ta_ms=ta, burst_ratio=burst_ratio)
    return Assessment(
        codec=codec,
        loss_percent=loss_percent,
        burst_ratio=burst_ratio,
        one_way_delay_ms=delay_ms,
        jitter_ms=jitter_ms,
        mouth_to_ear_ms=ta,
        delay_impairment=id_,
        equipment_impairment=ie_eff,
        r=r,
        mos=mos_from_r(r),
    )
