"""The error of a configuration or keys file that cannot be used.

Kept apart from both parsers (:mod:`.config`, :mod:`.keystore`) so that each raises the same
sentence-shaped error the daemon reports, and neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path

from twamp_common.errors import TwampError


class ConfigError(TwampError):
    """A configuration or keys file that cannot be used, said in one sentence.

    ``path`` and ``line`` locate the problem, ``key`` and ``value`` are what was written there
    (``value`` is never a secret) and ``allowed`` says what would have been accepted.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        key: str | None = None,
        value: str | None = None,
        allowed: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        subject = self.key or ""
        if self.key is not None and self.value is not None:
            shown = self.value.replace("\n", " ")
            subject = f'{self.key} = "{shown}"'
        text = ": ".join(part for part in (where, subject, self.reason) if part)
        return f"{text}; allowed: {self.allowed}" if self.allowed else text
