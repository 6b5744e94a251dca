"""Socket options and ancillary data of TWAMP-Test sockets, as plain values.

Both the Session-Reflector and the Session-Sender need the kernel's receive timestamp
(SO_TIMESTAMPNS: the time the packet reached the host, not when Python woke up, which is tens of
microseconds later), the TTL or Hop Limit the packet arrived with, a TTL of 255 on what they send,
and a DSCP per packet.  The Session-Sender also wants the kernel's transmit time
(SO_TIMESTAMPING): T1 read in user space before ``sendto`` is early by the time the packet takes
to leave the stack.  This module says which options and control messages do that and decodes
what ``recvmsg`` returns; the drivers own the sockets and apply these values.
"""

from __future__ import annotations

import os
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
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)
#: ANCILLARY_SPACE and the received TOS / Traffic Class (traffic_class_receive_options).
TRAFFIC_CLASS_ANCILLARY_SPACE = ANCILLARY_SPACE + socket.CMSG_SPACE(4)

#: SO_TIMESTAMPING / SCM_TIMESTAMPING (asm-generic/socket.h, the "old" 64-bit-time variant).
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
SCM_TIMESTAMPING = SO_TIMESTAMPING
#: SO_TIMESTAMPING flags (linux/net_tstamp.h).  TX_SOFTWARE: stamp each datagram as the driver
#: takes it; SOFTWARE: report software stamps; OPT_ID: number them (0, 1, ... per send) so that
#: a report names its packet; OPT_TSONLY: report the time without a copy of the packet;
#: OPT_RX_FILTER (Linux 6.12): report transmit stamps only, not receive stamps as well.
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SOF_TIMESTAMPING_OPT_RX_FILTER = 1 << 17
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
#: ``sock_extended_err.ee_origin`` of an ICMP / ICMPv6 error and of a transmit timestamp report
#: (linux/errqueue.h).
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
SO_EE_ORIGIN_TIMESTAMPING = 4
#: ICMP (type, code) and ICMPv6 (type, code) of "port unreachable".
_PORT_UNREACHABLE = {SO_EE_ORIGIN_ICMP: (3, 3), SO_EE_ORIGIN_ICMP6: (1, 4)}
#: Room for one error-queue report: SCM_TIMESTAMPNS, SCM_TIMESTAMPING (three timespecs) and a
#: sock_extended_err followed by the offender's address (a sockaddr_in6 at most).
TX_ANCILLARY_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(48) + socket.CMSG_SPACE(16 + 28)

#: SO_RCVBUFFORCE and SO_SNDBUFFORCE (asm-generic/socket.h): buffer sizes beyond the sysctl
#: limits (net.core.rmem_max, wmem_max), allowed with CAP_NET_ADMIN.
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
#: SO_MEMINFO (asm-generic/socket.h): a socket's memory figures as u32s, the ninth of which,
#: SK_MEMINFO_DROPS (linux/sock_diag.h, Linux 4.15), counts the datagrams it dropped.
SO_MEMINFO = 55
_MEMINFO = struct.Struct("=9I")
#: What the kernel charges a receive buffer for one queued datagram beyond its payload (the
#: sk_buff's truesize: 832 octets for a 41-octet datagram on loopback, Linux 6.1).  A transmit
#: timestamp report on the error queue is charged to the same buffer at about the same cost.
DATAGRAM_OVERHEAD = 832

_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")
#: struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data;
#: the offsets of ee_origin and ee_data (the OPT_ID counter of a transmit timestamp).
_EXTENDED_ERR = struct.Struct("@IBBBBII")
_EE_ORIGIN_AT = struct.calcsize("@I")
_EE_DATA_AT = struct.calcsize("@IBBBBI")
_EE_DATA = struct.Struct("@I")
#: Looked up once per control message: module globals are cheaper than ``socket.`` names.
_SOL_SOCKET = socket.SOL_SOCKET
_IPPROTO_IP = socket.IPPROTO_IP
_IPPROTO_IPV6 = socket.IPPROTO_IPV6
_IP_TTL = socket.IP_TTL


def _timespec_ns(data: bytes) -> int:
    """A struct timespec (as the kernel stamps) in nanoseconds."""
    seconds, nanoseconds = _TIMESPEC.unpack_from(data)
    return int(seconds * 1_000_000_000 + nanoseconds)


def receive_options(family: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` triples that make ``recvmsg`` report time and TTL."""
    ttl_option = (
        (socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_RECVTTL, 1)
    )
    return [(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1), ttl_option]


def traffic_class_receive_options(family: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` that make ``recvmsg`` report the TOS / Traffic Class octet
    (read it with :func:`received_dscp`; give ``recvmsg`` TRAFFIC_CLASS_ANCILLARY_SPACE)."""
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)]
    return [(socket.IPPROTO_IP, IP_RECVTOS, 1)]


def received_traffic_class(ancdata: Iterable[tuple[int, int, bytes]]) -> int | None:
    """The TOS / Traffic Class octet a packet arrived with (DSCP and ECN), or None when
    ``recvmsg`` did not report it."""
    for level, kind, data in ancdata:
        if (level == socket.IPPROTO_IP and kind == socket.IP_TOS and data) or (
            level == socket.IPPROTO_IPV6 and kind == IPV6_TCLASS and len(data) >= 4
        ):
            octet = data[0] if len(data) < 4 else _INT.unpack_from(data)[0]
            return int(octet) & 0xFF
    return None


def received_dscp(ancdata: Iterable[tuple[int, int, bytes]]) -> int | None:
    """The DSCP a packet arrived with (the TOS / Traffic Class octet without its ECN bits),
    or None when ``recvmsg`` did not report it."""
    octet = received_traffic_class(ancdata)
    return None if octet is None else octet >> 2


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
        if kind == SCM_TIMESTAMPNS and level == _SOL_SOCKET and len(data) >= 16:
            received_ns = _timespec_ns(data)
        elif (kind == _IP_TTL and level == _IPPROTO_IP) or (
            kind == IPV6_HOPLIMIT and level == _IPPROTO_IPV6
        ):
            # IPv4 delivers the TTL as an int on Linux (one octet on some other systems).
            ttl = _INT.unpack_from(data)[0] if len(data) >= 4 else data[0]
    return received_ns, ttl


def tx_timestamp_options() -> list[tuple[int, int, int]]:
    """Alternative ``(level, option, value)`` triples for transmit timestamps, best first.

    Set the first the kernel accepts (an older one refuses flags it does not know with EINVAL);
    if none is, T1 stays the user-space time.  Reporting software stamps (SOFTWARE) would also
    attach an SCM_TIMESTAMPING message to every received packet, which does not fit in
    ANCILLARY_SPACE and would cut off the TTL; OPT_RX_FILTER stops that.  Kernels without it
    get the stamps without the SOFTWARE reporting bit: then no SCM_TIMESTAMPING is ever
    delivered, and the error-queue report carries the time as SCM_TIMESTAMPNS instead, since
    the test sockets have SO_TIMESTAMPNS on (see ``receive_options``).
    """
    stamps = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY
    reported = stamps | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_RX_FILTER
    return [
        (socket.SOL_SOCKET, SO_TIMESTAMPING, reported),
        (socket.SOL_SOCKET, SO_TIMESTAMPING, stamps),
    ]


def parse_tx_timestamp(ancdata: Iterable[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """``(OPT_ID counter, kernel send time in Unix ns)`` from an error-queue ``recvmsg``.

    None when the report is not a transmit timestamp (an ICMP error, say) or has no time.  The
    counter is 0 for the first datagram sent after SO_TIMESTAMPING was set and grows by one per
    datagram.  SCM_TIMESTAMPING's first timespec is the software stamp; SCM_TIMESTAMPNS carries
    the same time when the SOFTWARE reporting bit is off (see ``tx_timestamp_options``).
    """
    # Once per packet sent: one pass that only keeps the messages' data, then just the two
    # numbers needed are decoded (ee_origin, ee_data), not the whole sock_extended_err.
    stamping = timestampns = error = None
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET:
            if kind == SCM_TIMESTAMPING:
                stamping = data
            elif kind == SCM_TIMESTAMPNS:
                timestampns = data
        elif (kind == IP_RECVERR and level == _IPPROTO_IP) or (
            kind == IPV6_RECVERR and level == _IPPROTO_IPV6
        ):
            error = data
    if (
        error is None
        or len(error) < _EXTENDED_ERR.size
        or error[_EE_ORIGIN_AT] != SO_EE_ORIGIN_TIMESTAMPING
    ):
        return None
    sent_ns = None
    if stamping is not None and len(stamping) >= _TIMESPEC.size:
        # All zero: no software stamp (a hardware-only report).
        sent_ns = _timespec_ns(stamping) or None
    if sent_ns is None:
        if timestampns is None or len(timestampns) < _TIMESPEC.size:
            return None
        sent_ns = _timespec_ns(timestampns)
    return _EE_DATA.unpack_from(error, _EE_DATA_AT)[0], sent_ns


def error_queue_options(family: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` that queue ICMP errors about what the socket sent.

    An unconnected UDP socket otherwise never hears that its packets were refused (port
    unreachable): with this, each such ICMP error is a report on the error queue, read with the
    transmit timestamps (see ``parse_icmp_error``).
    """
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)]
    return [(socket.IPPROTO_IP, IP_RECVERR, 1)]


def parse_icmp_error(ancdata: Iterable[tuple[int, int, bytes]]) -> str | None:
    """What an ICMP error report from the error queue says ("port unreachable", or the
    error's text), or None when the report is no ICMP error."""
    for level, kind, data in ancdata:
        if (
            (level == socket.IPPROTO_IP and kind == IP_RECVERR)
            or (level == socket.IPPROTO_IPV6 and kind == IPV6_RECVERR)
        ) and len(data) >= _EXTENDED_ERR.size:
            error, origin, icmp_type, code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
            if origin in _PORT_UNREACHABLE:
                if (icmp_type, code) == _PORT_UNREACHABLE[origin]:
                    return "port unreachable"
                return os.strerror(error)
    return None


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


def grow_buffers(sock: socket.socket, receive: int, send: int | None = None) -> None:
    """Ask for a ``receive``-octet receive buffer (and a ``send``-octet send buffer): with
    CAP_NET_ADMIN beyond the sysctl limits, else as far as they allow.

    The one place both sides size their test sockets, so that a stall of the reading process
    (a loaded host, a reflector that answers in bursts) queues datagrams instead of dropping them.
    """
    sizes = [(SO_RCVBUFFORCE, socket.SO_RCVBUF, receive)]
    if send is not None:
        sizes.append((SO_SNDBUFFORCE, socket.SO_SNDBUF, send))
    for force, plain, size in sizes:
        try:
            sock.setsockopt(_SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(_SOL_SOCKET, plain, size)


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on their way into ``sock`` since it was opened (its receive
    buffer full, mostly), or None where the kernel does not say.

    Such a drop happens on this host, after the network delivered the datagram: a reply lost
    so is not the path's loss, and a report that cannot say so blames the path.  One system
    call, for the end of a session: nothing is added to each packet's receive.
    """
    try:
        figures = sock.getsockopt(_SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
    except OSError:
        return None
    if len(figures) < _MEMINFO.size:
        return None
    return int(_MEMINFO.unpack(figures)[8])
