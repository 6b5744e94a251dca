"""Round-trip statistics from the four timestamps of each reply: pure functions, integer ns.

T1 sender send, T2 reflector receive, T3 reflector send, T4 sender receive.  Round trip
``(T4 − T1) − (T3 − T2)`` needs no clock agreement and equals outbound ``T2 − T1`` plus inbound
``T4 − T3`` exactly, because every figure is an integer number of nanoseconds.  One-way delays
are only meaningful with synchronised clocks; a negative one proves the clocks disagree and is
reported as it is, never clamped.  Jitter and IPDV are differences of delays, so a constant
clock offset cancels out of them and they are valid either way.

A reply whose reflector timestamps cannot be true (T3 before T2, or more time inside the
reflector than the whole round trip took: a reflector that swaps its two stamps, say) counts as
received, since it did come back, but takes no part in any delay figure: a negative round trip
is never reported as valid.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import operator
from collections.abc import Iterable, Sequence
from typing import NamedTuple

#: Smoothing of the RFC 3550 §6.4.1 interarrival jitter estimate.
_JITTER_GAIN = 16


class Reply(NamedTuple):
    """One reflected packet as the Session-Sender saw it; times are Unix nanoseconds.

    A named tuple, not a frozen dataclass: one is made per reply, and it costs a quarter as
    much; a run keeps its replies as plain tuples of these fields
    (:attr:`~twamp_common.test_session.Outcome.rows`).
    """

    sender_seq: int
    reflector_seq: int
    t1: int
    t2: int
    t3: int
    t4: int
    #: TTL (or Hop Limit) our packet had when it reached the reflector; None when the reflector
    #: did not say (a short reply without the Sender TTL octet).
    sender_ttl: int | None
    #: The T1 the packet carried, as the reflector returned it (read in user space just before
    #: sending; ``t1`` is the kernel's later send time when the kernel reported one); None
    #: where it is not known.
    t1_packet: int | None = None

    @property
    def round_trip(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def outbound(self) -> int:
        return self.t2 - self.t1

    @property
    def inbound(self) -> int:
        return self.t4 - self.t3

    @property
    def processing(self) -> int:
        """Time the packet spent inside the reflector."""
        return self.t3 - self.t2

    @property
    def consistent(self) -> bool:
        """Whether the reflector's timestamps can be true: T2 ≤ T3, and T3 − T2 ≤ T4 − T1."""
        return 0 <= self.t3 - self.t2 <= self.t4 - self.t1


#: A :class:`Reply`'s fields as a plain tuple, in order.
ReplyRow = tuple[int, int, int, int, int, int, int | None, int | None]


@dataclasses.dataclass(frozen=True, slots=True)
class Distribution:
    """Summary figures of a set of nanosecond values."""

    count: int
    min: int
    max: int
    avg: float
    #: Population standard deviation (what ping calls mdev is close to it).
    stddev: float
    median: float
    #: Nearest-rank percentiles: values that were actually observed.
    p95: int
    p99: int
    #: The values themselves, smallest first: what :meth:`at_most` counts.
    ordered: Sequence[int] = dataclasses.field(default=(), repr=False, compare=False)

    def at_most(self, bound: int) -> int:
        """How many of the values are ``bound`` or less (a histogram bucket's count, which
        the sorted values give in a binary search, not a pass over each)."""
        return bisect.bisect_right(self.ordered, bound)


def distribution(values: Iterable[int]) -> Distribution | None:
    """Figures of ``values``, or None when there are none.

    The standard deviation comes from integer sums, exact up to its one division: the
    statistics module reaches the same through fractions at a hundred times the cost, and a
    monitor summarises a run of hundreds of packets on the thread that sends them.
    """
    ordered = sorted(values)
    count = len(ordered)
    if not count:
        return None
    total = sum(ordered)
    squares = sum(map(operator.mul, ordered, ordered))
    middle = count // 2
    return Distribution(
        count=count,
        min=ordered[0],
        max=ordered[-1],
        avg=total / count,
        stddev=math.sqrt((count * squares - total * total) / (count * count)),
        median=ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2,
        p95=_nearest_rank(ordered, 95),
        p99=_nearest_rank(ordered, 99),
        ordered=ordered,
    )


def _nearest_rank(ordered: Sequence[int], percent: int) -> int:
    rank = math.ceil(percent * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


def rfc3550_jitter(delays: Sequence[int]) -> float | None:
    """RFC 3550 §6.4.1 smoothed jitter of consecutive delays; None for fewer than two."""
    if len(delays) < 2:
        return None
    jitter = 0.0
    for previous, current in itertools.pairwise(delays):
        jitter += (abs(current - previous) - jitter) / _JITTER_GAIN
    return jitter


def ipdv(replies: Sequence[Reply]) -> list[int]:
    """RFC 5481 IPDV: round-trip delay differences of consecutively numbered packets.

    ``replies`` in sender sequence order, one per sequence number; a pair with a lost packet
    between its members has no IPDV.
    """
    numbered = ((reply.sender_seq, reply.round_trip) for reply in replies)
    return [
        current - previous
        for (previous_seq, previous), (seq, current) in itertools.pairwise(numbered)
        if seq == previous_seq + 1
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """Everything the client reports after a run."""

    sent: int
    received: int
    lost: int
    loss_percent: float
    #: Lost on the way to the reflector and on the way back, from the reflector's own sequence
    #: numbers; None when they cannot be told apart (nothing came back, or the reflector's
    #: numbering is not per session).  Packets after the last one answered are in neither:
    #: see :attr:`unplaced_lost`.
    forward_lost: int | None
    reverse_lost: int | None
    #: Replies beyond the first for a sequence number.
    duplicates: int
    #: First replies that arrived after a reply to a later-sent packet.
    reordered: int
    round_trip: Distribution | None
    outbound: Distribution | None
    inbound: Distribution | None
    #: Both clocks claim synchronisation and no one-way delay is negative.
    clocks_synchronized: bool
    jitter_rfc3550: float | None
    ipdv: Distribution | None
    outbound_jitter: float | None
    inbound_jitter: float | None
    #: (fewest, most) hops on the way out, from the TTL we sent with and the one that arrived.
    hops: tuple[int, int] | None
    #: Received replies left out of every delay figure because their timestamps cannot be true.
    inconsistent: int = 0
    #: Time inside the reflector (T3 − T2) of the consistent replies.
    processing: Distribution | None = None
    #: Why forward and reverse loss are None though replies came, or None.
    split_note: str | None = None
    #: Lost packets given to neither direction: those sent after the last one answered (the
    #: packet or its reply was lost, and the reflector's numbering cannot say which), or all
    #: of them when forward and reverse loss are None.  The three always add up to ``lost``.
    unplaced_lost: int = 0


def summarize(
    sent: int,
    replies: Sequence[Reply],
    *,
    sender_synchronized: bool,
    reflector_synchronized: bool,
    initial_ttl: int = 255,
    stateless_possible: bool = False,
) -> Summary:
    """The figures of a run: ``sent`` packets numbered from 0, ``replies`` in arrival order.

    A duplicate counts once; only the first reply to a packet enters the delay figures.
    ``stateless_possible``: the reflector may copy our sequence numbers (TWAMP Light; a
    TWAMP-Control session's reflector numbers its own, RFC 5357 §4.2.1).
    """
    first: dict[int, Reply] = {}
    reordered = 0
    highest = -1
    for reply in replies:
        if reply.sender_seq in first:
            continue
        first[reply.sender_seq] = reply
        if reply.sender_seq < highest:
            reordered += 1
        highest = max(highest, reply.sender_seq)
    received = len(first)
    lost = sent - received
    if lost < 0:
        raise ValueError(f"{received} packets answered but only {sent} sent")
    answered = [first[seq] for seq in sorted(first)]
    in_order = [reply for reply in answered if reply.consistent]
    after_last = sent - 1 - highest  # every packet after the last one answered was lost
    forward_lost, reverse_lost, split_note = _split_loss(
        lost, after_last, replies, stateless_possible
    )
    outbound = [reply.outbound for reply in in_order]
    inbound = [reply.inbound for reply in in_order]
    round_trips = [reply.round_trip for reply in in_order]
    ttls = [reply.sender_ttl for reply in answered if reply.sender_ttl is not None]
    hops = (initial_ttl - max(ttls), initial_ttl - min(ttls)) if ttls else None
    return Summary(
        sent=sent,
        received=received,
        lost=lost,
        loss_percent=100.0 * lost / sent if sent else 0.0,
        forward_lost=forward_lost,
        reverse_lost=reverse_lost,
        duplicates=len(replies) - received,
        reordered=reordered,
        round_trip=distribution(round_trips),
        outbound=distribution(outbound),
        inbound=distribution(inbound),
        clocks_synchronized=sender_synchronized
        and reflector_synchronized
        and all(delay >= 0 for delay in outbound + inbound),
        jitter_rfc3550=rfc3550_jitter(round_trips),
        ipdv=distribution(ipdv(in_order)),
        outbound_jitter=rfc3550_jitter(outbound),
        inbound_jitter=rfc3550_jitter(inbound),
        hops=hops if hops is not None and hops[0] >= 0 else None,
        inconsistent=received - len(in_order),
        processing=distribution(reply.processing for reply in in_order),
        split_note=split_note,
        unplaced_lost=lost - (forward_lost or 0) - (reverse_lost or 0),
    )


#: Why a stateless reflector's replies cannot split the loss.
STATELESS_NOTE = (
    "the reflector numbers its replies with our own sequence numbers (a stateless reflector),"
    " so loss on the way out and on the way back cannot be told apart"
)
#: Why reflector numbers that do not fit the session's packets cannot split its loss.
MISFIT_NUMBERING_NOTE = (
    "the reflector's numbers do not fit this session's packets (they do not start at 0, or"
    " packets were reordered around a loss), so loss on the way out and on the way back cannot"
    " be told apart"
)


def _split_loss(
    lost: int, after_last: int, replies: Sequence[Reply], stateless_possible: bool
) -> tuple[int | None, int | None, str | None]:
    """(forward, reverse, why not) loss from gaps in the reflector's sequence numbers.

    A stateful reflector numbers its replies 0, 1, 2… per session, so the replies it sent are
    its highest number plus one, and the numbers missing below that are replies lost on the way
    back.  The ``after_last`` packets sent after the last one answered cannot be placed: the
    reflector may have numbered them, in replies that never came.  Everything else lost never
    reached it.  Duplicates take part: a packet the network duplicated on the way out was
    reflected twice, under two numbers.

    A stateless TWAMP Light reflector copies our sequence number (RFC 5357 Appendix I).  Where
    one may answer, packets were lost and every reply's number equals ours, the two kinds of
    reflector cannot be told apart, so neither direction is claimed; nor is it where the
    numbers leave a negative forward loss (numbering that does not start at 0 for us, or
    reordering around a loss).
    """
    if not replies:
        return None, None, None
    if (
        stateless_possible
        and lost
        and all(reply.reflector_seq == reply.sender_seq for reply in replies)
    ):
        return None, None, STATELESS_NOTE
    numbers = {reply.reflector_seq for reply in replies}
    reflected = max(numbers) + 1
    reverse = reflected - len(numbers)
    forward = lost - after_last - reverse
    if forward < 0:  # (reverse cannot be: distinct numbers up to the highest)
        return None, None, MISFIT_NUMBERING_NOTE
    return forward, reverse, None
