"""Traffic models: test packets that look like voice or bulk data, as a send schedule.

Sizes are IP packet sizes, IP and UDP headers included (20 + 8 octets over IPv4, 40 + 8 over
IPv6), as voice engineers quote them; the TWAMP padding fills the rest, and the reflector's
reply is as large as the request, so both directions carry the same size:

* ``g711``: 200-octet packets every 20 ms (20 IP + 8 UDP + 12 RTP + 160 voice octets);
* ``g729``: 60-octet packets every 20 ms, or the smallest size that holds the reflector's
  header where 60 does not (69 octets over IPv4 unauthenticated, 89 over IPv6, 140/160 in the
  authenticated and encrypted modes): a smaller request would make the reply larger than it;
* ``cbr``: ``size``-octet packets at ``bandwidth`` bit/s, the interval exact in nanoseconds (a
  size too small to hold the reflector's header is an error: it was asked for explicitly);
* ``imix``: the 7:4:1 cycle 70, 576, 70, 576, 70, 576, 70, 576, 70, 70, 70, 1500 octets,
  paced so that the mean rate is ``bandwidth`` (a size below the smallest that fits is raised
  to it).
"""

from __future__ import annotations

import dataclasses
import re

from .schedule import Cycle, Periodic, Schedule
from .test_packets import REFLECTOR_HEADER_SIZE, SENDER_HEADER_SIZE

#: IP + UDP header octets, by IP version.
IP_UDP_HEADER = {4: 28, 6: 48}
IMIX_CYCLE = (70, 576, 70, 576, 70, 576, 70, 576, 70, 70, 70, 1500)
#: Voice codecs: (IP packet size, interval in ns).
VOICE = {"g711": (200, 20_000_000), "g729": (60, 20_000_000)}
MODELS = (*VOICE, "cbr", "imix")
#: Longest gap a model may ask for (the longest -i).
MAX_INTERVAL_NS = 3_600 * 1_000_000_000
#: Largest IP packet size (an IPv4 datagram's limit).
MAX_SIZE = 65_535
#: Highest bandwidth a model may ask for, in bit/s.
MAX_BANDWIDTH = 100 * 10**9
#: The forms :func:`parse_bandwidth` takes, for error messages.
BANDWIDTH_FORMS = "a positive number of bit/s up to 100G, with k, M or G: 64000, 2.5M, 1G"
#: Decimal multipliers, as link speeds are quoted.
_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


class ModelError(ValueError):
    """A traffic model that cannot be sent: one sentence naming the setting."""


@dataclasses.dataclass(frozen=True, slots=True)
class TrafficModel:
    """A named model and the settings ``cbr`` and ``imix`` need."""

    name: str
    #: Bits per second at the IP layer (cbr, imix).
    bandwidth: int | None = None
    #: IP packet size in octets (cbr).
    size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ModelError(f"model {self.name!r} is not one of {', '.join(MODELS)}")
        if self.name in ("cbr", "imix") and not self.bandwidth:
            raise ModelError(f"the {self.name} model needs a bandwidth (bit/s)")
        if self.name == "cbr" and not self.size:
            raise ModelError("the cbr model needs a size (octets, IP header included)")
        if self.bandwidth is not None and self.bandwidth < 1:
            raise ModelError(f"a bandwidth of {self.bandwidth} bit/s sends nothing")
        if self.size is not None and not 1 <= self.size <= MAX_SIZE:
            raise ModelError(f"size {self.size} is outside 1..{MAX_SIZE} octets")


def parse_bandwidth(text: str) -> int:
    """Bits per second from ``64000``, ``64k``, ``2.5M`` or ``1G bit/s``: the one reading of a
    bandwidth, for the command line and the monitor's file alike.  ModelError when ``text`` is
    none of :data:`BANDWIDTH_FORMS`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*(?:bit/s|bps)?", text.strip())
    if match is None:
        raise ModelError("not a bit rate")
    rate = round(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if not 1 <= rate <= MAX_BANDWIDTH:
        raise ModelError("out of range")
    return rate


def smallest_size(ip_version: int, authenticated: bool) -> int:
    """The smallest IP packet whose UDP payload holds the reflector's header."""
    return IP_UDP_HEADER[ip_version] + REFLECTOR_HEADER_SIZE[authenticated]


def schedule(
    model: TrafficModel, *, ip_version: int, authenticated: bool, stamp_header: int | None = None
) -> Schedule:
    """The send schedule of ``model`` over IPv``ip_version`` in the given layout.

    ``stamp_header``: STAMP packets of that many octets before their padding (base and TLVs;
    the reply is as long, so it is the floor too) instead of TWAMP-Test ones.  ModelError when
    the interval would exceed an hour (a bandwidth too low for the size).
    """
    if stamp_header is None:
        floor = smallest_size(ip_version, authenticated)
        overhead = IP_UDP_HEADER[ip_version] + SENDER_HEADER_SIZE[authenticated]
    else:
        floor = overhead = IP_UDP_HEADER[ip_version] + stamp_header
    if model.name in VOICE:
        size, interval = VOICE[model.name]
        return Periodic(interval, max(size, floor) - overhead)
    assert model.bandwidth is not None
    if model.name == "cbr":
        assert model.size is not None
        if model.size < floor:
            raise ModelError(
                f"size {model.size} is below the {floor} octets that hold the reflector's"
                f" header (IPv{ip_version}, {'authenticated' if authenticated else 'open'} layout)"
            )
        return Periodic(_interval(model.size * 8, model.bandwidth, model), model.size - overhead)
    sizes = [max(size, floor) for size in IMIX_CYCLE]
    interval = _interval(sum(sizes) * 8, model.bandwidth * len(sizes), model)
    return Cycle(tuple(size - overhead for size in sizes), interval)


def _interval(bits: int, bandwidth: int, model: TrafficModel) -> int:
    """Nanoseconds for ``bits`` at ``bandwidth`` bit/s, rounded to the nearest."""
    interval = (bits * 1_000_000_000 + bandwidth // 2) // bandwidth
    if interval > MAX_INTERVAL_NS:
        raise ModelError(
            f"{model.bandwidth} bit/s is too low for the {model.name} model: one packet"
            f" would take {interval / 1e9:.0f} s (at most {MAX_INTERVAL_NS // 10**9} s)"
        )
    return max(interval, 1)
