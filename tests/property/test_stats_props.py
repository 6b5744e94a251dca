"""Property tests of the statistics: exact, never negative, duplicates counted once."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twamp_common.stats import Reply, distribution, summarize

delay = st.integers(0, 10**9)
offset = st.integers(-(10**10), 10**10)


@st.composite
def runs(draw: st.DrawFn) -> tuple[int, list[Reply]]:
    """A run of ``sent`` packets: some lost, some duplicated, arrivals shuffled."""
    sent = draw(st.integers(0, 40))
    answered = draw(st.lists(st.integers(0, max(sent - 1, 0)), unique=True)) if sent else []
    clock_offset = draw(offset)
    replies = []
    for reflector_seq, seq in enumerate(sorted(answered)):
        t1 = 1_700_000_000 * 10**9 + seq * 10**7
        t2 = t1 + draw(delay) + clock_offset
        t3 = t2 + draw(st.integers(0, 10**6))
        t4 = t3 - clock_offset + draw(delay)
        reply = Reply(seq, reflector_seq, t1, t2, t3, t4, draw(st.integers(1, 255)))
        replies.append(reply)
        if draw(st.booleans()) and draw(st.booleans()):
            replies.append(reply)  # duplicated on the way back
    return sent, draw(st.permutations(replies))


@given(runs())
def test_summary_invariants(run: tuple[int, list[Reply]]) -> None:
    sent, replies = run
    summary = summarize(sent, replies, sender_synchronized=True, reflector_synchronized=True)
    unique = {reply.sender_seq for reply in replies}
    assert summary.received == len(unique)
    assert summary.lost == sent - len(unique) >= 0
    assert summary.duplicates == len(replies) - len(unique)
    assert 0 <= summary.loss_percent <= 100
    assert 0 <= summary.reordered <= max(len(unique) - 1, 0)
    if summary.forward_lost is not None:
        assert summary.reverse_lost is not None
        assert summary.forward_lost >= 0 and summary.reverse_lost >= 0
    placed = (summary.forward_lost or 0) + (summary.reverse_lost or 0)
    assert 0 <= summary.unplaced_lost == summary.lost - placed


@given(st.lists(st.sampled_from(("ok", "out", "back")), max_size=40), st.booleans())
def test_the_loss_split_is_what_the_path_did(fates: list[str], duplicated: bool) -> None:
    """Each packet answered, lost on the way out, or reflected and its reply lost on the way
    back; a stateful reflector numbers what it received.  Before the last packet answered the
    split is exact; after it nothing can be placed."""
    replies, number = [], 0
    for seq, fate in enumerate(fates):
        if fate == "out":
            continue
        if fate == "ok":
            t1 = 1_700_000_000 * 10**9 + seq * 10**7
            reply = Reply(seq, number, t1, t1 + 10, t1 + 20, t1 + 30, 64)
            replies += [reply, reply] if duplicated else [reply]
        number += 1
    summary = summarize(len(fates), replies, sender_synchronized=True, reflector_synchronized=True)
    if "ok" not in fates:
        assert (summary.forward_lost, summary.reverse_lost) == (None, None)
        assert summary.unplaced_lost == len(fates)
        return
    last = max(seq for seq, fate in enumerate(fates) if fate == "ok")
    assert summary.forward_lost == fates[:last].count("out")
    assert summary.reverse_lost == fates[:last].count("back")
    assert summary.unplaced_lost == len(fates) - 1 - last


@given(runs())
def test_round_trip_is_outbound_plus_inbound_whatever_the_clock_offset(
    run: tuple[int, list[Reply]],
) -> None:
    _sent, replies = run
    for reply in replies:
        assert reply.round_trip == reply.outbound + reply.inbound
        assert reply.round_trip >= 0  # built from non-negative path delays


@given(st.lists(st.integers(-(10**12), 10**12), min_size=1))
def test_distribution_orders_its_figures(values: list[int]) -> None:
    figures = distribution(values)
    assert figures is not None
    assert figures.min <= figures.p95 <= figures.p99 <= figures.max
    assert figures.min <= figures.median <= figures.max
    assert figures.min - 1e-6 * abs(figures.min) <= figures.avg
    assert figures.avg <= figures.max + 1e-6 * abs(figures.max)
    assert figures.stddev >= 0
    assert figures.p95 in values and figures.p99 in values


@given(st.lists(st.integers(-(10**12), 2 * 10**18), min_size=1))
def test_distribution_agrees_with_the_statistics_module(values: list[int]) -> None:
    """The integer-sum figures are the exact ones the statistics module works out with
    fractions, to the last few bits of a float (ns since 1970 included)."""
    figures = distribution(values)
    assert figures is not None
    assert figures.avg == pytest.approx(statistics.fmean(values), rel=1e-15, abs=1e-9)
    assert figures.stddev == pytest.approx(statistics.pstdev(values), rel=1e-12, abs=1e-6)
    assert figures.median == statistics.median(values)


@st.composite
def skewed_runs(draw: st.DrawFn) -> list[Reply]:
    """First replies from a reflector whose clock is off by up to 10 s and that sometimes
    swaps its stamps or claims more time inside than the round trip took."""
    clock_offset = draw(offset)
    replies = []
    for seq in range(draw(st.integers(1, 40))):
        t1 = 1_700_000_000 * 10**9 + seq * 10**7
        t2 = t1 + draw(delay) + clock_offset
        t3 = t2 + draw(st.integers(0, 10**6))
        t4 = t3 - clock_offset + draw(delay)
        kind = draw(st.sampled_from(["true", "true", "swapped", "too long inside"]))
        if kind == "swapped":
            t2, t3 = t3 + 1, t2
        elif kind == "too long inside":
            t3 = t2 + (t4 - t1) + draw(st.integers(1, 10**9))
        replies.append(Reply(seq, seq, t1, t2, t3, t4, 64))
    return replies


@given(skewed_runs())
def test_round_trip_average_is_outbound_plus_inbound_over_the_same_packets(
    replies: list[Reply],
) -> None:
    summary = summarize(
        len(replies), replies, sender_synchronized=True, reflector_synchronized=True
    )
    counted = [reply for reply in replies if reply.consistent]
    assert summary.inconsistent == len(replies) - len(counted)
    if not counted:
        assert summary.round_trip is summary.outbound is summary.inbound is None
        return
    rt, out, back = summary.round_trip, summary.outbound, summary.inbound
    assert rt is not None and out is not None and back is not None
    # The same packets in all three: their count and their exact sums.
    assert rt.count == out.count == back.count == len(counted)
    rt_sum = sum(reply.round_trip for reply in counted)
    out_sum = sum(reply.outbound for reply in counted)
    back_sum = sum(reply.inbound for reply in counted)
    assert rt_sum == out_sum + back_sum
    # Each average is that sum over that count, correctly rounded once: as fractions of
    # integer nanoseconds the round trip's is exactly the sum of the other two, and as floats
    # they agree to the rounding of one addition.
    n = len(counted)
    assert (rt.avg, out.avg, back.avg) == (rt_sum / n, out_sum / n, back_sum / n)
    assert Fraction(rt_sum, n) == Fraction(out_sum, n) + Fraction(back_sum, n)
    assert abs(rt.avg - (out.avg + back.avg)) <= 2 * math.ulp(max(abs(out.avg), abs(back.avg)))
