"""Exponential backoff after failures, by key (a client address, a network).

A failed authenticated set-up costs the server a PBKDF2 derivation (milliseconds of CPU); a
flood of them from a few addresses once took 1.7 cores and delayed reflection.  After its
``free`` failures a key is refused outright for 1 s, then 2 s, 4 s ... up to ``longest``;
the count is forgotten once the key has been quiet for twice ``longest``.
"""

from __future__ import annotations

from collections.abc import Hashable

#: Keys tracked at most; expired ones are dropped first, then the oldest.
TRACKED = 10000


class Backoff:
    """Failures per key and until when each key is refused."""

    def __init__(self, free: int, *, first: float = 1.0, longest: float = 60.0) -> None:
        self.free = free
        self.first = first
        self.longest = longest
        #: key -> [failures, refused until, time of the last failure]
        self._keys: dict[Hashable, list[float]] = {}

    def refused_for(self, key: Hashable, now: float) -> float:
        """Seconds ``key`` is still refused (0: it may try)."""
        entry = self._keys.get(key)
        return max(0.0, entry[1] - now) if entry is not None else 0.0

    def failed(self, key: Hashable, now: float) -> None:
        """Count one failure of ``key`` at ``now``."""
        entry = self._keys.get(key)
        if entry is None or now - entry[2] > 2 * self.longest:
            entry = [0.0, now, now]
        entry[0] += 1
        entry[2] = now
        beyond = int(entry[0]) - self.free
        if beyond > 0:
            entry[1] = now + min(self.longest, self.first * 2 ** min(beyond - 1, 30))
        self._keys.pop(key, None)
        self._keys[key] = entry
        if len(self._keys) > TRACKED:
            self._keys = {k: e for k, e in self._keys.items() if now - e[2] <= 2 * self.longest}
            while len(self._keys) > TRACKED:
                del self._keys[next(iter(self._keys))]
