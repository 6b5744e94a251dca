"""Property tests: NTP conversion is exact to the nanosecond across eras, and the Error
Estimate round-trips and never claims better accuracy than it was given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twamp_common.timestamp import (
    ErrorEstimate,
    ns_to_ntp,
    ns_to_ntp_interval,
    ntp_interval_to_ns,
    ntp_to_ns,
)

# 1968-01-20 .. 2104-02-26: the span one 32-bit seconds field covers with our era pivot
# (NTP second 2^31 up to 2^31 + 2^32, less the 1900→1970 offset).
unix_ns = st.integers(-61_505_152 * 10**9, 4_233_462_144 * 10**9 - 1)


@given(unix_ns)
def test_ns_round_trip_is_exact(value: int) -> None:
    assert ntp_to_ns(ns_to_ntp(value)) == value


@given(unix_ns)
def test_ntp_fits_64_bits(value: int) -> None:
    assert 0 <= ns_to_ntp(value) < 2**64


@given(unix_ns, unix_ns)
def test_order_is_kept_within_an_era(a: int, b: int) -> None:
    if a <= b:
        assert ntp_to_ns(ns_to_ntp(a)) <= ntp_to_ns(ns_to_ntp(b))


@given(st.integers(0, (2**32 - 1) * 10**9))
def test_interval_round_trip(value: int) -> None:
    assert ntp_interval_to_ns(ns_to_ntp_interval(value)) == value


@given(st.integers(0, 0xFFFF))
def test_error_estimate_wire_round_trip(value: int) -> None:
    assert ErrorEstimate.from_wire(value).to_wire() == value


@given(st.integers(-10, 2**40), st.booleans())
def test_error_estimate_bounds(error_ns: int, synchronized: bool) -> None:
    estimate = ErrorEstimate.from_error_ns(error_ns, synchronized=synchronized)
    assert estimate.valid
    assert estimate.synchronized is synchronized
    assert estimate.error_ns >= error_ns
