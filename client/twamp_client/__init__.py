"""TWAMP Control-Client and Session-Sender: the ``twamp-client`` command and its library.

The library: :func:`measure` runs one measurement and returns its :class:`Measurement`;
:class:`Engine` runs many at once in one thread and hands each result to a callback.

Modules:

* ``measurement``: Target, Test, Measurement, Observer (plain data);
* ``engine``: the epoll loop running many measurements; ``timer``: its timerfd;
* ``control_session``: the TWAMP-Control dialogue as a generator;
* ``sockets``: resolution, the test socket, the open-file budget;
* ``options``: the command line; ``keyfile``: the formats of --key-file; ``__main__``: argv
  in, reporters chosen;
* ``quality``: MOS per direction of voice-model runs;
* ``reports``: ``text``, ``json``, ``raw``, ``table`` and ``ipfix`` (a run as an IPFIX
  record), one reporter each; ``ipfix_export``: records to a collector over UDP or TCP;
* ``monitor``: the twamp-monitor daemon (``config``, ``scheduler``, ``daemon``, ``metrics``
  and ``exposition`` for Prometheus, ``history``, ``logs``).

The Session-Sender's schedule and accounting are ``twamp_common.test_session``.
"""

from __future__ import annotations

from .engine import Engine
from .measurement import Measurement, Observer, Target, Test

__all__ = ["Engine", "Measurement", "Observer", "Target", "Test", "measure"]


def measure(target: Target, test: Test, observer: Observer | None = None) -> Measurement:
    """Measure one target and return the result (errors are in ``Measurement.error``)."""
    engine = Engine(precise=True)
    results: list[Measurement] = []
    try:
        engine.submit(target, test, results.append, observer)
        engine.run()
    finally:
        engine.close()
    return results[0]
