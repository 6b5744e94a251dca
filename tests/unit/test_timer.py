"""The engine's timerfd: what it relies on to skip reading the expiry count at each wake-up."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator

import pytest
from twamp_client.timer import Timer


@pytest.fixture
def timer() -> Iterator[tuple[Timer, select.epoll]]:
    armed = Timer()
    poller = select.epoll()
    poller.register(armed.fileno(), select.EPOLLIN)
    yield armed, poller
    poller.close()
    armed.close()


def test_arming_again_clears_an_expiry_left_unread(timer: tuple[Timer, select.epoll]) -> None:
    clock, poller = timer
    clock.arm(time.monotonic_ns())  # in the past: fires at once
    assert poller.poll(1.0) == [(clock.fileno(), select.EPOLLIN)]
    clock.fired()
    clock.arm(time.monotonic_ns() + 10**9)
    assert poller.poll(0) == []


def test_acknowledge_reads_a_fired_timer(timer: tuple[Timer, select.epoll]) -> None:
    clock, poller = timer
    clock.arm(time.monotonic_ns())
    assert poller.poll(1.0)
    clock.fired()
    clock.acknowledge()
    assert poller.poll(0) == []
    assert clock.armed_at is None


def test_a_timer_not_acknowledged_stays_readable(timer: tuple[Timer, select.epoll]) -> None:
    """Why the engine acknowledges before waiting without a timeout."""
    clock, poller = timer
    clock.arm(time.monotonic_ns())
    assert poller.poll(1.0)
    clock.fired()
    assert poller.poll(0) == [(clock.fileno(), select.EPOLLIN)]
