"""One line per target after a run of many, like fping's summary: who answered, how well."""

from __future__ import annotations

import sys
from typing import IO

from ..measurement import Measurement
from .units import ms

_HEADINGS = ("target", "sent", "received", "loss %", "rtt min/avg/max ms", "jitter ms")


def write(measurements: list[Measurement], out: IO[str] = sys.stdout) -> None:
    """The compact table, in the order given; a failed target shows its error instead."""
    rows: list[tuple[str, ...]] = []
    for measurement in measurements:
        target = measurement.target
        host = f"[{target.host}]" if ":" in target.host else target.host
        name = host if target.port is None else f"{host}:{target.port}"
        summary = measurement.summary
        if summary is None:
            rows.append((name, "-", "-", "-", f"error: {measurement.error}", ""))
            continue
        rtt = summary.round_trip
        rows.append(
            (
                name,
                str(summary.sent),
                str(summary.received),
                f"{summary.loss_percent:.1f}",
                "-" if rtt is None else f"{ms(rtt.min)}/{ms(rtt.avg)}/{ms(rtt.max)}",
                "-" if summary.jitter_rfc3550 is None else ms(summary.jitter_rfc3550),
            )
        )
    widths = [max(len(row[i]) for row in (_HEADINGS, *rows)) for i in range(len(_HEADINGS) - 1)]
    for row in (_HEADINGS, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
