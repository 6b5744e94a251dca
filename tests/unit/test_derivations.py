"""The global gate on key derivations: a short queue and a share of one core."""

from __future__ import annotations

import asyncio
import time

from twamp_server.derivations import Derivations


def _spin(seconds: float) -> str:
    """Burn ``seconds`` of this thread's CPU time, like a derivation does."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return "derived"


def test_cpu_spent_beyond_the_burst_is_refused_until_paid_back() -> None:
    gate = Derivations(waiting=4, share=0.5, burst=0.05)
    now = time.monotonic()
    assert gate.refusal(now) is None
    assert asyncio.run(gate.run(_spin, 0.1)) == "derived"
    assert gate.refusal(now) == "key derivations above 50% of a core"
    assert gate.refusal(now + 0.3) is None  # 0.1 s of debt, 0.05 s of it paid back at 50 %


def test_no_more_than_waiting_derivations_are_queued() -> None:
    async def scenario() -> list[str | None]:
        gate = Derivations(waiting=2, share=1.0, burst=10.0)
        now = time.monotonic()
        first = asyncio.ensure_future(gate.run(_spin, 0.05))
        second = asyncio.ensure_future(gate.run(_spin, 0.05))
        await asyncio.sleep(0)  # both are now queued or running
        seen = [gate.refusal(now)]
        await asyncio.gather(first, second)
        seen.append(gate.refusal(now))
        return seen

    assert asyncio.run(scenario()) == ["2 key derivations already waiting", None]
