"""Socket options and ancillary data of TWAMP-Test sockets, as plain values.

Both the Session-Reflector and the Session-Sender need the kernel's receive timestamp
(SO_TIMESTAMPNS: the time the packet reached the host, not when Python woke up, which is tens of
microseconds later), the TTL or Hop Limit the packet arrived with, a TTL of 255 on what they send,
and a DSCP per packet.  This module says which options and control messages do that and decodes
what ``recvmsg`` returns; the drivers own the sockets and apply these values.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

#: SO_TIMESTAMPNS / SCM_TIMESTAMPNS (asm-generic/socket.h); Python does not name it everywhere.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
#: Path-MTU discovery "do" (never fragment: the DF bit); Python names these only from 3.12.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_DO = 2
#: The TTL we send test packets with, and report when the received TTL is unknown (RFC 5357
#: §4.2.1: the Session-Reflector SHOULD send with TTL 255).
TTL_UNKNOWN = 255
#: Room for the control messages we ask for: a timespec and an int, with cmsg headers.
ANCILLARY_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)

_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")


def receive_options(family: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` triples that make ``recvmsg`` report time and TTL."""
    ttl_option = (
        (socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_RECVTTL, 1)
    )
    return [(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1), ttl_option]


def send_options(family: int, ttl: int = TTL_UNKNOWN) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` triples for what we send: TTL / Hop Limit 255 by default."""
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)]
    return [(socket.IPPROTO_IP, socket.IP_TTL, ttl)]


def parse_ancillary(ancdata: Iterable[tuple[int, int, bytes]]) -> tuple[int | None, int]:
    """``(kernel receive time in Unix ns or None, received TTL or 255)`` from ``recvmsg``."""
    received_ns: int | None = None
    ttl = TTL_UNKNOWN
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            received_ns = seconds * 1_000_000_000 + nanoseconds
        elif (level == socket.IPPROTO_IP and kind == socket.IP_TTL) or (
            level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT
        ):
            # IPv4 delivers the TTL as an int on Linux (one octet on some other systems).
            ttl = _INT.unpack_from(data)[0] if len(data) >= 4 else data[0]
    return received_ns, ttl


def dont_fragment_options(family: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` that set the DF bit (IPv4) or forbid fragmentation (IPv6)."""
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DO)]
    return [(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DO)]


def _traffic_class(family: int, dscp: int) -> tuple[int, int, int]:
    """(level, option, TOS/Traffic Class octet) for ``dscp`` with the ECN bits zero."""
    if family == socket.AF_INET6:
        return (socket.IPPROTO_IPV6, IPV6_TCLASS, dscp << 2)
    return (socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)


def traffic_class_options(family: int, dscp: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` that mark everything a socket sends with ``dscp``."""
    return [_traffic_class(family, dscp)] if dscp else []


def traffic_class_ancillary(family: int, dscp: int) -> list[tuple[int, int, bytes]]:
    """Control messages for ``sendmsg`` that mark one packet with ``dscp`` (ECN bits zero)."""
    if not dscp:
        return []
    level, option, value = _traffic_class(family, dscp)
    return [(level, option, _INT.pack(value))]


def dscp_from_type_p(type_p: int) -> int | None:
    """The DSCP a Request-TW-Session's Type-P Descriptor asks for, or None if unsupported.

    RFC 4656 §3.5: when the first two bits are 00 the next six are the DSCP, so the field is
    ``DSCP << 24``.  One popular sender puts the DSCP in the low octet instead; a value below 64
    is read that way, since the RFC encoding of any DSCP other than 0 is at least 2**24.  Other
    forms (01: a 16-bit PHB ID) are not supported.
    """
    if type_p >> 30:
        return None
    if type_p < 64:
        return type_p
    if type_p & 0x00FF_FFFF:
        return None
    return (type_p >> 24) & 0x3F
