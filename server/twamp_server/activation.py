"""Sockets handed over by systemd (socket activation, sd_listen_fds(3)).

Under systemd, twamp-server.socket binds TCP 862 and UDP 863 and passes them to the service, so
the service needs no privilege at all (no CAP_NET_BIND_SERVICE) and can run in its own user
namespace; the ports also stay bound across restarts, so a restart refuses no client.  Without
the environment variables below, as when started by hand, the daemon binds everything itself.

The configuration still says which ports and addresses are served: a handed socket is used where
it matches a configured (address, port); a configured one that no handed socket matches is bound
by the daemon itself; a handed socket that matches nothing is reported and closed.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import MutableMapping

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
FIRST_FD = 3
#: The addresses a dual-stack wildcard socket serves (compared, never bound, here).
_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104


@dataclasses.dataclass(eq=False)
class HandedSocket:
    """One socket from systemd, with what the daemon needs to match it against the config."""

    sock: socket.socket
    host: str
    port: int
    #: An IPv6 wildcard socket that also receives IPv4 (IPv4-mapped addresses): what systemd
    #: binds for a bare port number such as ``ListenStream=862``.
    dual_stack: bool

    @classmethod
    def of(cls, sock: socket.socket) -> HandedSocket:
        host, port = sock.getsockname()[:2]
        return cls(sock, host, port, host == "::" and is_dual_stack(sock))

    def describe(self) -> str:
        kind = "TCP" if self.sock.type == socket.SOCK_STREAM else "UDP"
        where = f"[{self.host}]" if ":" in self.host else self.host
        return f"{kind} {where}:{self.port}"


class HandedSockets:
    """The sockets systemd passed to this process, taken one by one as the daemon binds."""

    def __init__(self, sockets: list[HandedSocket]) -> None:
        self._unused = sockets
        self._used: list[HandedSocket] = []

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> HandedSockets:
        """Read LISTEN_PID/LISTEN_FDS and remove them, as sd_listen_fds(3) does.

        Raises ValueError for variables that are present but malformed.
        """
        pid, count = environ.pop("LISTEN_PID", None), environ.pop("LISTEN_FDS", None)
        environ.pop("LISTEN_FDNAMES", None)
        if pid is None or count is None or pid != str(os.getpid()):
            return cls([])
        if not count.isdigit():
            raise ValueError(f"LISTEN_FDS={count!r} is not a number of sockets")
        sockets = []
        for fd in range(FIRST_FD, FIRST_FD + int(count)):
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            if sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM) or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                sock.close()
                raise ValueError(f"systemd passed file descriptor {fd}, not a TCP or UDP socket")
            sockets.append(HandedSocket.of(sock))
        return cls(sockets)

    def take(self, kind: int, host: str, port: int) -> HandedSocket | None:
        """The handed socket of ``kind`` that serves ``host``:``port``, if there is one."""
        for handed in self._unused:
            if handed.sock.type == kind and handed.port == port and _serves(handed, host):
                self._unused.remove(handed)
                self._used.append(handed)
                return handed
        return None

    def covered(self, kind: int, host: str, port: int) -> bool:
        """Whether a handed socket already taken serves ``host``:``port`` as well (a dual-stack
        wildcard serves both wildcards), so that binding it again would only collide."""
        return any(
            handed.sock.type == kind and handed.port == port and _serves(handed, host)
            for handed in self._used
        )

    def close_unused(self) -> list[str]:
        """Close the handed sockets nothing took; their descriptions, for a warning."""
        unused = [handed.describe() for handed in self._unused]
        for handed in self._unused:
            handed.sock.close()
        self._unused = []
        return unused


def is_dual_stack(sock: socket.socket) -> bool:
    """Whether ``sock`` is an IPv6 socket that also receives IPv4 (from IPv4-mapped addresses)."""
    return (
        sock.family == socket.AF_INET6
        and sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    )


def _serves(handed: HandedSocket, host: str) -> bool:
    return handed.host == host or (handed.dual_stack and host in _WILDCARDS)
