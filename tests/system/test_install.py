"""The operator's install path, end to end: the Debian packages installed with apt into a
Debian bookworm root booted by systemd-nspawn (a real systemd, journald and dbus), the service
started, measured, reloaded, stopped and restarted by its watchdog; the RPM packages unpacked
into a scratch root.

Needs root, debootstrap, systemd-nspawn and the package build tools (`make test` installs them
when run as root). The bookworm root is debootstrapped once into /var/cache/twamp-system-test
(with the Debian packages twamp-server depends on) and copied for each run; the container has a
private network, so its ports do not clash with the host's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
VERSION = (REPO / "VERSION").read_text().strip()
CACHE = Path(os.environ.get("TWAMP_SYSTEM_TEST_CACHE", "/var/cache/twamp-system-test"))
SUITE = "bookworm"
# What the container needs besides the packages under test: systemd as PID 1, and the Debian
# packages the twamp packages depend on (so that installing them needs no network).
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3"]
DEPENDENCIES = [
    "procps",
    "python3-cryptography",
    "python3-systemd",
    "python3-sdnotify",
    "python3-structlog",
    "python3-prometheus-client",
]
# systemd-nspawn denies the @clock system calls inside a container without CAP_SYS_TIME; let
# the read-only clock_adjtime() through, as a host does, so the unit's own filter is what counts.
NSPAWN_SYSCALLS = "adjtimex clock_adjtime"
TOOLS = ["debootstrap", "systemd-nspawn", "nsenter", "dpkg-buildpackage", "rpmbuild", "rpm"]


def _missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


if os.geteuid() != 0:
    pytest.skip("the system test needs root (debootstrap, systemd-nspawn)", allow_module_level=True)
if _missing_tools():
    # As root, `make test` installs these first: their absence is a broken set-up, not a
    # reason to pass without testing.
    pytest.fail(f"missing {', '.join(_missing_tools())}: run `make test-deps`", pytrace=False)


def run(*args: str, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=True, text=True, capture_output=True, timeout=timeout, **kwargs
    )  # type: ignore[call-overload]


def debian_mirror() -> str:
    """The machine's own Debian mirror, from its apt sources."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        fields = line.split()
        if fields[:1] == ["deb"] and "security" not in line:
            return next(field for field in fields[1:] if "://" in field)
    return "http://deb.debian.org/debian"


def cached_root() -> Path:
    """A debootstrapped bookworm with systemd and the dependencies, made once and kept."""
    key = hashlib.sha256(" ".join(BASE_PACKAGES + DEPENDENCIES).encode()).hexdigest()[:12]
    root = CACHE / f"{SUITE}-{key}"
    if (root / ".complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f"{root.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
        str(partial), debian_mirror(), timeout=1200)  # fmt: skip
    # debootstrap does not resolve every dependency of --include; apt does.
    run("systemd-nspawn", "-q", "-D", str(partial), "--register=no", "--keep-unit",
        "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
        f" --no-install-recommends {' '.join(DEPENDENCIES)} && apt-get clean",
        timeout=1200)  # fmt: skip
    # Each booted copy names itself after its machine name, not after the host.
    (partial / "etc/hostname").unlink(missing_ok=True)
    partial.rename(root)
    (root / ".complete").touch()
    return root


class Container:
    """A copy of the cached root, booted with systemd-nspawn; commands run in it with nsenter."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self) -> None:
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(self.root), "--boot", "--register=no",
             "--keep-unit", "-M", self.name, "--private-network",
             f"--system-call-filter={NSPAWN_SYSCALLS}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.pid1:
            assert self.nspawn.poll() is None, "systemd-nspawn exited"
            assert time.monotonic() < deadline, "the container's PID 1 did not appear"
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            self.pid1 = int(pids[0]) if pids else 0
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            assert time.monotonic() < deadline, f"the container did not boot: {state}"
            state = self.sh("systemctl is-system-running --wait", check=False).stdout.strip()

    def sh(
        self, script: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "/bin/sh", "-c", script],
            text=True, capture_output=True, timeout=timeout, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )  # fmt: skip
        if check and result.returncode != 0:
            pytest.fail(f"`{script}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl show -P {prop} {unit}").stdout.strip()

    def shutdown(self) -> None:
        if self.nspawn is None:
            return
        if self.pid1:
            self.sh("systemctl poweroff", check=False)
        try:
            self.nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.nspawn.pid, signal.SIGRTMIN + 4)
            self.nspawn.wait(timeout=30)


@pytest.fixture(scope="module")
def debs() -> list[Path]:
    run("make", "--no-print-directory", "deb", cwd=REPO)
    names = ["python3-twamp-common", "twamp-server", "twamp-client"]
    paths = [DIST / f"{name}_{VERSION}_all.deb" for name in names]
    for path in paths:
        assert path.exists(), path
    return paths


@pytest.fixture(scope="module")
def container(debs: list[Path]) -> Iterator[Container]:
    base = cached_root()
    work = Path(tempfile.mkdtemp(prefix="twamp-system-test-", dir="/var/tmp"))
    root = work / "root"
    try:
        run("cp", "-a", "--reflink=auto", str(base), str(root))
        (root / "mnt/debs").mkdir(parents=True)
        for deb in debs:
            shutil.copy(deb, root / "mnt/debs")
        box = Container(root, f"twamp-test-{os.getpid()}")
        try:
            box.boot()
            box.sh(
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
                " /mnt/debs/*.deb",
                timeout=300,
            )
            yield box
        finally:
            box.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_package_installs_a_running_service_as_user_twamp(container: Container) -> None:
    for unit in ("twamp-server.socket", "twamp-server.service"):
        assert container.sh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active"
        assert container.sh(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
    assert container.show("twamp-server", "User") == "twamp"
    main_pid = container.show("twamp-server", "MainPID")
    assert container.sh(f"stat -c %U /proc/{main_pid}").stdout.strip() == "twamp"
    # No capability, in a user namespace of its own, on the sockets systemd bound.
    status = container.sh(f"cat /proc/{main_pid}/status").stdout
    assert re.search(r"(?m)^CapEff:\s+0+$", status), status
    uid_map = container.sh(f"cat /proc/{main_pid}/uid_map").stdout.split()
    assert uid_map[:3] != ["0", "0", "4294967295"], uid_map
    assert (
        "systemd passed a socket"
        not in container.sh("journalctl -u twamp-server -o cat --no-pager").stdout
    )
    keys = container.sh("stat -c '%a %U %G' /etc/twamp/twamp-server.keys").stdout.split()
    assert keys == ["640", "root", "twamp"]
    conffiles = container.sh("dpkg-query -W -f '${Conffiles}' twamp-server").stdout
    assert "/etc/twamp/twamp-server.conf" in conffiles
    for path in ("/usr/share/man/man8/twamp-server.8.gz",
                 "/usr/share/man/man5/twamp-server.conf.5.gz",
                 "/usr/share/man/man1/twamp-client.1.gz",
                 "/usr/lib/firewalld/services/twamp-server.xml",
                 "/etc/ufw/applications.d/twamp-server"):  # fmt: skip
        container.sh(f"test -f {path}")


def test_client_measures_the_installed_server(container: Container) -> None:
    result = container.sh("twamp-client 127.0.0.1:862 -c 5 -i 500 -s")
    assert "5 sent, 5 received" in result.stdout, result.stdout


def test_session_lines_are_in_the_journal_with_the_peer_field(container: Container) -> None:
    def lines() -> list[dict[str, str]]:
        out = container.sh("journalctl -u twamp-server TWAMP_PEER=127.0.0.1 -o json --no-pager")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def ended() -> bool:
        return any(entry["MESSAGE"].startswith("session ended") for entry in lines())

    wait_for(ended, 10, "the 'session ended' line")
    messages = [entry["MESSAGE"] for entry in lines()]
    assert any(message.startswith("session accepted") for message in messages), messages
    assert all(entry["TWAMP_PEER"] == "127.0.0.1" for entry in lines())
    assert any("TWAMP_SID" in entry for entry in lines())


def test_the_sandbox_lets_the_clock_state_be_read(container: Container) -> None:
    """The unit's own sandbox, with a one-shot command in place of the daemon, reads the clock
    state with adjtimex(2) (mode 0) but may not set the clock."""
    unit = container.sh("cat /lib/systemd/system/twamp-server.service").stdout
    probe = (
        "import ctypes, sys; from twamp_common import clock; "
        "libc = ctypes.CDLL('libc.so.6', use_errno=True); t = clock._Timex(); "
        "read = libc.adjtimex(ctypes.byref(t)); "
        "t.modes = 0x0001; t.offset = 0; "  # ADJ_OFFSET: an attempt to adjust the clock
        "write = libc.adjtimex(ctypes.byref(t)); "
        "print('read', read, 'write', write, ctypes.get_errno())"
    )
    probe_unit = re.sub(r"(?m)^(ExecReload|WatchdogSec|Restart\w*)=.*\n", "", unit)
    probe_unit = re.sub(r"(?m)^Type=notify$", "Type=oneshot", probe_unit)
    probe_unit = re.sub(
        r"(?m)^ExecStart=.*$", f'ExecStart=/usr/bin/python3 -c "{probe}"', probe_unit
    )
    (container.root / "etc/systemd/system/twamp-clock-probe.service").write_text(probe_unit)
    container.sh("systemctl daemon-reload && systemctl start twamp-clock-probe")
    out = container.sh("journalctl -u twamp-clock-probe -o cat --no-pager").stdout
    found = re.search(r"read (-?\d+) write (-?\d+) (\d+)", out)
    assert found, out
    read, write, errno = (int(group) for group in found.groups())
    assert read >= 0, "adjtimex() with modes 0 is refused in the service's sandbox"
    assert write == -1
    assert errno == 1  # EPERM: no CAP_SYS_TIME


def test_reload_applies_the_configuration(container: Container) -> None:
    pid = container.show("twamp-server", "MainPID")
    container.sh("systemctl reload twamp-server")
    assert container.sh("systemctl is-active twamp-server").stdout.strip() == "active"
    assert container.show("twamp-server", "MainPID") == pid

    def reloaded() -> bool:
        out = container.sh("journalctl -u twamp-server -o cat --no-pager").stdout
        return "configuration reloaded" in out

    wait_for(reloaded, 10, "'configuration reloaded'")


def test_watchdog_restarts_a_hung_server(container: Container) -> None:
    dropin = container.root / "etc/systemd/system/twamp-server.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "watchdog.conf").write_text(
        "[Service]\nWatchdogSec=2\nTimeoutAbortSec=2\nRestartSec=1\n"
    )
    try:
        container.sh("systemctl daemon-reload && systemctl restart twamp-server")
        restarts = int(container.show("twamp-server", "NRestarts"))
        hung = container.show("twamp-server", "MainPID")
        container.sh(f"kill -STOP {hung}")

        def restarted() -> bool:
            pid = container.show("twamp-server", "MainPID")
            active = container.sh("systemctl is-active twamp-server", check=False).stdout.strip()
            return active == "active" and pid not in ("0", hung)

        wait_for(restarted, 30, "the watchdog to restart twamp-server")
        assert int(container.show("twamp-server", "NRestarts")) > restarts
        log = container.sh("journalctl -u twamp-server -o cat --no-pager").stdout
        assert "Watchdog timeout" in log
    finally:
        shutil.rmtree(dropin)
        container.sh("systemctl daemon-reload && systemctl restart twamp-server")


def test_stop_is_clean_and_quick(container: Container) -> None:
    started = time.monotonic()
    container.sh("systemctl stop twamp-server")
    assert time.monotonic() - started < 6
    assert container.show("twamp-server", "Result") == "success"
    assert container.show("twamp-server", "ActiveState") == "inactive"


def test_a_client_starts_the_stopped_server_through_its_socket(container: Container) -> None:
    container.sh("systemctl stop twamp-server")
    result = container.sh("twamp-client 127.0.0.1:862 -c 2 -i 100")
    assert "2 sent, 2 received" in result.stdout, result.stdout
    assert container.show("twamp-server", "ActiveState") == "active"
    container.sh("systemctl stop twamp-server.socket twamp-server.service")
    assert container.show("twamp-server.socket", "ActiveState") == "inactive"


def test_monitor_is_installed_disabled_and_measures_the_server_once_enabled(
    container: Container,
) -> None:
    assert container.sh("systemctl is-enabled twamp-monitor", check=False).stdout.strip() == (
        "disabled"
    )
    for path in ("/usr/share/man/man8/twamp-monitor.8.gz",
                 "/usr/share/man/man5/twamp-monitor.conf.5.gz"):  # fmt: skip
        container.sh(f"test -f {path}")
    container.sh("systemctl start twamp-server.socket twamp-server.service")  # after stop tests
    conffiles = container.sh("dpkg-query -W -f '${Conffiles}' twamp-client").stdout
    assert "/etc/twamp/twamp-monitor.conf" in conffiles
    container.sh(
        "printf '[monitor]\\nmetrics_listen = 127.0.0.1:9862\\n\\n[target local]\\n"
        "address = 127.0.0.1\\ncount = 3\\ninterval = 100\\nevery = 2\\nlabels = site=box\\n'"
        " > /etc/twamp/twamp-monitor.conf"
    )
    container.sh("systemctl enable --now twamp-monitor")
    assert container.show("twamp-monitor", "ActiveState") == "active"
    scrape = (
        'python3 -c "import urllib.request; print(urllib.request.urlopen('
        "'http://127.0.0.1:9862/metrics', timeout=5).read().decode())\""
    )

    def counted() -> bool:
        text = container.sh(scrape, check=False).stdout
        found = re.search(r'(?m)^twamp_rtt_seconds_count\{site="box",target="local"\} (\S+)$', text)
        return found is not None and float(found.group(1)) >= 3

    try:
        wait_for(counted, 30, "twamp_rtt_seconds_count of the local target")
    except AssertionError:
        log = container.sh("journalctl -u twamp-monitor -o cat --no-pager", check=False).stdout
        raise AssertionError(f"{container.sh(scrape, check=False)}\n{log}") from None
    journal = container.sh("journalctl -u twamp-monitor TWAMP_TARGET=local -o json --no-pager")
    entries = [json.loads(line) for line in journal.stdout.splitlines() if line.strip()]
    assert any(entry.get("TWAMP_RECEIVED") == "3" for entry in entries), entries
    history = container.sh("twamp-monitor history local --json").stdout
    assert json.loads(history)[0]["result"]["received"] == 3
    container.sh("systemctl disable --now twamp-monitor")


def test_purge_removes_the_keys_file(container: Container) -> None:
    container.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q twamp-server")
    container.sh("test ! -e /etc/twamp/twamp-server.keys && test ! -e /etc/twamp/twamp-server.conf")
    container.sh("! systemctl cat twamp-server.service >/dev/null 2>&1")


def test_rpm_packages_unpack_with_their_files_and_scriptlets(tmp_path: Path) -> None:
    run("make", "--no-print-directory", "rpm", cwd=REPO)
    rpms = sorted(DIST.glob(f"*-{VERSION}-*.noarch.rpm"))
    names = {run("rpm", "-qp", "--qf", "%{NAME}", str(path)).stdout for path in rpms}
    assert names == {"python3-twamp-common", "twamp-server", "twamp-client"}
    root = tmp_path / "root"
    root.mkdir()
    run("rpm", "--root", str(root), "--initdb")
    run("rpm", "--root", str(root), "--nodeps", "--noscripts", "-i", *map(str, rpms))
    for path in ("usr/sbin/twamp-server", "usr/bin/twamp-client",
                 "usr/lib/systemd/system/twamp-server.service",
                 "usr/lib/sysusers.d/twamp-server.conf", "etc/twamp/twamp-server.conf",
                 "usr/share/man/man8/twamp-server.8.gz", "usr/share/man/man1/twamp-client.1.gz",
                 "usr/share/man/man5/twamp-server.conf.5.gz",
                 "usr/lib/firewalld/services/twamp-server.xml",
                 "etc/ufw/applications.d/twamp-server"):  # fmt: skip
        assert (root / path).exists(), path
    assert list(root.glob("usr/lib/twamp/python/twamp_server/__main__.py"))
    assert list(root.glob("usr/lib/twamp/python/twamp_common/__init__.py"))
    server_rpm = next(path for path in rpms if path.name.startswith("twamp-server-"))
    scripts = run("rpm", "-qp", "--scripts", str(server_rpm)).stdout
    for needed in ("systemd-sysusers", "useradd", "systemctl", "preset", "try-restart"):
        assert needed in scripts, needed
    config = run("rpm", "-qp", "--configfiles", str(server_rpm)).stdout
    assert "/etc/twamp/twamp-server.conf" in config
