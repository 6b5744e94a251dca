"""Traffic models: IP sizes to padding, exact gaps, the g729 floor, bad parameters."""

from __future__ import annotations

import pytest
from twamp_common.schedule import Cycle, Periodic
from twamp_common.test_packets import REFLECTOR_HEADER_SIZE, SENDER_HEADER_SIZE
from twamp_common.traffic import IMIX, schedule, smallest_size


def ip_size(padding: int, *, ipv6: bool, authenticated: bool) -> int:
    return (40 if ipv6 else 20) + 8 + SENDER_HEADER_SIZE[authenticated] + padding


@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("authenticated", [False, True])
def test_g711_is_200_octets_every_20_ms(ipv6: bool, authenticated: bool) -> None:
    plan = schedule("g711", ipv6=ipv6, authenticated=authenticated)
    assert isinstance(plan, Periodic)
    assert plan.interval_ns == 20_000_000
    assert ip_size(plan.padding(0), ipv6=ipv6, authenticated=authenticated) == 200


def test_g729_uses_the_smallest_size_whose_reply_is_as_long() -> None:
    plan = schedule("g729", ipv6=False, authenticated=False)
    assert ip_size(plan.padding(0), ipv6=False, authenticated=False) == 20 + 8 + 41 == 69
    # The reply: the reflector's header plus the sender's padding beyond the symmetric 27.
    reply = REFLECTOR_HEADER_SIZE[False] + plan.padding(0) - 27
    assert reply + 28 == 69
    assert smallest_size(ipv6=True, authenticated=True) == 40 + 8 + 112
    secure = schedule("g729", ipv6=True, authenticated=True)
    assert ip_size(secure.padding(0), ipv6=True, authenticated=True) == 160


def test_cbr_gap_is_exact_in_nanoseconds() -> None:
    plan = schedule("cbr", ipv6=False, authenticated=False, bandwidth=64_000, size=200)
    assert plan.gap(0) == 25_000_000  # 1600 bits at 64 kbit/s
    # 800 bits at 30 kbit/s: 26 666 666.67 ns, rounded once.
    thirds = schedule("cbr", ipv6=False, authenticated=False, bandwidth=30_000, size=100)
    assert thirds.gap(0) == 26_666_667


def test_imix_cycles_7_4_1_paced_to_the_bandwidth() -> None:
    plan = schedule("imix", ipv6=False, authenticated=False, bandwidth=10_000_000)
    assert isinstance(plan, Cycle)
    sizes = [ip_size(plan.padding(seq), ipv6=False, authenticated=False) for seq in range(12)]
    assert sizes == [max(octets, 69) for octets in IMIX]
    mean_bits = sum(sizes) * 8 / 12
    assert plan.gap(0) == round(mean_bits * 1e9 / 10_000_000)


@pytest.mark.parametrize(
    ("model", "bandwidth", "size", "message"),
    [
        ("cbr", 1, 1500, "too low"),
        ("cbr", 64_000, 40, "outside 69 to 65535"),
        ("cbr", None, 200, "needs bandwidth and size"),
        ("imix", None, None, "imix needs bandwidth"),
        ("cbr", 0, 200, "not positive"),
        ("g712", None, None, "unknown traffic model"),
    ],
)
def test_bad_parameters_are_value_errors(
    model: str, bandwidth: int | None, size: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(model, ipv6=False, authenticated=False, bandwidth=bandwidth, size=size)
