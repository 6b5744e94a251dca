"""Whether a Request-TW-Session is accepted, with which Accept code, port and peer.

Pure decisions, kept apart from the sockets so that every refusal path is testable: the control
server gathers the facts (the control connection's addresses, how many sessions run, which ports
can be had) and this module answers.  Accept codes follow RFC 4656 §3.3 / RFC 5357 §3.5: 1 for a
refused address or port, 3 for what we do not support, 5 for a temporary resource limit
(``max_sessions``, the per-client or the per-network limit reached).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable

from twamp_common.codes import Accept
from twamp_common.control_messages import IPAddress, RequestTWSession
from twamp_common.test_packets import SENDER_HEADER_SIZE
from twamp_common.udp_options import dscp_from_type_p

#: Largest UDP payload: padding beyond this cannot be sent at all.
MAX_UDP_PAYLOAD = 65507
#: Longest Stop-Sessions Timeout we honour, seconds: reflecting for longer after a stop only
#: holds a slot for packets the sender will call lost anyway.
MAX_STOP_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The configuration values admission depends on."""

    test_port: int
    max_sessions: int
    max_sessions_per_client: int
    max_sessions_per_network: int
    #: Ports a client may ask for besides ``test_port``: inclusive range, or None for any
    #: unprivileged port.
    test_ports: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one Request-TW-Session."""

    accept: Accept
    #: Why, in words for the log line.
    reason: str
    #: The reflector port (0 when refused).
    port: int = 0
    #: The address replies go to and packets must come from, with the announced sender port.
    peer: tuple[str, int] | None = None
    dscp: int = 0
    #: Seconds to keep reflecting after Stop-Sessions.
    timeout: float = 0.0
    #: Whether the request shows a NAT (a Sender Address that is neither zero nor the control
    #: peer's): only then may the sender port be re-learnt from the first packet.
    nat: bool = False


def _refuse(accept: Accept, reason: str) -> Verdict:
    return Verdict(accept, reason)


def judge(
    request: RequestTWSession,
    *,
    authenticated: bool,
    control_peer: IPAddress,
    control_local: IPAddress,
    limits: Limits,
    running_total: int,
    running_for_client: int,
    running_for_network: int,
    port_usable: Callable[[int], bool],
    sender_taken: Callable[[int, tuple[str, int]], bool],
    timeout: float,
) -> Verdict:
    """Decide a request.  ``timeout`` is the request's Timeout in seconds; ``sender_taken``
    says whether a session already receives on a port from an (address, port)."""
    if request.conf_sender or request.conf_receiver:
        return _refuse(Accept.NOT_SUPPORTED, "Conf-Sender and Conf-Receiver must be 0 in TWAMP")
    if request.ipvn != control_peer.version:
        return _refuse(
            Accept.NOT_SUPPORTED,
            f"IPv{request.ipvn} test session over an IPv{control_peer.version} control connection",
        )
    dscp = dscp_from_type_p(request.type_p)
    if dscp is None:
        return _refuse(Accept.NOT_SUPPORTED, f"Type-P descriptor {request.type_p:#010x}")
    if request.padding_length > MAX_UDP_PAYLOAD - SENDER_HEADER_SIZE[authenticated]:
        return _refuse(Accept.NOT_SUPPORTED, f"padding length {request.padding_length}")
    receiver = request.receiver_address
    if not _unspecified(receiver) and receiver != control_local:
        return _refuse(
            Accept.FAILURE,
            f"receiver address {receiver} is not this server's control address {control_local}",
        )
    if request.sender_port == 0:
        return _refuse(Accept.FAILURE, "sender port 0")
    if running_total >= limits.max_sessions:
        return _refuse(
            Accept.TEMPORARY_RESOURCE_LIMIT, f"max_sessions ({limits.max_sessions}) reached"
        )
    if running_for_client >= limits.max_sessions_per_client:
        return _refuse(
            Accept.TEMPORARY_RESOURCE_LIMIT,
            f"max_sessions_per_client ({limits.max_sessions_per_client}) reached",
        )
    if running_for_network >= limits.max_sessions_per_network:
        return _refuse(
            Accept.TEMPORARY_RESOURCE_LIMIT,
            f"max_sessions_per_network ({limits.max_sessions_per_network}) reached",
        )
    port = _choose_port(request.receiver_port, limits, port_usable)
    peer = (str(control_peer), request.sender_port)
    if sender_taken(port, peer):
        # Two sessions from one sender port to one reflector port could not be told apart.
        return _refuse(Accept.FAILURE, "another session already uses that sender port")
    # Replies only ever go to the control connection's peer: a zero Sender Address means that
    # address (RFC 5357 §3.5), and a different one is a sender behind a NAT that wrote its
    # private address, never a third party we could be aimed at.
    sender = request.sender_address
    nat = not _unspecified(sender) and sender != control_peer
    if nat:
        reason = f"accepted; sender address {sender} taken as {control_peer} (NAT)"
    else:
        reason = "accepted"
    return Verdict(
        Accept.OK,
        reason,
        port=port,
        peer=peer,
        dscp=dscp,
        timeout=min(timeout, MAX_STOP_TIMEOUT),
        nat=nat,
    )


def _unspecified(address: IPAddress) -> bool:
    return address.is_unspecified


def _choose_port(requested: int, limits: Limits, port_usable: Callable[[int], bool]) -> int:
    """The requested Receiver Port when it is allowed and free, else ``test_port``.

    RFC 5357 §3.5 (with erratum 1587 / RFC 8545 §5.1): a server that cannot use the requested
    port accepts with an alternate one in the Port field.
    """
    if requested in (0, limits.test_port):
        return limits.test_port
    if limits.test_ports is not None:
        low, high = limits.test_ports
        allowed = low <= requested <= high
    else:
        allowed = requested >= 1024
    return requested if allowed and port_usable(requested) else limits.test_port


def normalise(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
