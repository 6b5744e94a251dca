"""How reporters write times: milliseconds with microsecond precision in text, microseconds in
JSON."""

from __future__ import annotations


def ms(value_ns: float) -> str:
    """Nanoseconds as milliseconds with microsecond precision."""
    return f"{value_ns / 1e6:.3f}"


def us(value_ns: float | None) -> float | None:
    """Nanoseconds as microseconds for JSON, nanosecond precision kept."""
    return None if value_ns is None else round(value_ns / 1e3, 3)
