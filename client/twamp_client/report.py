"""What twamp-client prints: a line per reply (like ping), the summary, --json and --raw.

Text output is in milliseconds with microsecond precision.  One-way delays need synchronised
clocks; when either side says its clock is not synchronised, or a delay comes out negative, the
figures are still printed (never clamped) but marked, with one plain sentence saying why.
The --json document carries the same figures in microseconds under stable names (see README).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import sys
from typing import IO, Any

from twamp_common.stats import Distribution, Reply, Summary

UNSYNC_NOTE = "one-way delays are unreliable: {why}; round-trip figures do not depend on the clocks"


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """What was measured, for the first line and the JSON document."""

    host: str
    address: str
    port: int
    mode: str
    count: int
    interval_ms: float
    packet_size: int
    started: datetime.datetime


def ms(value_ns: float) -> str:
    """Nanoseconds as milliseconds with microsecond precision."""
    return f"{value_ns / 1e6:.3f}"


def us(value_ns: float | None) -> float | None:
    """Nanoseconds as microseconds for JSON, nanosecond precision kept."""
    return None if value_ns is None else round(value_ns / 1e3, 3)


class TextReport:
    """ping-like text on stdout."""

    def __init__(self, header: Header, *, per_packet: bool, out: IO[str] = sys.stdout) -> None:
        self.header = header
        self.per_packet = per_packet
        self.out = out
        self.clock_warning: str | None = None

    def start(self) -> None:
        h = self.header
        shown = h.host if h.host == h.address else f"{h.host} ({h.address})"
        self.out.write(
            f"TWAMP {shown} port {h.port}, {h.mode} mode: {h.count} packets of {h.packet_size}"
            f" octets every {h.interval_ms:g} ms\n"
        )
        self.out.flush()

    def reply(self, reply: Reply, duplicate: bool) -> None:
        if not self.per_packet:
            return
        suffix = " (duplicate)" if duplicate else ""
        mark = "" if reply.outbound >= 0 and reply.inbound >= 0 else "*"
        self.out.write(
            f"seq={reply.sender_seq} rtt={ms(reply.round_trip)} ms"
            f" out={ms(reply.outbound)}{mark} ms in={ms(reply.inbound)}{mark} ms"
            f" ttl={reply.sender_ttl}{suffix}\n"
        )
        self.out.flush()

    def lost(self, seq: int) -> None:
        if self.per_packet:
            self.out.write(f"seq={seq} lost\n")
            self.out.flush()

    def summary(self, summary: Summary, *, unsync_reason: str | None) -> None:
        h = self.header
        write = self.out.write
        write(f"--- {h.host} port {h.port} TWAMP statistics ---\n")
        split = ""
        if summary.forward_lost is not None and summary.reverse_lost is not None:
            split = f" (forward {summary.forward_lost}, reverse {summary.reverse_lost})"
        write(
            f"{summary.sent} sent, {summary.received} received, {summary.loss_percent:.1f}% loss"
            f"{split}, {summary.duplicates} duplicates, {summary.reordered} reordered\n"
        )
        rtt = summary.round_trip
        if rtt is None:
            return
        write(
            f"round trip min/avg/max/stddev = {ms(rtt.min)}/{ms(rtt.avg)}/{ms(rtt.max)}/"
            f"{ms(rtt.stddev)} ms, median {ms(rtt.median)}, p95 {ms(rtt.p95)},"
            f" p99 {ms(rtt.p99)} ms\n"
        )
        if summary.jitter_rfc3550 is not None:
            ipdv = summary.ipdv
            extra = (
                ""
                if ipdv is None
                else (f", IPDV min/avg/max = {ms(ipdv.min)}/{ms(ipdv.avg)}/{ms(ipdv.max)} ms")
            )
            write(f"jitter {ms(summary.jitter_rfc3550)} ms (RFC 3550){extra}\n")
        mark = "" if unsync_reason is None else " (unsynchronised clocks)"
        for name, dist, jitter in (
            ("outbound", summary.outbound, summary.outbound_jitter),
            ("inbound ", summary.inbound, summary.inbound_jitter),
        ):
            if dist is not None:
                tail = "" if jitter is None else f", jitter {ms(jitter)} ms"
                write(
                    f"{name} min/avg/max = {ms(dist.min)}/{ms(dist.avg)}/{ms(dist.max)} ms"
                    f"{tail}{mark}\n"
                )
        if summary.hops is not None:
            low, high = summary.hops
            write(f"hops {low}\n" if low == high else f"hops {low} to {high}\n")
        if unsync_reason is not None:
            write(UNSYNC_NOTE.format(why=unsync_reason) + "\n")


def _distribution(dist: Distribution | None) -> dict[str, float | None] | None:
    if dist is None:
        return None
    return {
        "min": us(dist.min),
        "avg": us(dist.avg),
        "max": us(dist.max),
        "stddev": us(dist.stddev),
        "median": us(dist.median),
        "p95": us(dist.p95),
        "p99": us(dist.p99),
    }


def json_document(
    header: Header, summary: Summary, *, unsync_reason: str | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """The --json document (schema in README.md)."""
    one_way = {}
    for name, dist, jitter in (
        ("outbound_us", summary.outbound, summary.outbound_jitter),
        ("inbound_us", summary.inbound, summary.inbound_jitter),
    ):
        values = _distribution(dist)
        if values is not None:
            values["jitter"] = us(jitter)
        one_way[name] = values
    return {
        "peer": {"host": header.host, "address": header.address, "port": header.port},
        "mode": header.mode,
        "start_time": header.started.isoformat(),
        "count": header.count,
        "interval_ms": header.interval_ms,
        "packet_size": header.packet_size,
        "sent": summary.sent,
        "received": summary.received,
        "lost": summary.lost,
        "loss_percent": round(summary.loss_percent, 3),
        "forward_lost": summary.forward_lost,
        "reverse_lost": summary.reverse_lost,
        "duplicates": summary.duplicates,
        "reordered": summary.reordered,
        "rtt_us": _distribution(summary.round_trip),
        **one_way,
        "jitter_us": {
            "rfc3550": us(summary.jitter_rfc3550),
            "ipdv": _distribution(summary.ipdv),
        },
        "clocks_synchronized": unsync_reason is None,
        "clock_note": unsync_reason,
        "hops": None if summary.hops is None else {"min": summary.hops[0], "max": summary.hops[1]},
        **extra,
    }


def write_json(document: dict[str, Any], out: IO[str] = sys.stdout) -> None:
    json.dump(document, out, indent=2)
    out.write("\n")


#: t1_packet_ns, the T1 the packet carried, comes last: the earlier columns keep their places.
RAW_COLUMNS = [
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


def write_raw(send_times: list[int], replies: list[Reply], out: IO[str] = sys.stdout) -> None:
    """One CSV row per packet sent (and per duplicate), lost ones with empty reply fields.

    A reply's row shows the T1 its round trip was computed with (the kernel's send time, if it
    was known by then); a lost packet's row the best T1 known at the end.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RAW_COLUMNS)
    by_seq: dict[int, list[Reply]] = {}
    for reply in replies:
        by_seq.setdefault(reply.sender_seq, []).append(reply)
    for seq, t1 in enumerate(send_times):
        rows = by_seq.get(seq)
        if not rows:
            writer.writerow([seq, t1, "", "", "", "", "", "", ""])
            continue
        for reply in rows:
            writer.writerow(
                [
                    seq,
                    reply.t1,
                    reply.t2,
                    reply.t3,
                    reply.t4,
                    reply.reflector_seq,
                    reply.sender_ttl,
                    reply.round_trip,
                    reply.t1 if reply.t1_packet is None else reply.t1_packet,
                ]
            )
