"""The version is written once, in VERSION; every place that repeats it must agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = (REPO / "VERSION").read_text().strip()


def test_version_file_holds_a_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_every_project_has_the_version() -> None:
    for project in ("common", "server", "client"):
        meta = tomllib.loads((REPO / project / "pyproject.toml").read_text())["project"]
        assert meta["version"] == VERSION, f"{project}/pyproject.toml: run make set-version"


def test_twamp_common_pins_match() -> None:
    for project in ("server", "client"):
        meta = tomllib.loads((REPO / project / "pyproject.toml").read_text())["project"]
        pins = [dep for dep in meta["dependencies"] if dep.startswith("twamp-common")]
        assert pins == [f"twamp-common=={VERSION}"], f"{project}/pyproject.toml: {pins}"


def test_debian_changelog_is_at_the_version() -> None:
    first = (REPO / "packaging/debian/changelog").read_text().splitlines()[0]
    assert first.startswith(f"twamp ({VERSION})"), first


def test_rpm_changelog_is_at_the_version() -> None:
    spec = (REPO / "packaging/rpm/twamp.spec").read_text()
    entry = re.search(r"^%changelog\n\*.* - (\S+)-\d+$", spec, re.MULTILINE)
    assert entry, "no %changelog entry"
    assert entry.group(1) == VERSION


def test_both_commands_print_their_version() -> None:
    import subprocess
    import sys

    for command in ("twamp_client", "twamp_server"):
        result = subprocess.run(
            [sys.executable, "-m", command, "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{command.replace('_', '-')} {VERSION}\n"
