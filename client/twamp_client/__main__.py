"""``twamp-client``: measure paths to TWAMP servers or TWAMP Light reflectors.

This module only reads argv, runs the engine and chooses reporters.  Exit status: 0 when
replies came (from every target), 1 when every packet to some target was lost, 2 for usage
errors and when any target failed with an error (name resolution, connection, authentication,
protocol; with partial results printed when a test had already run).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from types import FrameType
from typing import IO

from .control_session import ClientError
from .engine import Engine
from .measurement import Measurement, Target
from .options import BadTarget, Options, UsageError, parse, read_secret
from .reports import json as json_report
from .reports import raw as raw_report
from .reports import table
from .reports.text import TextReport, write_block
from .sockets import reserve_descriptors


class _Interrupts:
    """Ctrl-C: the first stops sending and lets replies in flight come back, so that the
    summary is printed as usual; the second exits at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0
        self.previous = signal.signal(signal.SIGINT, self)

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self.engine.stop_sending()

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


class _Stdout:
    """Writes that survive a closed stdout (``twamp-client ... | head``): once the reader is
    gone the run stops sending and ends quietly."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.closed = False

    def write(self, text: str) -> int:
        if not self.closed:
            try:
                sys.stdout.write(text)
            except BrokenPipeError:
                self._close()
        return len(text)

    def flush(self) -> None:
        if not self.closed:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self._close()

    def _close(self) -> None:
        self.closed = True
        # Python flushes stdout at exit too: point it at /dev/null so that it cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        self.engine.stop_sending()


def measure_all(options: Options, engine: Engine, out: IO[str]) -> list[Measurement]:
    """Every target measured at once; the results in the order given."""
    test = options.test
    if test.key_id:
        test = dataclasses.replace(test, secret=read_secret(options))
    targets = options.targets
    connectionless = all(
        isinstance(target, BadTarget) or target.connectionless for target in targets
    )
    reserve_descriptors(
        sum(isinstance(target, Target) for target in targets),
        per_measurement=1 if connectionless else 2,
    )
    textual = not (options.json or options.raw or options.quiet)
    observer = (
        TextReport(per_packet=not options.summary_only, out=out)
        if len(targets) == 1 and textual
        else None
    )
    results: dict[int, Measurement] = {}
    for index, target in enumerate(targets):
        if isinstance(target, BadTarget):
            results[index] = Measurement.failed(Target(target.text), test, target.error)
            continue

        def done(result: Measurement, at: int = index) -> None:
            results[at] = result

        engine.submit(target, test, done, observer)
    interrupts = _Interrupts(engine)
    try:
        engine.run()
    finally:
        interrupts.restore()
    return [results[index] for index in range(len(targets))]


def report(options: Options, measurements: list[Measurement], out: IO[str]) -> None:
    """The chosen output of finished measurements, and their errors on stderr."""
    several = len(measurements) > 1
    if options.raw:
        raw_report.write(measurements, out)
    elif options.json:
        json_report.write(measurements, out)
    elif not options.quiet:
        if several:
            for measurement in measurements:
                write_block(measurement, out)
                out.write("\n")
            table.write(measurements, out)
        else:
            TextReport(per_packet=False, out=out).summary(measurements[0])
    out.flush()
    for measurement in measurements:
        who = f"{measurement.target.host}: " if several else ""
        if measurement.error is not None:
            print(f"twamp-client: {who}{measurement.error}", file=sys.stderr)
        if measurement.hint:
            print(f"twamp-client: {who}hint: {measurement.hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse(argv)
        engine = Engine(precise=len(options.targets) == 1)
        out = _Stdout(engine)
        try:
            measurements = measure_all(options, engine, out)  # type: ignore[arg-type]
        finally:
            engine.close()
        report(options, measurements, out)  # type: ignore[arg-type]
        return max(measurement.status for measurement in measurements)
    except UsageError as error:
        print(f"twamp-client: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"twamp-client: {error}", file=sys.stderr)
        if error.hint:
            print(f"twamp-client: hint: {error.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
