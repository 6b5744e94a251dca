"""Known answers for NTP timestamps, the Error Estimate and the kernel clock state.

The expected values are worked out by hand from RFC 4656 §4.1.2 (seconds since 1900 and a
32-bit binary fraction; Error Estimate = Multiplier × 2^(Scale − 32) s with S and Z bits).
"""

from __future__ import annotations

import pytest
from twamp_common.clock import ClockState, read_clock_state
from twamp_common.timestamp import (
    NTP_UNIX_OFFSET,
    ErrorEstimate,
    ns_to_ntp,
    ns_to_ntp_interval,
    ntp_interval_to_ns,
    ntp_to_ns,
)


def test_unix_epoch_is_ntp_2208988800() -> None:
    assert ns_to_ntp(0) == 2_208_988_800 << 32
    assert ntp_to_ns(2_208_988_800 << 32) == 0


def test_half_a_second_is_fraction_0x80000000() -> None:
    assert ns_to_ntp(500_000_000) == (NTP_UNIX_OFFSET << 32) | 0x8000_0000
    assert ntp_to_ns((NTP_UNIX_OFFSET << 32) | 0x8000_0000) == 500_000_000


def test_one_nanosecond_rounds_to_fraction_4() -> None:
    # 1e-9 s × 2^32 = 4.29…, nearest integer 4
    assert ns_to_ntp(1) & 0xFFFF_FFFF == 4


def test_last_nanosecond_of_a_second_does_not_carry() -> None:
    # 0.999999999 s × 2^32 = 4294967291.7, nearest 0xFFFFFFFC: still within the same second
    assert ns_to_ntp(10**9 - 1) == (NTP_UNIX_OFFSET << 32) | 0xFFFF_FFFC


def test_era_1_after_2036() -> None:
    # 2036-02-07T06:28:16Z is NTP second 2^32, which wraps to 0 on the wire.
    wrap_ns = ((1 << 32) - NTP_UNIX_OFFSET) * 10**9
    assert ns_to_ntp(wrap_ns) == 0
    assert ntp_to_ns(0) == wrap_ns
    assert ntp_to_ns(ns_to_ntp(wrap_ns + 123)) == wrap_ns + 123


def test_intervals() -> None:
    assert ns_to_ntp_interval(2_500_000_000) == 0x0000_0002_8000_0000
    assert ntp_interval_to_ns(0x0000_0002_8000_0000) == 2_500_000_000
    with pytest.raises(ValueError, match="negative"):
        ns_to_ntp_interval(-1)


def test_error_estimate_wire_layout() -> None:
    estimate = ErrorEstimate(synchronized=True, scale=0x15, multiplier=0x2A)
    assert estimate.to_wire() == 0b1_0_010101_00101010
    assert ErrorEstimate.from_wire(0x9588) == ErrorEstimate(True, 0x15, 0x88)
    assert ErrorEstimate.from_wire(0x4001) == ErrorEstimate(False, 0, 1, ptp=True)


def test_error_estimate_value() -> None:
    # Multiplier 1, Scale 32 => exactly one second.
    assert ErrorEstimate(True, 32, 1).error_ns == 1_000_000_000
    # Multiplier 3, Scale 0 => 3 × 2^-32 s = 0.698 ns, rounded up to 1 ns.
    assert ErrorEstimate(True, 0, 3).error_ns == 1


@pytest.mark.parametrize("error_ns", [1, 999, 1_000, 65_000, 1_000_000, 16_000_000_000])
def test_error_estimate_never_understates(error_ns: int) -> None:
    estimate = ErrorEstimate.from_error_ns(error_ns, synchronized=False)
    assert estimate.valid
    assert estimate.error_ns >= error_ns
    # and is tight: within one step of the multiplier at that scale
    assert estimate.error_ns <= error_ns * (1 + 1 / 128) + 1


def test_multiplier_zero_is_invalid() -> None:
    assert not ErrorEstimate.from_wire(0x8000).valid
    assert ErrorEstimate.from_error_ns(0, synchronized=True).multiplier >= 1


def test_out_of_range_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        ErrorEstimate(True, 64, 1)
    with pytest.raises(ValueError, match="multiplier"):
        ErrorEstimate(True, 0, 256)


def test_clock_state_reads_the_kernel() -> None:
    state = read_clock_state()
    assert isinstance(state, ClockState)
    assert state.max_error_ns > 0
    estimate = state.error_estimate()
    assert estimate.synchronized is state.synchronized
    assert estimate.error_ns >= state.max_error_ns
