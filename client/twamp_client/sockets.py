"""The client's sockets: name resolution, the Session-Sender's UDP socket, descriptor budget.

Every failure is a :class:`ClientError` naming what failed, so that one bad target among many
gets its own sentence and the others go on.
"""

from __future__ import annotations

import resource
import socket

from twamp_common.udp_options import (
    DATAGRAM_OVERHEAD,
    dont_fragment_options,
    error_queue_options,
    grow_buffers,
    receive_options,
    send_options,
    traffic_class_options,
    traffic_class_receive_options,
    tx_timestamp_options,
)

from .control_session import ClientError
from .measurement import Target, Test

Address = tuple[str, int] | tuple[str, int, int, int]
#: Seconds of replies the test socket holds while this process is kept from reading it: a
#: loaded host's scheduler, or a reflector that stalls and then answers in a burst, must not
#: turn into reverse loss.
BUFFERED_SECONDS = 1.0
#: The most receive buffer a test socket asks for (the kernel doubles it for its bookkeeping).
MAX_RECEIVE_BUFFER = 16 * 1024 * 1024
#: Descriptors a process needs beside its measurements (stdio, epoll, timer, wake-up pipe...).
SPARE_DESCRIPTORS = 32


def resolve(target: Target, test: Test) -> tuple[int, Address]:
    """(family, socket address) of ``target``; ClientError when the name does not resolve."""
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(test.family or 0, socket.AF_UNSPEC)
    kind = socket.SOCK_DGRAM if target.connectionless else socket.SOCK_STREAM
    try:
        found = socket.getaddrinfo(target.host, target.effective_port, family, kind)
    except socket.gaierror as error:
        raise ClientError(f"cannot resolve {target.host!r}: {error.strerror}") from None
    found.sort(key=lambda entry: entry[0] != socket.AF_INET6)  # IPv6 first, like twping
    return found[0][0], found[0][4]  # type: ignore[return-value]


def enable_tx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to report when each packet leaves ``sock``; False if it will not.

    Set on a fresh socket, before anything is sent, so that the reports' counter (OPT_ID)
    equals the sequence number.  A refusal (an old kernel) is no error: T1 then stays the
    user-space time, as exact as before.
    """
    for level, option, value in tx_timestamp_options():
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            continue
        return True
    return False


def open_test_socket(test: Test, family: int, *, receive_dscp: bool = False) -> socket.socket:
    """The Session-Sender's non-blocking UDP socket: kernel timestamps (receive and, if the
    kernel can, transmit), ICMP errors on the error queue, TTL, DSCP, DF, source; with
    ``receive_dscp`` the DSCP each reply arrives with (read with TRAFFIC_CLASS_ANCILLARY_SPACE)."""
    settings = [*receive_options(family), *send_options(family, test.ttl)]
    if receive_dscp:
        settings += traffic_class_receive_options(family)
    settings += error_queue_options(family)
    settings += traffic_class_options(family, test.dscp)
    if test.dont_fragment:
        settings += dont_fragment_options(family)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for level, option, value in settings:
        sock.setsockopt(level, option, value)
    enable_tx_timestamps(sock)  # before anything is sent: its counter is then the seq
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104
    host, port = test.source or (wildcard, 0)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ClientError(
            f"cannot bind the test socket to {host} port {port}: {error.strerror}"
        ) from None
    sock.setblocking(False)
    return sock


def size_receive_buffer(sock: socket.socket, interval_ns: float, largest_datagram: int) -> None:
    """Let ``sock`` queue BUFFERED_SECONDS of a session sending every ``interval_ns`` (on
    average) datagrams of up to ``largest_datagram`` octets.

    Each packet costs the buffer twice, its reply and its transmit-time report, which the kernel
    charges to the same buffer.  The default buffer (net.core.rmem_default, 208 KiB) holds about
    25 ms of a 5000 packets/s session; slow sessions keep it, as the buffer is only a limit.
    """
    per_packet = 2 * (DATAGRAM_OVERHEAD + largest_datagram)
    wanted = BUFFERED_SECONDS * 1e9 / interval_ns * per_packet / 2  # the kernel doubles it
    if wanted * 2 > sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF):
        grow_buffers(sock, int(min(wanted, MAX_RECEIVE_BUFFER)))


def reserve_descriptors(measurements: int, per_measurement: int = 2) -> None:
    """Make room for ``measurements`` running at once (a control and a test socket each).

    Raises the soft open-file limit as far as the hard one allows; ClientError, before any
    packet is sent, when even that is too few.
    """
    needed = measurements * per_measurement + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return
    ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if ceiling < needed:
        raise ClientError(
            f"{measurements} measurements at once need {needed} open files,"
            f" but this process may open only {hard}",
            "raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit) or measure fewer"
            " targets at a time",
        )
