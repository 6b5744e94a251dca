"""The systemd unit, checked offline by systemd-analyze: it parses, and its sandbox is tight."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "etc/systemd/twamp-server.service"
SOCKET = UNIT.with_suffix(".socket")
# systemd-analyze security's exposure (0-10, lower is safer): the product's goal.
MAX_EXPOSURE = 1.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def test_unit_parses_without_warnings() -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(UNIT), str(SOCKET)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    problems = [
        line
        for line in result.stderr.splitlines()
        # The unit names its installed command, which this machine need not have.
        if "/usr/sbin/twamp-server" not in line
    ]
    assert problems == []


def test_security_exposure() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
