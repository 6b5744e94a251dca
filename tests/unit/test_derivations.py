"""The global gate on key derivations: a short queue, a share of one core, turns at random."""

from __future__ import annotations

import asyncio
import time

import pytest
from twamp_server.derivations import DerivationRefusedError, Derivations


def _spin(seconds: float) -> str:
    """Burn ``seconds`` of this thread's CPU time, like a derivation does."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return "derived"


def test_cpu_spent_beyond_the_burst_holds_the_next_until_paid_back() -> None:
    async def scenario() -> tuple[str, float]:
        gate = Derivations(share=0.5, burst=0.05)
        # 0.3 s of debt, of which 0.15 s are paid back by its end: 0.1 s over the burst.
        assert await gate.run(_spin, 0.3) == "derived"
        begun = time.monotonic()
        second = await gate.run(_spin, 0.0)
        return second, time.monotonic() - begun

    second, waited = asyncio.run(scenario())
    assert second == "derived"
    assert 0.15 < waited < 0.6  # 0.1 s over the burst, paid back at half a core: 0.2 s


def test_a_wait_longer_than_the_patience_is_refused_without_deriving() -> None:
    ran: list[float] = []

    def derive() -> str:
        ran.append(time.monotonic())
        return "derived"

    async def scenario() -> str:
        gate = Derivations(share=0.5, burst=0.0, patience=0.05)
        await gate.run(_spin, 0.2)  # 0.4 s before the next may start
        with pytest.raises(DerivationRefusedError) as refused:
            await gate.run(derive)
        return refused.value.reason

    assert "no turn for a key derivation within 0.05 s" in asyncio.run(scenario())
    assert ran == []


def test_no_more_than_running_derive_and_no_more_than_waiting_wait() -> None:
    async def scenario() -> tuple[list[str], str]:
        gate = Derivations(running=2, waiting=1, share=1.0, burst=10.0)
        first = asyncio.ensure_future(gate.run(_spin, 0.05))
        second = asyncio.ensure_future(gate.run(_spin, 0.05))
        third = asyncio.ensure_future(gate.run(_spin, 0.0))  # waits for a turn
        await asyncio.sleep(0)
        with pytest.raises(DerivationRefusedError) as refused:
            await gate.run(_spin, 0.0)  # the waiting room is full
        return list(await asyncio.gather(first, second, third)), refused.value.reason

    results, reason = asyncio.run(scenario())
    assert results == ["derived"] * 3  # the one that waited had its turn
    assert reason == "2 key derivations already running or queued, and 1 set-ups waiting already"


def test_a_freed_turn_goes_to_the_one_chosen_among_those_waiting() -> None:
    """Not to whoever asks first once it frees (a flood retrying at once would)."""
    order: list[str] = []

    def derive(name: str) -> None:
        order.append(name)

    async def scenario() -> None:
        # choose: always the last to arrive, to show the choice decides, not arrival.
        gate = Derivations(running=1, share=1.0, burst=10.0, choose=lambda n: n - 1)
        busy = asyncio.ensure_future(gate.run(_spin, 0.05))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(gate.run(derive, name)) for name in ("a", "b", "c")]
        await asyncio.gather(busy, *waiting)

    asyncio.run(scenario())
    assert order == ["c", "b", "a"]


def test_a_set_up_that_stops_waiting_gives_its_place_back() -> None:
    async def scenario() -> str:
        gate = Derivations(running=1, waiting=1, share=1.0, burst=10.0)
        busy = asyncio.ensure_future(gate.run(_spin, 0.05))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(gate.run(_spin, 0.0))
        await asyncio.sleep(0)
        gone.cancel()  # its connection closed while it waited
        await asyncio.gather(gone, return_exceptions=True)
        await busy
        return await gate.run(lambda: "derived")  # room, and no derivation counted twice

    assert asyncio.run(scenario()) == "derived"
