"""``--raw``: one CSV row per packet sent (and per duplicate), with its four timestamps."""

from __future__ import annotations

import csv
import sys
from typing import IO

from twamp_common.stats import Reply

from ..measurement import Measurement

#: t1_packet_ns, the T1 the packet carried, comes last: the earlier columns keep their places.
COLUMNS = [
    "seq",
    "t1_ns",
    "t2_ns",
    "t3_ns",
    "t4_ns",
    "reflector_seq",
    "sender_ttl",
    "rtt_ns",
    "t1_packet_ns",
]
#: The column naming the target, first, when several targets are written together.
TARGET_COLUMN = "target"


def write(measurements: list[Measurement], out: IO[str] = sys.stdout) -> None:
    """Rows of every measurement that sent packets; a ``target`` column leads when there are
    several.

    A reply's row shows the T1 its round trip was computed with (the kernel's send time, if it
    was known by then); a lost packet's row the best T1 known at the end (0 when its send
    failed).  A reply whose reflector timestamps cannot be true has its four timestamps and no
    round trip, as it has none in the summary.
    """
    several = len(measurements) > 1
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([TARGET_COLUMN, *COLUMNS] if several else COLUMNS)
    for measurement in measurements:
        if measurement.outcome is None:
            continue
        lead = [measurement.target.host] if several else []
        by_seq: dict[int, list[Reply]] = {}
        for reply in measurement.outcome.replies:
            by_seq.setdefault(reply.sender_seq, []).append(reply)
        for seq, t1 in enumerate(measurement.outcome.send_times):
            rows = by_seq.get(seq)
            if not rows:
                writer.writerow([*lead, seq, t1, "", "", "", "", "", "", ""])
                continue
            for reply in rows:
                writer.writerow(
                    [
                        *lead,
                        seq,
                        reply.t1,
                        reply.t2,
                        reply.t3,
                        reply.t4,
                        reply.reflector_seq,
                        reply.sender_ttl,
                        reply.round_trip if reply.consistent else "",
                        reply.t1 if reply.t1_packet is None else reply.t1_packet,
                    ]
                )
