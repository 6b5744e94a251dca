"""The sender's Access Report retransmission timer (RFC 8972 §4.6), against real reflections."""

from __future__ import annotations

import pytest
from twamp_common.stamp import build_sender_packet, parse_reply
from twamp_common.stamp_access_report import (
    DEFAULT_RETRANSMISSIONS,
    DEFAULT_TIMEOUT_NS,
    AccessReportTimer,
    Due,
)
from twamp_common.stamp_reflector import ReflectorConfig, reflect
from twamp_common.stamp_tlv import AccessId, AccessReport, ReturnCode
from twamp_common.timestamp import ErrorEstimate

EE = ErrorEstimate(synchronized=False, scale=8, multiplier=1)
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
DOWN = AccessReport(AccessId.NON_THREE_GPP, ReturnCode.NETWORK_UNAVAILABLE)
UP = AccessReport(AccessId.NON_THREE_GPP, ReturnCode.NETWORK_AVAILABLE)


def reflected(report: AccessReport, *, extensions: bool = True) -> bytes:
    sent = build_sender_packet(1, T0, error_estimate=EE, tlvs=[report])
    config = ReflectorConfig(EE, extensions=extensions)
    return reflect(sent, t2_ns=T0, config=config).finish(T0)


def test_defaults_are_three_seconds_and_four_retransmissions() -> None:
    assert (DEFAULT_TIMEOUT_NS, DEFAULT_RETRANSMISSIONS) == (3 * S, 4)
    timer = AccessReportTimer()
    timer.sent(DOWN, T0)
    assert timer.deadline == T0 + 3 * S
    assert timer.poll(T0 + 3 * S - 1) is Due.NOTHING
    now = T0
    for count in range(1, 5):
        now += 3 * S
        assert timer.poll(now) is Due.RETRANSMIT
        assert timer.retransmitted == count
        assert timer.poll(now) is Due.NOTHING  # nothing until the retransmission is sent
        timer.sent(DOWN, now)
    assert timer.poll(now + 3 * S) is Due.ABORTED
    assert timer.deadline is None
    assert timer.poll(now + 30 * S) is Due.NOTHING


def test_the_echo_of_the_report_disarms_the_timer() -> None:
    timer = AccessReportTimer(timeout_ns=S, retransmissions=1)
    timer.sent(DOWN, T0)
    assert not timer.received(parse_reply(reflected(UP)))  # not the report pending
    assert timer.received(parse_reply(reflected(DOWN)))
    assert timer.deadline is None
    assert timer.poll(T0 + 10 * S) is Due.NOTHING


def test_an_echo_the_reflector_did_not_understand_does_not_disarm() -> None:
    timer = AccessReportTimer(timeout_ns=S, retransmissions=0)
    timer.sent(DOWN, T0)
    assert not timer.received(parse_reply(reflected(DOWN, extensions=False)))  # U set
    assert timer.poll(T0 + S) is Due.ABORTED


def test_a_new_report_restarts_the_count() -> None:
    timer = AccessReportTimer(timeout_ns=S, retransmissions=1)
    timer.sent(DOWN, T0)
    assert timer.poll(T0 + S) is Due.RETRANSMIT
    timer.sent(UP, T0 + S)
    assert timer.retransmitted == 0
    assert timer.poll(T0 + 2 * S) is Due.RETRANSMIT


def test_the_figures_are_checked() -> None:
    with pytest.raises(ValueError):
        AccessReportTimer(timeout_ns=0)
    with pytest.raises(ValueError):
        AccessReportTimer(retransmissions=-1)
