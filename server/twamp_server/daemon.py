"""The twamp-server daemon: binds, serves, reports to systemd, reloads and stops.

Life cycle: every socket is bound before READY=1 is sent; STATUS= is refreshed with the session
count and the reflected packet rate; WATCHDOG=1 is sent from the event loop itself, so a loop
that hangs stops the pings and systemd restarts us; SIGHUP reloads the configuration without
touching running sessions (RELOADING=1 … READY=1); SIGTERM sends STOPPING=1, refuses new work
and ends within SHUTDOWN_GRACE seconds.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twamp_common.clock import read_clock_state
from twamp_common.service import Notifier
from twamp_common.version import installed_version

from .activation import HandedSockets
from .admission import Limits
from .config import Config, ConfigError, load_config
from .control_server import ControlPolicy, Server
from .logs import report_suppressed
from .reflector import Reflector
from .sessions import Policy, Sessions
from .stamp_service import StampPolicy, StampService

#: Seconds between REFWAIT sweeps and clock-state refreshes.
TICK = 1.0
#: Seconds the daemon waits for control connections to close on SIGTERM.
SHUTDOWN_GRACE = 5.0
#: Keys whose new values only a restart applies (they decide which sockets exist).
RESTART_KEYS = (
    "listen",
    "control_port",
    "test_port",
    "light_ports",
    "stamp_ports",
    "stamp_mode",
    "stamp_key_id",
)
#: Most TWAMP Light senders, and most STAMP sessions, tracked at once per configured max_sessions.
LIGHT_SESSIONS_PER_SLOT = 10


class Daemon:
    """One running twamp-server."""

    def __init__(self, config: Config, log: Any, notifier: Notifier | None = None) -> None:
        self.config = config
        self.log = log
        self.notifier = notifier or Notifier()
        self.loop = asyncio.get_running_loop()
        self.reflector = Reflector(self._reflector_failed)
        self.stamp = StampService(
            stateful=config.stamp_mode == "stateful",
            authenticated=config.stamp_key_id is not None,
            on_failure=self._reflector_failed,
            log=self._log_soon,
        )
        self.sessions = Sessions(table_policy(config), self.reflector, self.stamp, log)
        self.server = Server(control_policy(config), self.reflector, self.sessions, log)
        self.listeners: list[asyncio.Server] = []
        self.stopping = asyncio.Event()
        self._reloads: set[asyncio.Task[None]] = set()
        self._last_status = (time.monotonic(), 0)
        #: Test packets the kernel dropped at our sockets, as of the last status.
        self._dropped = 0
        #: The exit status: 0 unless a reflector thread (TWAMP-Test or STAMP) died of a bug.
        self.exit_status = 0
        #: The KeyID of the STAMP HMAC key, as the service was started (None: unauthenticated).
        self.stamp_key_id = config.stamp_key_id

    async def bind(self, handed: HandedSockets | None = None) -> None:
        """Open every socket the configuration asks for; OSError if one cannot be had.

        ``handed`` are the sockets systemd passed (socket activation): each one that serves a
        configured address and port is used instead of binding that one here.
        """
        config = self.config
        handed = handed or HandedSockets([])
        self._apply_udp_policy()
        reflector, stamp = self.reflector, self.stamp
        for address in config.listen:
            host = str(address)
            try:
                self._bind_udp(
                    handed,
                    host,
                    config.test_port,
                    functools.partial(reflector.adopt, light=False),
                    functools.partial(reflector.bind, permanent=True),
                )
            except OSError as error:
                if _family_unavailable(error, address.is_unspecified):
                    self.log.warning("address family unavailable, not listening", address=host)
                    continue
                raise
            for port in config.light_ports:
                self._bind_udp(
                    handed,
                    host,
                    port,
                    functools.partial(reflector.adopt, light=True),
                    functools.partial(reflector.bind, permanent=True, light=True),
                )
            for port in config.stamp_ports:
                self._bind_udp(handed, host, port, stamp.adopt, stamp.bind)
            control = handed.take(socket.SOCK_STREAM, host, config.control_port)
            if control is not None:
                self.listeners.append(
                    await asyncio.start_server(
                        self.server.handle, sock=control.sock, backlog=self._backlog
                    )
                )
            elif not handed.covered(socket.SOCK_STREAM, host, config.control_port):
                self.listeners.append(
                    await asyncio.start_server(
                        self.server.handle,
                        host,
                        config.control_port,
                        reuse_address=True,
                        backlog=self._backlog,
                    )
                )
        for unused in handed.close_unused():
            self.log.warning(
                "systemd passed a socket the configuration does not use; closed",
                socket=unused,
                hint="make twamp-server.socket and the configuration name the same ports",
            )
        if not self.listeners:
            raise OSError(errno.EADDRNOTAVAIL, "no listen address could be bound")

    @property
    def _backlog(self) -> int:
        """Connections the kernel may queue before they are accepted: as many as the server
        holds at once (at least asyncio's 100), so that a burst of clients waits in the queue
        rather than in SYN-ACK retransmissions, seconds apart."""
        return max(100, self.config.max_connections)

    @staticmethod
    def _bind_udp(
        handed: HandedSockets,
        host: str,
        port: int,
        adopt: Callable[[socket.socket], None],
        bind: Callable[[str, int], None],
    ) -> None:
        """Serve ``host``:``port`` with the socket systemd passed for it, or bind one."""
        passed = handed.take(socket.SOCK_DGRAM, host, port)
        if passed is not None:
            adopt(passed.sock)
        elif not handed.covered(socket.SOCK_DGRAM, host, port):
            bind(host, port)

    def _apply_udp_policy(self) -> None:
        config = self.config
        self.reflector.light_short = config.light_short_requests
        self.reflector.on_light_drop = self._light_dropped
        self.stamp.set_policy(
            StampPolicy(
                allowed=config.stamp_allowed,
                capacity=config.max_sessions * LIGHT_SESSIONS_PER_SLOT if config.stamp_ports else 0,
                per_address=config.stamp_sessions_per_address,
                # The KeyID the service started with (stamp_key_id applies only on restart);
                # a reload may give it a new secret.
                key=config.keys.get(self.stamp_key_id) if self.stamp_key_id else None,
            )
        )

    def _light_dropped(self, reason: str, sender: tuple[str, int]) -> None:
        host, port = sender
        self._log_soon("light packet dropped", peer=host, peer_port=port, reason=reason)

    def _log_soon(self, event: str, **fields: object) -> None:
        """From the reflector threads: log on the event loop, which owns the log."""
        self.loop.call_soon_threadsafe(functools.partial(self.log.info, event, **fields))

    async def run(self, config_path: Path) -> int:
        """Serve until SIGTERM/SIGINT; the exit status."""
        self.loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        self.loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        self.loop.add_signal_handler(signal.SIGHUP, self._reload_soon, config_path)
        self._refresh_clock()
        self.reflector.start()
        self.stamp.start()
        self.notifier.ready(self.status_text())
        # After READY=1: the version's metadata lookup (~25 ms) need not delay the start.
        self.log.info(
            "twamp-server ready",
            version=installed_version("twamp-server"),
            control_port=self.config.control_port,
            test_port=self.config.test_port,
            listen=" ".join(str(address) for address in self.config.listen),
            modes=int(self.config.modes),
            light_ports=" ".join(map(str, self.config.light_ports)) or "off",
            stamp_ports=" ".join(map(str, self.config.stamp_ports)) or "off",
            stamp_mode=self.config.stamp_mode,
            stamp_authenticated=self.stamp.authenticated,
        )
        ticker = asyncio.create_task(self._tick())
        await self.stopping.wait()
        ticker.cancel()
        await self.shutdown()
        return self.exit_status

    def _reflector_failed(self, error: BaseException) -> None:
        """Called on the reflector thread when a bug ended it: stop, so that systemd restarts us."""
        self.loop.call_soon_threadsafe(self._fail, error)

    def _fail(self, error: BaseException) -> None:
        self.log.error(
            "reflector failed; stopping", error=f"{type(error).__name__}: {error}", exc_info=error
        )
        self.exit_status = 1
        self.stopping.set()

    def _reload_soon(self, config_path: Path) -> None:
        task = self.loop.create_task(self.reload(config_path))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self, config_path: Path) -> None:
        """SIGHUP: read the file again and apply what can be applied without a restart."""
        self.notifier.reloading()
        try:
            new = await self.loop.run_in_executor(None, load_config, config_path)
        except ConfigError as error:
            self.log.error("reload failed; keeping the running configuration", error=str(error))
        else:
            kept = [key for key in RESTART_KEYS if getattr(new, key) != getattr(self.config, key)]
            if kept:
                self.log.warning(
                    "these settings apply only after a restart", settings=" ".join(kept)
                )
            self.config = new
            self.server.policy = control_policy(new)
            self.sessions.apply(table_policy(new))
            self._apply_udp_policy()
            for warning in new.warnings:
                self.log.warning(warning)
            self.log.info("configuration reloaded", max_sessions=new.max_sessions)
        self.notifier.ready(self.status_text())

    async def _tick(self) -> None:
        next_status = time.monotonic()
        next_watchdog = time.monotonic()
        while True:
            now = time.monotonic()
            self.sessions.expire(now)
            report_suppressed(self.log)
            if now >= next_status:
                self._refresh_clock()
                self._report_drops()
                self.notifier.status(self.status_text())
                next_status = now + self.config.status_interval
            interval = self.notifier.watchdog_interval
            if interval is not None and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + interval
            await asyncio.sleep(min(TICK, interval or TICK))

    def _refresh_clock(self) -> None:
        estimate = read_clock_state().error_estimate()
        self.reflector.error_estimate = estimate.to_wire()
        self.stamp.set_clock(estimate)

    def _report_drops(self) -> None:
        """Warn, once a status interval at most, of test packets this host dropped: their
        senders count them as lost on the way out, and only this host can say it was here."""
        dropped = self.reflector.dropped() + self.stamp.dropped()
        if dropped > self._dropped:
            self.log.warning(
                "test packets dropped by this host",
                dropped=dropped - self._dropped,
                since_start=dropped,
                hint="the receive buffers were full: this host did not keep up, or"
                " net.core.rmem_max keeps them small (raise it)",
            )
            self._dropped = dropped

    def status_text(self) -> str:
        """The STATUS= line: connections, sessions, and the reflected packet rate."""
        now = time.monotonic()
        held = self.sessions.snapshot()
        then, count = self._last_status
        rate = (held.reflected - count) / (now - then) if now > then else 0.0
        self._last_status = (now, held.reflected)
        return (
            f"{held.connections} control connections, {held.sessions} sessions"
            f" ({held.running} running), {held.light_senders} light senders,"
            f" {held.stamp_sessions} stamp sessions, {rate:.0f} packets/s reflected"
            + (f", {self._dropped} dropped by this host" if self._dropped else "")
        )

    async def shutdown(self) -> None:
        """Refuse new work, end every connection and session, close every socket."""
        self.notifier.stopping()
        self.log.info("twamp-server stopping", connections=self.sessions.snapshot().connections)
        self.server.accepting = False
        for listener in self.listeners:
            listener.close()
        self.sessions.end_connections("server stopping")
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.sessions.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.sessions.end_light_senders("server stopping")
        self.reflector.close()
        self.sessions.end_stamp_sessions("server stopping")
        self.log.info("twamp-server stopped")


def control_policy(config: Config) -> ControlPolicy:
    """What TWAMP-Control needs of ``config``."""
    return ControlPolicy(
        modes=config.modes,
        keys=config.keys,
        pbkdf2_count=config.pbkdf2_count,
        idle_timeout=config.idle_timeout,
        control_timeout=config.control_timeout,
        network_of=config.network_of,
        limits=Limits(
            test_port=config.test_port,
            max_sessions=config.max_sessions,
            max_sessions_per_client=config.max_sessions_per_client,
            max_sessions_per_network=config.max_sessions_per_network,
            test_ports=config.test_ports,
        ),
    )


def table_policy(config: Config) -> Policy:
    """What the session table needs of ``config``."""
    return Policy(
        max_connections=config.max_connections,
        max_connections_per_client=config.max_connections_per_client,
        max_connections_per_network=config.max_connections_per_network,
        max_idle_connections=config.max_idle_connections,
        reserved_connections=config.reserved_connections,
        refwait=config.session_timeout_seconds,
        network_of=config.network_of,
        client_allowed=config.client_allowed,
        light_allowed=config.light_allowed,
        light_capacity=config.max_sessions * LIGHT_SESSIONS_PER_SLOT if config.light_ports else 0,
        light_per_address=config.light_senders_per_address,
    )


def _family_unavailable(error: OSError, wildcard: bool) -> bool:
    """A wildcard address of a family this host lacks (IPv6 disabled) is skipped, not fatal."""
    return wildcard and error.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
