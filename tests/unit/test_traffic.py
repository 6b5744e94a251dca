"""Traffic models as schedules: sizes (IP and UDP headers included) and exact intervals."""

from __future__ import annotations

import pytest
from twamp_common.schedule import Cycle, Periodic
from twamp_common.traffic import IMIX_CYCLE, ModelError, TrafficModel, parse_bandwidth, schedule

MS = 1_000_000


def ip_sizes(model: TrafficModel, ip_version: int = 4, authenticated: bool = False) -> list[int]:
    plan = schedule(model, ip_version=ip_version, authenticated=authenticated)
    header = {4: 28, 6: 48}[ip_version] + (48 if authenticated else 14)
    return [header + plan.padding(k) for k in range(12)]


def test_g711_is_200_octets_every_20_ms() -> None:
    plan = schedule(TrafficModel("g711"), ip_version=4, authenticated=False)
    assert isinstance(plan, Periodic) and plan.gap(0) == 20 * MS
    assert set(ip_sizes(TrafficModel("g711"))) == {200}
    assert set(ip_sizes(TrafficModel("g711"), 6, True)) == {200}


def test_g729_takes_the_smallest_size_that_holds_the_reply() -> None:
    assert set(ip_sizes(TrafficModel("g729"))) == {69}  # 20 + 8 + 41
    assert set(ip_sizes(TrafficModel("g729"), 6)) == {89}  # 40 + 8 + 41
    assert set(ip_sizes(TrafficModel("g729"), 4, True)) == {140}  # 20 + 8 + 112


def test_cbr_interval_is_exact_in_nanoseconds() -> None:
    plan = schedule(
        TrafficModel("cbr", bandwidth=64_000, size=200), ip_version=4, authenticated=False
    )
    assert plan.gap(0) == 25 * MS  # 1600 bits at 64 kbit/s
    odd = schedule(TrafficModel("cbr", bandwidth=3, size=100), ip_version=4, authenticated=False)
    assert odd.gap(0) == 266_666_666_667  # 800 bits at 3 bit/s, rounded to the nearest ns


def test_imix_cycles_7_4_1_at_the_mean_rate() -> None:
    plan = schedule(TrafficModel("imix", bandwidth=1_000_000), ip_version=4, authenticated=False)
    assert isinstance(plan, Cycle)
    assert ip_sizes(TrafficModel("imix", bandwidth=1_000_000)) == list(IMIX_CYCLE)
    assert plan.gap(0) == round(1e9 * 34_352 / (1_000_000 * 12))
    # Over IPv6 the 70-octet packets cannot hold the reply: they grow to 89.
    assert min(ip_sizes(TrafficModel("imix", bandwidth=1_000_000), 6)) == 89


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": "cbr", "size": 200}, "needs a bandwidth"),
        ({"name": "cbr", "bandwidth": 1000}, "needs a size"),
        ({"name": "imix", "bandwidth": 0}, "needs a bandwidth"),
        ({"name": "opus"}, "is not one of"),
        ({"name": "cbr", "bandwidth": 1000, "size": 70_000}, "outside"),
    ],
)
def test_bad_models_are_refused(model: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ModelError, match=message):
        TrafficModel(**model)


def test_a_bandwidth_too_low_for_one_packet_an_hour_is_an_error() -> None:
    with pytest.raises(ModelError, match="too low for the cbr model"):
        schedule(TrafficModel("cbr", bandwidth=1, size=1500), ip_version=4, authenticated=False)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("64000", 64_000),
        ("64k", 64_000),
        ("2.5M", 2_500_000),
        (" 1 G bit/s ", 10**9),
        ("100kbps", 100_000),
        ("100G", 10**11),
        ("1.6", 2),  # rounded to a whole bit/s
    ],
)
def test_a_bandwidth_reads_decimal_units(text: str, rate: int) -> None:
    assert parse_bandwidth(text) == rate


@pytest.mark.parametrize(
    ("text", "reason"),
    [("fast", "not a bit rate"), ("-64k", "not a bit rate"), ("2T", "not a bit rate"),
     ("1e6", "not a bit rate"), ("0.4", "out of range"), ("101G", "out of range")],
)  # fmt: skip
def test_a_bandwidth_that_is_no_rate_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ModelError, match=reason):
        parse_bandwidth(text)
