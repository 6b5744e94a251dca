"""The monitor's loop: the engine in a thread of its own, the schedule in the main thread.

The main thread sleeps in ``select`` on one pipe until the next target is due; the engine's
callbacks (a run is done) and the signal handlers (SIGHUP reload, SIGTERM/SIGINT stop, through
``signal.set_wakeup_fd``) write to that pipe, so the schedule reacts at once and never polls.
Results are handled here, off the engine's thread, so logging never delays a packet.

Once started, the daemon freezes what it has made so far (``gc.freeze``): a full collection,
which pauses every thread, then visits only what came later, not the tens of thousands of
modules', classes' and functions' objects.  A reload runs with a short switch interval (see
``_yielding``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import os
import random
import select
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

from twamp_common.ipfix import DOCUMENTATION_PEN
from twamp_common.service import ConfigError, Notifier

from ..control_session import ClientError
from ..engine import Engine
from ..ipfix_export import IpfixSender
from ..measurement import Measurement
from ..reports.ipfix import record as ipfix_record
from ..sockets import reserve_descriptors
from . import config as config_module
from .config import MonitorConfig, TargetConfig
from .exposition import serve
from .history import Writer
from .logs import Log
from .metrics import Metrics
from .scheduler import Slot, due, first_slot, next_wake

#: Seconds between two STATUS updates after runs (500 targets must not flood systemd).
STATUS_INTERVAL = 1.0
#: The interpreter's switch interval while a reload reads and applies the file.
RELOAD_SWITCH_S = 0.0005


@contextlib.contextmanager
def _yielding() -> Iterator[None]:
    """Hand the interpreter to the engine's thread within RELOAD_SWITCH_S while in the block.

    Rereading 500 targets takes about 26 ms of CPU on the main thread, and CPython lets a
    thread keep the interpreter for 5 ms while another waits: the engine's packets would
    leave in gaps of that size.  Only for the reload: kept short for good, the switches would
    draw a scrape of 500 targets out past 100 ms.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(RELOAD_SWITCH_S)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@dataclasses.dataclass(slots=True)
class Counters:
    runs: int = 0
    failed: int = 0
    last_error: str | None = None


class Daemon:
    """Runs every configured target on its schedule until SIGTERM."""

    def __init__(self, config: MonitorConfig, *, log: Log | None = None) -> None:
        self.config = config
        self.log = log or Log()
        self.notifier = Notifier()
        self.engine = Engine()
        self.slots: dict[str, Slot] = {}
        self.counters = Counters()
        self._rng = random.Random()  # noqa: S311 - start offsets, not cryptography
        self._done: collections.deque[tuple[Slot, Measurement, float]] = collections.deque()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._reload = False
        self._stop = False
        self._status_at = 0.0
        self.metrics = Metrics()
        self.history: Writer | None = None
        self.ipfix: list[IpfixSender] = []

    # Signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True

    # The loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Until SIGTERM or SIGINT; the exit status."""
        engine_thread = threading.Thread(
            target=self.engine.run, kwargs={"forever": True}, name="engine", daemon=True
        )
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_write)
        try:
            reserve_descriptors(len(self.config.targets), per_measurement=2)
            self._serve_metrics()
            self._open_history()
            self._open_ipfix()
            engine_thread.start()
            self._apply(self.config, first=True)
            gc.freeze()
            self.notifier.ready(self._status())
            self._loop()
        finally:
            self.notifier.stopping()
            self.log("info", "stopping", runs=self.counters.runs)
            self.engine.shutdown()
            if engine_thread.ident is not None:
                engine_thread.join(timeout=30)
            signal.set_wakeup_fd(old_wakeup)
            gc.unfreeze()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.engine.close()
            if self.history is not None:
                self.history.close()
            for sender in self.ipfix:
                sender.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
        return 0

    def _serve_metrics(self) -> None:
        """The Prometheus endpoint, when configured: threads of its own."""
        listen = self.config.metrics_listen
        if listen is None:
            return
        host, port = listen
        try:
            serve(host, port, self.metrics.exposition)
        except OSError as error:
            raise ClientError(f"metrics_listen {host}:{port}: {error.strerror}") from None
        self.log("info", "metrics endpoint", listen=f"{host}:{port}")

    def _open_history(self) -> None:
        path = self.config.history
        if path is None:
            return
        try:
            self.history = Writer(path, self.config.history_days)
        except (OSError, sqlite3.Error) as error:
            raise ClientError(f"history {path}: {error}") from None

    def _open_ipfix(self) -> None:
        """One sender per collector; a reload keeps them (a change needs a restart)."""
        settings = self.config.ipfix
        if settings is None:
            return
        if settings.enterprise == DOCUMENTATION_PEN:
            self.log(
                "warning",
                "ipfix_enterprise is 32473, the PEN RFC 5612 reserves for documentation:"
                " set your organisation's Private Enterprise Number",
            )
        for address in settings.collectors:
            self.ipfix.append(
                IpfixSender(
                    address,
                    transport=settings.transport,
                    observation_domain=settings.observation_domain,
                    enterprise=settings.enterprise,
                    template_refresh=settings.template_refresh,
                    log=lambda line: self.log("warning", line),
                )
            )
        self.metrics.ipfix = self.ipfix
        self.log(
            "info",
            "ipfix export",
            collectors=" ".join(f"{host}:{port}" for host, port in settings.collectors),
            transport=settings.transport,
        )

    def _loop(self) -> None:
        watchdog = self.notifier.watchdog_interval
        next_ping = time.monotonic()
        while not self._stop:
            now = time.monotonic()
            if watchdog is not None and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + watchdog
            while self._done:
                self._finished(*self._done.popleft())
            if self._reload:
                self._reload = False
                self._reread()
            for name in due(self.slots, now):
                self._start(self.slots[name], now)
            wake = next_wake(self.slots)
            timeout = None if wake is None else max(0.0, wake - time.monotonic())
            if watchdog is not None:
                timeout = min(timeout if timeout is not None else watchdog, watchdog)
            ready, _, _ = select.select([self._wake_read], [], [], timeout)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_read, 4096):
                        pass

    def _start(self, slot: Slot, now: float) -> None:
        slot.start(now)
        config = slot.config

        def done(measurement: Measurement) -> None:
            # On the engine's thread: hand over and wake the main thread, nothing more.
            self._done.append((slot, measurement, time.monotonic()))
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_write, b"d")

        slot.run_id = self.engine.submit(config.target, config.test, done)

    def _finished(self, slot: Slot, measurement: Measurement, ended: float) -> None:
        started = slot.running_since if slot.running_since is not None else ended
        overran = slot.finish(ended)
        self.counters.runs += 1
        if measurement.error is not None:
            self.counters.failed += 1
            self.counters.last_error = f"{slot.config.name}: {measurement.error}"
        if self.slots.get(slot.config.name) is not slot:
            return  # the target was removed or changed by a reload while it ran
        self.metrics.record(slot.config.name, measurement, ended - started)
        if self.history is not None:
            self.history.record(slot.config, measurement, time.time() - (ended - started))
        if self.ipfix and (fields := ipfix_record(measurement, slot.config.name)) is not None:
            for sender in self.ipfix:
                sender.submit(fields)
        self.log(
            "warning" if measurement.status else "info",
            "run",
            **run_facts(slot.config, measurement, ended - started),
        )
        if overran:
            self.log(
                "warning",
                "overrun",
                target=slot.config.name,
                duration_s=round(ended - started, 3),
                every_s=slot.config.every,
                next_in_s=round(slot.due - ended, 3),
            )
        if ended >= self._status_at:
            self.notifier.status(self._status())
            self._status_at = ended + STATUS_INTERVAL

    def _reread(self) -> None:
        self.notifier.reloading()
        path = self.config.path or config_module.DEFAULT_PATH
        with _yielding():
            try:
                new = config_module.read(path)
            except ConfigError as error:
                self.log(
                    "error", "reload failed, keeping the running configuration", error=str(error)
                )
                self.counters.last_error = f"reload: {error}"
            else:
                self._apply(new, first=False)
                self.config = new
        self.notifier.ready(self._status())

    def _apply(self, new: MonitorConfig, *, first: bool) -> None:
        """Start slots for new and changed targets, keep unchanged ones, drop removed ones.

        The run in progress of a changed or removed target is cancelled: it measures with
        settings that no longer hold, and its result would go nowhere (the engine delivers
        none).
        """
        now = time.monotonic()
        kept, changed, added = 0, list[str](), list[str]()
        for name in list(self.slots):
            if name not in new.targets:
                self._cancel(self.slots.pop(name))
                changed.append(name)
        for name, target in new.targets.items():
            slot = self.slots.get(name)
            if slot is not None and slot.config == target:
                kept += 1
                continue
            if slot is None:
                added.append(name)
            else:
                self._cancel(slot)
                changed.append(name)
            self.slots[name] = first_slot(target, now, self._rng)
        self.metrics.configure(new.targets)
        if not first and new.metrics_listen != self.config.metrics_listen:
            self.log("warning", "metrics_listen changes only on restart")
        self.log(
            "info",
            "started" if first else "reloaded",
            targets=len(new.targets),
            unchanged=None if first else kept,
            restarted=None if first else ",".join(changed) or "none",
            added=None if first else ",".join(added) or "none",
        )

    def _cancel(self, slot: Slot) -> None:
        if slot.run_id is not None:
            self.engine.cancel(slot.run_id)
            self.log("info", "run cancelled", target=slot.config.name)

    def _status(self) -> str:
        text = (
            f"{len(self.slots)} targets, {self.counters.runs} runs, {self.counters.failed} failed"
        )
        if self.counters.last_error:
            text += f"; last error: {self.counters.last_error}"
        return text


def run_facts(config: TargetConfig, measurement: Measurement, duration: float) -> dict[str, object]:
    """The figures of one run for its log line (milliseconds, like the text report)."""
    facts: dict[str, object] = {"target": config.name, "host": config.target.host}
    summary = measurement.summary
    if summary is not None:
        facts |= {
            "sent": summary.sent,
            "received": summary.received,
            "loss_percent": round(summary.loss_percent, 3),
        }
        for name, dist in (
            ("rtt", summary.round_trip),
            ("out", summary.outbound),
            ("in", summary.inbound),
        ):
            if dist is not None:
                facts[f"{name}_avg_ms"] = round(dist.avg / 1e6, 3)
                facts[f"{name}_max_ms"] = round(dist.max / 1e6, 3)
        if summary.jitter_rfc3550 is not None:
            facts["jitter_ms"] = round(summary.jitter_rfc3550 / 1e6, 3)
    facts["duration_s"] = round(duration, 3)
    facts["error"] = measurement.error
    return facts
