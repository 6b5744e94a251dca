"""The installed version of a twamp command, for ``--version`` and the server's start line.

Read from the package metadata only when asked: the metadata lookup costs about 25 ms, which
every start of a command would otherwise pay.
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn


def installed_version(distribution: str) -> str:
    """The version of ``distribution`` as installed, or "unknown" when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


class VersionAction(argparse.Action):
    """``--version``: prints "PROG VERSION" on stdout and exits; PROG is the distribution's name
    (``twamp-client``, ``twamp-server``)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(
        self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object
    ) -> NoReturn:
        print(f"{parser.prog} {installed_version(parser.prog)}")
        parser.exit()
