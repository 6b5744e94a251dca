"""Traffic models: the send schedule that mimics a codec or a mix, from IP packet sizes.

Sizes are IP packet sizes, the IP (20 octets IPv4, 40 IPv6) and UDP (8) headers included, as
codec and IMIX tables give them; the TWAMP padding fills the rest.  Both directions are the same
size, so a packet never carries less than the reflector's header (RFC 5357 §4.2.1: the reply is
the sender's padding minus the difference of the two headers): where a model's size is below
that (G.729's 60 octets), the smallest size that fits is used instead.  Gaps are whole
nanoseconds, rounded once from the exact rational, so a run never drifts.
"""

from __future__ import annotations

from fractions import Fraction

from .schedule import Cycle, Periodic, Schedule
from .test_packets import REFLECTOR_HEADER_SIZE, SENDER_HEADER_SIZE

IP_HEADER = {False: 20, True: 40}
UDP_HEADER = 8
#: name → (IP packet octets, gap in ns): G.711 is 12 RTP + 160 voice octets every 20 ms, G.729
#: 12 RTP + 20 voice octets.
CODECS = {"g711": (200, 20_000_000), "g729": (60, 20_000_000)}
#: The 7:4:1 simple IMIX, in the order it is sent.
IMIX = (70, 576, 70, 576, 70, 576, 70, 576, 70, 70, 70, 1500)
MODELS = (*CODECS, "cbr", "imix")
#: Longest gap a model may ask for: beyond it the bandwidth is too low to measure anything.
MAX_GAP_NS = 60 * 1_000_000_000
#: Largest IP packet a model may ask for.
MAX_SIZE = 65_535


def smallest_size(*, ipv6: bool, authenticated: bool) -> int:
    """The smallest IP packet whose reply is as long: headers plus the reflector's header."""
    return IP_HEADER[ipv6] + UDP_HEADER + REFLECTOR_HEADER_SIZE[authenticated]


def padding_for(size: int, *, ipv6: bool, authenticated: bool) -> int:
    """Sender padding that makes an IP packet of ``size`` octets; ValueError below the
    smallest size."""
    least = smallest_size(ipv6=ipv6, authenticated=authenticated)
    if not least <= size <= MAX_SIZE:
        raise ValueError(f"size {size} is outside {least} to {MAX_SIZE} octets")
    return size - IP_HEADER[ipv6] - UDP_HEADER - SENDER_HEADER_SIZE[authenticated]


def _gap(bits: Fraction | int, bandwidth: int) -> int:
    """Nanoseconds to send ``bits`` at ``bandwidth`` bit/s; ValueError when out of range."""
    if bandwidth < 1:
        raise ValueError(f"bandwidth {bandwidth} bit/s is not positive")
    gap = round(Fraction(bits) * 1_000_000_000 / bandwidth)
    if gap < 1:
        raise ValueError(f"bandwidth {bandwidth} bit/s needs gaps below 1 ns")
    if gap > MAX_GAP_NS:
        raise ValueError(
            f"bandwidth {bandwidth} bit/s is too low: one packet every {gap / 1e9:g} s"
            f" (at most {MAX_GAP_NS // 1_000_000_000} s)"
        )
    return gap


def schedule(
    model: str,
    *,
    ipv6: bool,
    authenticated: bool,
    bandwidth: int | None = None,
    size: int | None = None,
) -> Schedule:
    """The schedule of ``model``; ValueError naming what is wrong with its parameters."""
    if model in CODECS:
        octets, gap = CODECS[model]
        octets = max(octets, smallest_size(ipv6=ipv6, authenticated=authenticated))
        return Periodic(gap, padding_for(octets, ipv6=ipv6, authenticated=authenticated))
    if model == "cbr":
        if bandwidth is None or size is None:
            raise ValueError("cbr needs bandwidth and size")
        padding = padding_for(size, ipv6=ipv6, authenticated=authenticated)
        return Periodic(_gap(size * 8, bandwidth), padding)
    if model == "imix":
        if bandwidth is None:
            raise ValueError("imix needs bandwidth")
        least = smallest_size(ipv6=ipv6, authenticated=authenticated)
        sizes = [max(octets, least) for octets in IMIX]
        gap = _gap(Fraction(sum(sizes) * 8, len(sizes)), bandwidth)
        paddings = tuple(padding_for(o, ipv6=ipv6, authenticated=authenticated) for o in sizes)
        return Cycle(paddings, gap)
    raise ValueError(f"unknown traffic model {model!r}; known: {', '.join(MODELS)}")
