"""MOS only gets worse with more loss or more delay, and always stays within [1, 4.5]."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twamp_common.mos import CODECS, Codec, assess, burst_ratio

codecs = st.sampled_from(list(CODECS.values()))
losses = st.floats(min_value=0, max_value=100)
delays = st.floats(min_value=0, max_value=5e9)
jitters = st.floats(min_value=0, max_value=1e9)
bursts = st.floats(min_value=1, max_value=8)
#: G.107's sixth powers and roots in floating point wobble by ~1e-14 between two inputs a
#: femtosecond apart: a difference this small is rounding, not MOS rising with delay.
ROUNDING = 1e-9


@given(codecs, losses, losses, delays, jitters, bursts)
def test_mos_non_increasing_in_loss(
    codec: Codec, a: float, b: float, delay: float, jitter: float, burst: float
) -> None:
    low, high = sorted((a, b))
    better = assess(
        codec, loss_percent=low, one_way_delay_ns=delay, jitter_ns=jitter, burst_ratio=burst
    )
    worse = assess(
        codec, loss_percent=high, one_way_delay_ns=delay, jitter_ns=jitter, burst_ratio=burst
    )
    assert 1 <= worse.mos <= better.mos + ROUNDING <= 4.5 + ROUNDING


@given(codecs, losses, delays, delays, jitters, bursts)
def test_mos_non_increasing_in_delay(
    codec: Codec, loss: float, a: float, b: float, jitter: float, burst: float
) -> None:
    low, high = sorted((a, b))
    better = assess(
        codec, loss_percent=loss, one_way_delay_ns=low, jitter_ns=jitter, burst_ratio=burst
    )
    worse = assess(
        codec, loss_percent=loss, one_way_delay_ns=high, jitter_ns=jitter, burst_ratio=burst
    )
    assert 1 <= worse.mos <= better.mos + ROUNDING <= 4.5 + ROUNDING
    assert worse.r <= better.r + ROUNDING


@given(codecs, losses, delays, jitters, jitters)
def test_mos_non_increasing_in_jitter(
    codec: Codec, loss: float, delay: float, a: float, b: float
) -> None:
    low, high = sorted((a, b))
    better = assess(codec, loss_percent=loss, one_way_delay_ns=delay, jitter_ns=low)
    worse = assess(codec, loss_percent=loss, one_way_delay_ns=delay, jitter_ns=high)
    assert worse.mos <= better.mos + ROUNDING


@given(st.lists(st.booleans(), max_size=300))
def test_burst_ratio_within_g107_range(pattern: list[bool]) -> None:
    assert 1 <= burst_ratio(pattern) <= 8
