"""TWAMP Server and Session-Reflector daemon (TWAMP, TWAMP Light, STAMP).

Modules:

* ``daemon``: the process (binding, reload, the tick, shutdown); ``__main__``: argv in;
  ``activation``: sockets systemd hands over;
* ``config``: the configuration file; ``keystore``: the keys file and its secrets;
* ``control_server``: TWAMP-Control connections; ``admission``: Request-TW-Session verdicts;
  ``derivations``: the global cap on key derivations; ``backoff``: failed authentications;
* ``sessions``: the one table of connections, test sessions, Light senders and STAMP sessions,
  its ``expire(now)`` and ``snapshot()``;
* ``reflector``: the TWAMP-Test and TWAMP Light Session-Reflector; ``stamp_service``: the
  STAMP one; ``poll_thread``: the epoll thread both run on; ``drops``: their rate-limited
  reports of dropped packets;
* ``logs``: structured logging, escaping and rate limits.
"""
