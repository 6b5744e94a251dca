"""The statistics on crafted runs: loss in each direction, duplicates, reordering, bad clocks."""

from __future__ import annotations

import pytest
from twamp_common.stats import Reply, distribution, ipdv, rfc3550_jitter, summarize

MS = 1_000_000
BASE = 1_700_000_000 * 10**9


def reply(seq: int, reflector_seq: int, out_ms: float, in_ms: float, ttl: int = 250) -> Reply:
    """Packet ``seq`` sent at seq × 10 ms, ``out_ms`` to the reflector, 0.1 ms inside it."""
    t1 = BASE + seq * 10 * MS
    t2 = t1 + round(out_ms * MS)
    t3 = t2 + MS // 10
    return Reply(seq, reflector_seq, t1, t2, t3, t3 + round(in_ms * MS), ttl)


def summary(sent: int, replies: list[Reply], **kwargs: object):  # type: ignore[no-untyped-def]
    options = {"sender_synchronized": True, "reflector_synchronized": True, **kwargs}
    return summarize(sent, replies, **options)  # type: ignore[arg-type]


def test_clean_run() -> None:
    result = summary(3, [reply(0, 0, 1, 2), reply(1, 1, 1, 2), reply(2, 2, 1, 2)])
    assert (result.sent, result.received, result.lost, result.loss_percent) == (3, 3, 0, 0.0)
    assert (result.forward_lost, result.reverse_lost) == (0, 0)
    assert (
        result.round_trip is not None and result.round_trip.min == result.round_trip.max == 3 * MS
    )
    assert result.outbound is not None and result.outbound.avg == 1 * MS
    assert result.inbound is not None and result.inbound.avg == 2 * MS
    assert result.jitter_rfc3550 == 0.0
    assert result.clocks_synchronized
    assert result.hops == (5, 5)


def test_forward_loss_leaves_no_gap_in_reflector_numbers() -> None:
    # Packet 1 never reached the reflector: it numbered 0 and 2 as 0 and 1.
    result = summary(3, [reply(0, 0, 1, 1), reply(2, 1, 1, 1)])
    assert (result.lost, result.forward_lost, result.reverse_lost) == (1, 1, 0)
    assert result.loss_percent == pytest.approx(100 / 3)


def test_reverse_loss_is_a_gap_in_reflector_numbers() -> None:
    # Packet 1 was reflected as number 1, and that reply was lost on the way back.
    result = summary(3, [reply(0, 0, 1, 1), reply(2, 2, 1, 1)])
    assert (result.lost, result.forward_lost, result.reverse_lost) == (1, 0, 1)


def test_both_directions_lose() -> None:
    replies = [reply(0, 0, 1, 1), reply(3, 2, 1, 1), reply(4, 3, 1, 1)]
    # 1 lost forward (never numbered), 2 reflected as 1 and lost back.
    result = summary(5, replies)
    assert (result.lost, result.forward_lost, result.reverse_lost) == (2, 1, 1)


def test_loss_after_the_last_reply_is_given_no_direction() -> None:
    # Packets 2 and 3 were lost, or their replies were: the numbering ends at 1 either way.
    result = summary(4, [reply(0, 0, 1, 1), reply(1, 1, 1, 1)])
    assert (result.lost, result.forward_lost, result.reverse_lost) == (2, 0, 0)
    assert result.unplaced_lost == 2
    # With a gap before the last reply: that one is placed, the tail is not.
    result = summary(5, [reply(0, 0, 1, 1), reply(2, 2, 1, 1)])
    assert (result.forward_lost, result.reverse_lost, result.unplaced_lost) == (0, 1, 2)


def test_reflector_numbering_not_per_session_gives_no_split() -> None:
    result = summary(2, [reply(0, 500, 1, 1), reply(1, 501, 1, 1)])
    assert result.lost == 0
    assert (result.forward_lost, result.reverse_lost) == (None, None)
    assert result.split_note is not None and "start at 0" in result.split_note


def test_duplicates_count_once() -> None:
    first = reply(0, 0, 1, 1)
    late_copy = reply(0, 0, 1, 5)
    result = summary(2, [first, late_copy, reply(1, 1, 1, 1)])
    assert (result.received, result.duplicates, result.lost) == (2, 1, 0)
    assert result.round_trip is not None and result.round_trip.max == 2 * MS  # copy ignored


def test_reordering_counts_late_arrivals() -> None:
    replies = [reply(0, 0, 1, 1), reply(2, 2, 1, 1), reply(1, 1, 1, 1), reply(3, 3, 1, 1)]
    assert summary(4, replies).reordered == 1


def test_unsynchronised_clocks_are_flagged_not_clamped() -> None:
    result = summary(1, [reply(0, 0, -3, 5)])
    assert result.outbound is not None and result.outbound.min == -3 * MS
    assert result.round_trip is not None and result.round_trip.min == 2 * MS
    assert not result.clocks_synchronized
    assert not summary(1, [reply(0, 0, 1, 1)], reflector_synchronized=False).clocks_synchronized
    assert not summary(1, [reply(0, 0, 1, 1)], sender_synchronized=False).clocks_synchronized


def test_nothing_came_back() -> None:
    result = summary(4, [])
    assert (result.received, result.lost, result.loss_percent) == (0, 4, 100.0)
    assert result.round_trip is None and result.ipdv is None and result.hops is None
    assert (result.forward_lost, result.reverse_lost) == (None, None)
    assert result.unplaced_lost == 4


def test_more_answers_than_packets_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="only 1 sent"):
        summary(1, [reply(0, 0, 1, 1), reply(1, 1, 1, 1)])


def test_jitter_follows_rfc3550() -> None:
    # |D| = 16 then 0: J = 16/16 = 1, then 1 + (0 - 1)/16 = 0.9375.
    assert rfc3550_jitter([100, 116, 116]) == pytest.approx(0.9375)
    assert rfc3550_jitter([5]) is None


def test_ipdv_skips_pairs_with_a_loss_between() -> None:
    replies = [reply(0, 0, 1, 1), reply(1, 1, 2, 1), reply(3, 3, 1, 1)]
    assert ipdv(replies) == [1 * MS]


def test_distribution_figures() -> None:
    figures = distribution(range(1, 101))
    assert figures is not None
    assert (figures.min, figures.max, figures.median, figures.p95, figures.p99) == (
        1,
        100,
        50.5,
        95,
        99,
    )
    assert figures.avg == 50.5
    assert figures.stddev == pytest.approx(28.866, abs=1e-3)
    assert distribution([]) is None


def test_a_stateless_light_reflector_leaves_the_loss_unsplit() -> None:
    # Packet 1 was lost; the reflector copies our numbers, so 0 and 2 come back as 0 and 2.
    replies = [reply(0, 0, 1, 1), reply(2, 2, 1, 1)]
    light = summary(3, replies, stateless_possible=True)
    assert (light.forward_lost, light.reverse_lost) == (None, None)
    assert light.split_note is not None and "stateless" in light.split_note
    # The same numbers from a TWAMP-Control session's (stateful) reflector: lost on the way back.
    control = summary(3, replies)
    assert (control.forward_lost, control.reverse_lost, control.split_note) == (0, 1, None)
    # No loss: nothing to split, whatever the numbering.
    clean = summary(2, [replies[0], reply(1, 1, 1, 1)], stateless_possible=True)
    assert (clean.forward_lost, clean.reverse_lost) == (0, 0)


def test_impossible_reflector_timestamps_count_as_received_but_not_in_delays() -> None:
    good = reply(0, 0, 1, 2)
    swapped = Reply(
        1, 1, good.t1 + 10 * MS, good.t3 + 10 * MS, good.t2 + 10 * MS, good.t4 + 10 * MS, 250
    )  # T3 before T2
    longer = Reply(
        2, 2, good.t1 + 20 * MS, good.t1 + 20 * MS, good.t1 + 30 * MS, good.t1 + 25 * MS, 250
    )  # 10 ms inside the reflector, 5 ms round trip
    assert good.consistent and not swapped.consistent and not longer.consistent
    assert longer.round_trip < 0
    result = summary(3, [good, swapped, longer])
    assert (result.received, result.lost, result.inconsistent) == (3, 0, 2)
    assert result.round_trip is not None and result.round_trip.count == 1
    assert result.round_trip.min == good.round_trip > 0
    assert result.processing is not None and result.processing.max == MS // 10


def test_an_unknown_ttl_takes_no_part_in_the_hops() -> None:
    result = summary(2, [reply(0, 0, 1, 1, ttl=250), Reply(1, 1, BASE, BASE, BASE, BASE + 1, None)])
    assert result.hops == (5, 5)
    assert summary(1, [Reply(0, 0, BASE, BASE, BASE, BASE + 1, None)]).hops is None
