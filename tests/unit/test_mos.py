"""The E-model against the standard's own figures and hand-computed G.107 values."""

from __future__ import annotations

import pytest
from twamp_common import mos
from twamp_common.mos import CODECS, assess, burst_ratio, mos_from_r, r_factor

#: (loss %, (R, MOS) for g711 with PLC, g711 without PLC, g729A), Ta = 0, random loss: the
#: G.107/G.113 values every E-model table publishes.
GOLDEN_LOSS = [
    (0, (93.20, 4.41), (93.20, 4.41), (82.20, 4.10)),
    (1, (89.56, 4.33), (75.28, 3.83), (78.00, 3.95)),
    (2, (86.19, 4.23), (63.04, 3.26), (74.20, 3.79)),
    (5, (77.42, 3.92), (42.12, 2.17), (64.70, 3.34)),
    (10, (66.13, 3.41), (26.77, 1.48), (53.23, 2.75)),
]


@pytest.mark.parametrize(("loss", "plc", "noplc", "g729"), GOLDEN_LOSS)
def test_loss_golden_values(
    loss: float, plc: tuple[float, float], noplc: tuple[float, float], g729: tuple[float, float]
) -> None:
    for name, (r_expected, mos_expected) in (("g711", plc), ("g711-noplc", noplc), ("g729", g729)):
        r = r_factor(CODECS[name], loss_percent=loss, ta_ms=0)
        assert round(r, 2) == r_expected, name
        assert round(mos_from_r(r), 2) == mos_expected, name


#: G.711+PLC, no loss, by G.107 §7.4's full Id (Idte with TELR 65 dB and T = Ta, Idle with
#: WEPL 110 dB and Tr = 2 Ta, Idd), worked by hand from the formulas:
#: Ta 150: Idte 2.812, Idle 0.841 − 0.149, Idd 0.164 → R 89.53.
#: Ta 300: Idte 4.834, Idle 1.094 − 0.149, Idd 14.761 → R 72.66.
GOLDEN_DELAY = [
    (100, 90.66, 4.355),
    (150, 89.53, 4.327),
    (200, 85.80, 4.223),
    (300, 72.66, 3.719),
    (400, 62.24, 3.215),
]


@pytest.mark.parametrize(("ta", "r_expected", "mos_expected"), GOLDEN_DELAY)
def test_delay_golden_values(ta: float, r_expected: float, mos_expected: float) -> None:
    r = r_factor(CODECS["g711"], loss_percent=0, ta_ms=ta)
    assert round(r, 2) == r_expected
    assert round(mos_from_r(r), 3) == mos_expected


def test_idd_is_zero_up_to_100_ms_and_grows_after() -> None:
    assert mos._idd(100) == 0
    assert mos._idd(100.5) > 0
    # X = 1: 25 · ((2)^(1/6) − 3 · (1 + 3^−6)^(1/6) + 2)
    assert mos._idd(200) == pytest.approx(25 * (2 ** (1 / 6) - 3 * (1 + 3**-6) ** (1 / 6) + 2))


def test_full_id_stays_close_to_the_cole_rosenbluth_approximation() -> None:
    """monitoring.md's simplified-Id figures: within 0.01 MOS of the full formula."""
    for ta, simplified in ((100, 4.358), (200, 4.226), (300, 3.712)):
        full = mos_from_r(r_factor(CODECS["g711"], loss_percent=0, ta_ms=ta))
        assert abs(full - simplified) < 0.01


def test_mos_from_r_annex_b() -> None:
    assert mos_from_r(-5) == 1
    assert mos_from_r(0) == 1
    assert mos_from_r(3) == 1  # the polynomial gives 0.97 here
    assert mos_from_r(50) == pytest.approx(1 + 1.75 + 50 * -10 * 50 * 7e-6)
    assert mos_from_r(100) == 4.5
    assert mos_from_r(120) == 4.5


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("", 1.0),
        ("....", 1.0),
        ("XXXX", 1.0),  # everything lost: no burst length to compare
        ("X...X...", 1.0),  # isolated losses at p = 1/4: 1 · 3/4, below 1, clamped
        ("XX......", 2 * 6 / 8),  # one burst of 2, p = 1/4 → 1.5
        ("XXX.....XXX.....", 3 * 10 / 16),
        ("X" * 20 + "." * 980, 8.0),  # 20 · 0.98 = 19.6, above G.107's range
    ],
)
def test_burst_ratio(pattern: str, expected: float) -> None:
    assert burst_ratio([c == "X" for c in pattern]) == pytest.approx(expected)


def test_burst_raises_impairment() -> None:
    random = r_factor(CODECS["g711"], loss_percent=5, ta_ms=0)
    bursty = r_factor(CODECS["g711"], loss_percent=5, ta_ms=0, burst_ratio=2)
    assert bursty < random
    # Ie,eff = 95 · 5 / (5/2 + 25.1)
    assert bursty == pytest.approx(93.2 - 95 * 5 / 27.6)


def test_assess_builds_ta_from_delay_jitter_and_packetisation() -> None:
    result = assess(
        CODECS["g729"], loss_percent=1, one_way_delay_ns=80e6, jitter_ns=5e6, burst_ratio=1.5
    )
    assert result.mouth_to_ear_ms == pytest.approx(80 + 10 + 25)
    assert result.equipment_impairment == pytest.approx(11 + 84 * 1 / (1 / 1.5 + 19))
    assert result.r == pytest.approx(93.2 - result.delay_impairment - result.equipment_impairment)
    assert result.mos == mos_from_r(result.r)
    assert (result.one_way_delay_ms, result.jitter_ms, result.burst_ratio) == (80, 5, 1.5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"loss_percent": -1}, "loss -1 %"),
        ({"loss_percent": 101}, "loss 101 %"),
        ({"one_way_delay_ns": -1}, "one-way delay -1 ns"),
        ({"one_way_delay_ns": float("nan")}, "one-way delay nan ns"),
        ({"jitter_ns": -2}, "jitter -2 ns"),
        ({"burst_ratio": 0.5}, "BurstR 0.5"),
        ({"burst_ratio": 9}, "BurstR 9"),
    ],
)
def test_bad_inputs_are_refused(settings: dict[str, float], message: str) -> None:
    values = {"loss_percent": 0.0, "one_way_delay_ns": 0.0, "jitter_ns": 0.0} | settings
    with pytest.raises(ValueError, match=message):
        assess(CODECS["g711"], **values)


def test_unknown_codec_names_the_known_ones() -> None:
    assert mos.codec("g729") is CODECS["g729"]
    with pytest.raises(ValueError, match="g711, g711-noplc, g729"):
        mos.codec("opus")
