"""ping-like text: a line per reply as it comes, then the summary of a measurement.

Text output is in milliseconds with microsecond precision.  One-way delays need synchronised
clocks; when either side says its clock is not synchronised, or a delay comes out negative, the
figures are still printed (never clamped) but marked, with one plain sentence saying why.
"""

from __future__ import annotations

import sys
from typing import IO

from twamp_common.stamp_sender import StampSummary, code_name
from twamp_common.stamp_tlv import SyncSource, TimestampMethod
from twamp_common.stats import Reply, Summary
from twamp_common.test_session import Lost

from .. import quality
from ..measurement import Header, Measurement, Observer
from .units import ms

UNSYNC_NOTE = "one-way delays are unreliable: {why}; round-trip figures do not depend on the clocks"


class TextReport(Observer):
    """The header line when the session starts, a line per packet (unless ``per_packet`` is
    off), and :meth:`summary` at the end."""

    def __init__(self, *, per_packet: bool, out: IO[str] = sys.stdout) -> None:
        self.per_packet = per_packet
        self.out = out

    def started(self, header: Header) -> None:
        self.out.write(header_line(header))
        self.out.flush()

    def answered(self, reply: Reply, duplicate: bool) -> None:
        if not self.per_packet:
            return
        suffix = " (duplicate)" if duplicate else ""
        if not reply.consistent:
            self.out.write(
                f"seq={reply.sender_seq} impossible reflector timestamps: T3 - T2 ="
                f" {ms(reply.processing)} ms, T4 - T1 = {ms(reply.t4 - reply.t1)} ms{suffix}\n"
            )
            self.out.flush()
            return
        mark = "" if reply.outbound >= 0 and reply.inbound >= 0 else "*"
        self.out.write(
            f"seq={reply.sender_seq} rtt={ms(reply.round_trip)} ms"
            f" out={ms(reply.outbound)}{mark} ms in={ms(reply.inbound)}{mark} ms"
            f" ttl={'?' if reply.sender_ttl is None else reply.sender_ttl}{suffix}\n"
        )
        self.out.flush()

    def lost(self, lost: Lost) -> None:
        if self.per_packet:
            reason = "" if lost.send_error is None else f" (not sent: {lost.send_error})"
            self.out.write(f"seq={lost.seq} lost{reason}\n")
            self.out.flush()

    def summary(self, measurement: Measurement) -> None:
        """The statistics block of a measurement that has figures."""
        if measurement.header is not None and measurement.summary is not None:
            write_summary(measurement.header, measurement.summary, measurement, self.out)


def header_line(header: Header) -> str:
    count = header.count or "unlimited"
    shown = header.host if header.host == header.address else f"{header.host} ({header.address})"
    protocol = "TWAMP" if header.ssid is None else "STAMP"
    ssid = "" if header.ssid is None else f", SSID {header.ssid}"
    return (
        f"{protocol} {shown} port {header.port}, {header.mode} mode{ssid}, UDP test port"
        f" {header.test_port}: {count} packets of {_sizes(header)} octets every"
        f" {header.interval_ms:g} ms\n"
    )


def _sizes(header: Header) -> str:
    sizes = header.packet_sizes
    if len(sizes) == 1:
        return str(sizes[0])
    return f"{min(sizes)} to {max(sizes)} (mean {header.mean_packet_size:.1f})"


def write_block(measurement: Measurement, out: IO[str]) -> None:
    """One target's block after a run of many: its header and summary, or its error."""
    target = measurement.target
    if measurement.header is None:
        out.write(f"--- {target.host} port {target.effective_port}: {measurement.error} ---\n")
        if measurement.hint:
            out.write(f"hint: {measurement.hint}\n")
        return
    out.write(header_line(measurement.header))
    if measurement.summary is not None:
        write_summary(measurement.header, measurement.summary, measurement, out)
    if measurement.error is not None:
        out.write(f"error: {measurement.error}\n")


def write_summary(header: Header, summary: Summary, measurement: Measurement, out: IO[str]) -> None:
    """The statistics block: what came back, then the delays."""
    protocol = "TWAMP" if header.ssid is None else "STAMP"
    out.write(f"--- {header.host} port {header.port} {protocol} statistics ---\n")
    _write_counts(summary, measurement, out)
    _write_delays(summary, measurement.unsync_reason, out)
    if measurement.stamp is not None:
        write_stamp(measurement.stamp, out)
    voice = quality.voice_quality(measurement)
    if voice is not None:
        out.write(quality.summary_line(voice))


def _write_counts(summary: Summary, measurement: Measurement, out: IO[str]) -> None:
    """Sent, received, lost and why; what did not count and why."""
    write = out.write
    split = ""
    if summary.forward_lost is not None and summary.reverse_lost is not None:
        either = f", {summary.unplaced_lost} either way" if summary.unplaced_lost else ""
        split = f" (forward {summary.forward_lost}, reverse {summary.reverse_lost}{either})"
    outcome = measurement.outcome
    extra = ""
    if outcome is not None:
        invalid = sum(outcome.invalid.values())
        extra += f", {invalid} invalid" if invalid else ""
        extra += f", {outcome.late} late" if outcome.late else ""
    write(
        f"{summary.sent} sent, {summary.received} received, {summary.loss_percent:.1f}% loss"
        f"{split}, {summary.duplicates} duplicates, {summary.reordered} reordered{extra}\n"
    )
    if outcome is not None:
        for what, counts in (
            ("sends failed", outcome.send_errors),
            ("invalid replies", outcome.invalid),
            ("ICMP errors", outcome.icmp_errors),
        ):
            if counts:
                reasons = ", ".join(f"{count} {why}" for why, count in counts.items())
                write(f"{sum(counts.values())} {what}: {reasons}\n")
        if outcome.host_dropped:
            write(
                f"{outcome.host_dropped} datagrams dropped by this host, the test socket's"
                " receive buffer full (a loaded host, or net.core.rmem_max): replies among them"
                " count as lost\n"
            )
    if summary.split_note is not None:
        write(f"loss per direction unknown: {summary.split_note}\n")
    if summary.inconsistent:
        write(
            f"{summary.inconsistent} replies carried impossible reflector timestamps (T3 before"
            " T2, or longer inside the reflector than the whole round trip): left out of the"
            " delay figures\n"
        )


def _write_delays(summary: Summary, unsync_reason: str | None, out: IO[str]) -> None:
    """Round trip, jitter, one-way delays, the reflector's own time, hops."""
    write = out.write
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
    if summary.processing is not None:
        inside = summary.processing
        write(
            f"reflector processing (T3 - T2) min/median/max = {ms(inside.min)}/"
            f"{ms(inside.median)}/{ms(inside.max)} ms\n"
        )
    if summary.hops is not None:
        low, high = summary.hops
        write(f"hops {low}\n" if low == high else f"hops {low} to {high}\n")
    if unsync_reason is not None:
        write(UNSYNC_NOTE.format(why=unsync_reason) + "\n")


def _counts(counts: dict[int, int]) -> str:
    """``46 (9), 0 (1)``: values and how many replies had each."""
    return ", ".join(f"{value} ({n})" for value, n in counts.items()) or "not reported"


def write_stamp(stamp: StampSummary, out: IO[str]) -> None:
    """What the reflector's TLVs answered: one line per TLV asked for, then the flags."""
    write = out.write
    info = stamp.timestamp_information
    if info is not None:
        write(
            f"reflector timestamps: T2 {code_name(SyncSource, info.sync_in)}"
            f" {code_name(TimestampMethod, info.method_in)},"
            f" T3 {code_name(SyncSource, info.sync_out)}"
            f" {code_name(TimestampMethod, info.method_out)}\n"
        )
    if stamp.dscp_requested is not None:
        write(
            f"class of service: at the reflector DSCP {_counts(stamp.dscp_at_reflector)},"
            f" ECN {_counts(stamp.ecn_at_reflector)}; replies asked for DSCP"
            f" {stamp.dscp_requested}, arrived with DSCP {_counts(stamp.dscp_of_replies)},"
            f" ECN {_counts(stamp.ecn_of_replies)},"
            f" {stamp.dscp_refused} refused (RP)\n"
        )
    counters = stamp.direct_measurement
    if counters is not None:
        write(
            f"direct measurement: S_TxC {counters.s_txc}, R_RxC {counters.r_rxc},"
            f" R_TxC {counters.r_txc}: forward lost {stamp.forward_lost},"
            f" reverse lost {stamp.reverse_lost}\n"
        )
    location = stamp.location
    if location is not None:
        write(
            f"location at the reflector: from {location.source_address or '?'} port"
            f" {location.source_port} to {location.destination_address or '?'} port"
            f" {location.destination_port}\n"
        )
    inbound = stamp.follow_up_inbound
    if inbound is not None and stamp.follow_up_method is not None:
        method = code_name(TimestampMethod, stamp.follow_up_method)
        write(
            f"inbound (follow-up, the reflector's {method} send times) min/avg/max ="
            f" {ms(inbound.min)}/{ms(inbound.avg)}/{ms(inbound.max)}"
            f" ms, {inbound.count} replies\n"
        )
    if stamp.flags:
        flagged = "; ".join(
            f"{name} " + ", ".join(f"{letter} {n}" for letter, n in letters.items())
            for name, letters in stamp.flags.items()
        )
        write(f"TLV flags (U unrecognized, M malformed, I integrity): {flagged}\n")
    if stamp.integrity_failed:
        write(f"{stamp.integrity_failed} replies' TLVs failed their HMAC here: not read\n")
