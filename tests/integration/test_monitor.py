"""twamp-monitor as a real process against a real twamp-server on loopback: the configuration
check, ``--once``, and the daemon's schedule, sd_notify messages, log lines and SIGHUP reloads."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import StampReflector
from support import (
    SECRET,
    NotifySocket,
    ServerProcess,
    config_port,
    free_port,
    log_lines,
    running_server,
    server_config,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path / "server"
    workdir.mkdir()
    with running_server(workdir, server_config(workdir)) as process:
        yield process


def monitor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twamp_client.monitor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(path: Path, server: ServerProcess, extra: str = "") -> Path:
    port = config_port(server)
    secret = path.parent / "alice.key"
    secret.write_text(SECRET + "\n")
    path.write_text(
        "[monitor]\ncount = 3\ninterval = 10\nhistory =\n\n"
        f"[target plain]\naddress = 127.0.0.1:{port}\nevery = 1\nlabels = site=paris\n\n"
        f"[target secure]\naddress = [::1]:{port}\nmode = authenticated\nkey_id = alice\n"
        f"key_file = {secret}\nschedule = often\n\n"
        "[schedule often]\nevery = 1\n" + extra
    )
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[target a]\naddress = h\ncount = 0\n", ':3: count = "0": out of range; allowed: a whole'),
        ("[monitor]\ncount = x\n[target a]\naddress = h\n", ':2: count = "x": not a whole number'),
        ("[target a]\naddress = h\nschedule = nope\n", ": no such [schedule NAME] section"),
        ("[target a]\naddress = h\ncolour = red\n", ':3: colour = "red": unknown key; allowed:'),
        ("[tagret a]\naddress = h\n", ":1: section [tagret a] is not known; allowed: [monitor]"),
        ("[target a]\ncount = 3\n", ":1: [target a]: a target needs address"),
        ("[target a]\naddress = h\nmodel = g712\n", 'model = "g712": not a traffic model'),
        ("[target a]\naddress = h\nmodel = cbr\nsize = 200\n", "model = cbr needs bandwidth"),
        ("[target a]\naddress = h\nlabels = target=x\n", '"target" is set by the monitor'),
        ("[target a]\naddress = h\nmode = encrypted\n", "a secure mode needs key_id"),
        ("[target a]\naddress = h\nevery = 0\n", 'every = "0": out of range'),
        ("[monitor]\nmetrics_listen = localhost\n", "names no port"),
        (
            "[target a]\naddress = h\nlight = yes\nstamp = yes\n",
            ':4: stamp = "yes": a target is TWAMP Light or STAMP, not both',
        ),
        ("[target a]\naddress = h\nstamp_tlv = location\n", 'stamp_tlv = "location": only with'),
        (
            "[target a]\naddress = h\nstamp = yes\nstamp_tlv = location, colour\n",
            "'colour' is not a STAMP TLV; allowed: extra-padding, location,",
        ),
        ("[target a]\naddress = h\nstamp = yes\nmode = mixed\n", "STAMP has no such mode"),
        (
            "[target a]\naddress = h\nstamp = yes\nstamp_tlv = hmac\n",
            ':4: stamp_tlv = "hmac": the HMAC TLV needs the secret of a KeyID',
        ),
        ("[target a]\naddress = h\nstamp = yes\nssid = 0\n", ':4: ssid = "0": out of range'),
        (
            "[target a]\naddress = h\nmodel = cbr\nbandwidth = 1\nsize = 1500\n",
            ':4: bandwidth = "1": 1 bit/s is too low for the cbr model',
        ),
        (
            "[target a]\naddress = h\nmodel = imix\nbandwidth = fast\n",
            ':4: bandwidth = "fast": not a bit rate; allowed: a positive number of bit/s',
        ),
        (
            "[target a]\naddress = h\nmodel = cbr\nbandwidth = 64000\nsize = 30\n",
            'size = "30": size 30 is below the 69 octets that hold the reflector',
        ),
    ],
)
def test_check_config_names_file_line_key_and_what_is_allowed(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "monitor.conf"
    path.write_text(text)
    result = monitor("--config", str(path), "--check-config")
    assert result.returncode == 78, result
    assert result.stderr.startswith(f"twamp-monitor: {path}"), result.stderr
    assert expected in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path, server: ServerProcess) -> None:
    path = write_config(
        tmp_path / "monitor.conf", server, "[target off]\naddress = x\nenabled = no\n"
    )
    result = monitor("--config", str(path), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "2 enabled targets" in result.stdout


def test_once_runs_the_named_or_all_targets(tmp_path: Path, server: ServerProcess) -> None:
    path = write_config(tmp_path / "monitor.conf", server)
    one = monitor("--config", str(path), "--once", "secure")
    assert one.returncode == 0, one.stderr
    assert "[secure]" in one.stdout and "[plain]" not in one.stdout
    assert "authenticated mode" in one.stdout
    assert "3 sent, 3 received, 0.0% loss" in one.stdout
    both = monitor("--config", str(path), "--once")
    assert both.returncode == 0, both.stderr
    assert both.stdout.count("3 sent, 3 received") == 2
    assert "rtt min/avg/max ms" in both.stdout  # the table after several
    unknown = monitor("--config", str(path), "--once", "nowhere")
    assert unknown.returncode == 2
    assert "no enabled target nowhere; targets: plain, secure" in unknown.stderr


def test_once_measures_a_stamp_target(tmp_path: Path) -> None:
    with StampReflector("::1") as reflector:
        path = tmp_path / "monitor.conf"
        path.write_text(
            "[monitor]\ncount = 3\ninterval = 10\nhistory =\n\n"
            f"[target stamp]\naddress = [::1]:{reflector.port}\nstamp = yes\nssid = 99\n"
            "stamp_tlv = direct-measurement, timestamp-information\n"
        )
        result = monitor("--config", str(path), "--once")
    assert result.returncode == 0, result.stderr
    assert "STAMP mode, SSID 99" in result.stdout
    assert "3 sent, 3 received, 0.0% loss" in result.stdout
    assert "direct measurement: S_TxC 3, R_RxC 3, R_TxC 3" in result.stdout
    assert [answer.ssid for answer in reflector.answers] == [99] * 3


class MonitorProcess:
    def __init__(self, workdir: Path, config: Path) -> None:
        self.notify = NotifySocket(workdir / "monitor-notify.sock")
        self.log_path = workdir / "monitor.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path)}
        env.pop("JOURNAL_STREAM", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "twamp_client.monitor", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, needle: str, count: int = 1, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if text.count(needle) >= count:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{count} x {needle!r} not logged; log:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            with contextlib.suppress(AssertionError):  # collected for the test to check
                self.notify.wait_for("STOPPING=1", 2)
            self._log.close()
            self.notify.close()


def test_daemon_runs_on_schedule_notifies_and_reloads(
    tmp_path: Path, server: ServerProcess
) -> None:
    path = write_config(tmp_path / "monitor.conf", server)
    daemon = MonitorProcess(tmp_path, path)
    try:
        assert "STATUS=2 targets, 0 runs" in daemon.notify.wait_for("READY=1")
        log = daemon.wait_log("info: run target=plain", count=2)
        log = daemon.wait_log("info: run target=secure", count=2)
        line = next(row for row in log.splitlines() if "run target=secure" in row)
        assert "host=::1 sent=3 received=3 loss_percent=0.0 rtt_avg_ms=" in line
        assert "error=" not in line
        daemon.notify.wait_for("runs, 0 failed")

        # A run of plain lasts about 1 s beyond its last packet (the wait for replies): with
        # every = 1 it overruns unless short; a 3-packet run at 10 ms fits, so no overrun yet.
        assert "overrun" not in daemon.log()

        # Change one target, keep the other: only the changed one restarts.
        path.write_text(path.read_text().replace("labels = site=paris", "labels = site=lyon"))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.notify.wait_for("RELOADING=1")
        log = daemon.wait_log("info: reloaded")
        assert "reloaded targets=2 unchanged=1 restarted=plain added=none" in log

        # A bad file keeps the running configuration and says why.
        good = path.read_text()
        path.write_text(good + "[target broken]\naddress = h\nttl = 0\n")
        before = daemon.log().count("info: run target=secure")
        daemon.process.send_signal(signal.SIGHUP)
        log = daemon.wait_log("reload failed")
        assert 'ttl = \\"0\\": out of range' in log or 'ttl = "0": out of range' in log
        daemon.wait_log("info: run target=secure", count=before + 1)
        assert "broken" not in daemon.log().split("reload failed")[1].split("\n", 1)[1]
    finally:
        status = daemon.stop()
    assert status == 0, daemon.log()
    assert any("STOPPING=1" in message for message in daemon.notify.messages)


def test_a_reload_cancels_the_run_in_progress_of_a_changed_target_only(
    tmp_path: Path, server: ServerProcess
) -> None:
    """A 20 s run of "long" (over IPv6, to tell its sessions apart in the server's log) is
    cancelled by a SIGHUP that changes long's count: its session ends at once, no result of it
    is recorded, and a run with the new settings starts; "steady" keeps running meanwhile."""
    port = config_port(server)
    path = tmp_path / "monitor.conf"
    path.write_text(
        "[monitor]\nhistory =\n"
        f"[target long]\naddress = [::1]:{port}\ncount = 1000\ninterval = 20\nevery = 3\n"
        f"[target steady]\naddress = 127.0.0.1:{port}\ncount = 20\ninterval = 10\nevery = 1\n"
    )

    def long_sessions(event: str) -> list[dict[str, object]]:
        return [
            line
            for line in log_lines(server)
            if line.get("event") == event and line["peer"] == "::1"
        ]

    def wait_long(event: str, count: int, timeout: float) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(found := long_sessions(event)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) >= count, server.log()
        return found

    daemon = MonitorProcess(tmp_path, path)
    try:
        wait_long("session started", 1, timeout=10)
        steady_before = daemon.wait_log("info: run target=steady", count=2).count(
            "info: run target=steady"
        )
        path.write_text(path.read_text().replace("count = 1000", "count = 999"))
        hup = time.monotonic()
        daemon.process.send_signal(signal.SIGHUP)
        ended = wait_long("session ended", 1, timeout=10)[0]
        assert time.monotonic() - hup < 2  # not the 20 s the run had left
        assert ended["reason"] == "control connection closed"
        assert 0 < ended["reflected"] < 1000  # type: ignore[operator]
        log = daemon.wait_log("info: reloaded")
        assert "info: run cancelled target=long" in log
        assert "reloaded targets=2 unchanged=1 restarted=long added=none" in log
        wait_long("session started", 2, timeout=10)  # the new settings' run
        log = daemon.wait_log("info: run target=steady", count=steady_before + 3)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert ": run target=long" not in daemon.log()  # the cancelled run left no result
    steady = [row for row in log.splitlines() if ": run target=steady" in row]
    assert all("sent=20 received=20" in row for row in steady), steady


def test_a_run_longer_than_its_period_is_an_overrun(tmp_path: Path, server: ServerProcess) -> None:
    path = tmp_path / "monitor.conf"
    path.write_text(
        "[monitor]\nhistory =\n"
        f"[target slow]\naddress = 127.0.0.1:{config_port(server)}\ncount = 20\ninterval = 50\n"
        "every = 0.5\n"
    )
    daemon = MonitorProcess(tmp_path, path)
    try:
        log = daemon.wait_log("warning: overrun target=slow", count=2, timeout=30)
        assert log.count(": run target=slow") >= 2
        # Each run sends 20 packets over ~1 s: never two at once, so every run got them all.
        for row in log.splitlines():
            if ": run target=slow" in row:
                assert "sent=20 received=20" in row, row
            if "overrun" in row:
                # The next run waits for the next boundary of the 0.5 s grid, never longer.
                assert 0 <= float(row.split("next_in_s=")[1]) <= 0.5, row
    finally:
        assert daemon.stop() == 0, daemon.log()


def metrics_text(port: int, *, gzipped: bool = False) -> str:
    """The exposition, asked for gzipped (as Prometheus asks) or not, and checked to be so."""
    headers = {"Accept-Encoding": "gzip"} if gzipped else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
        assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
    return (gzip.decompress(body) if gzipped else body).decode()


def test_metrics_endpoint_passes_promtool_and_prometheus_scrapes_it(
    tmp_path: Path, server: ServerProcess
) -> None:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if (promtool is None or prometheus is None) and os.geteuid() != 0:
        pytest.skip("Debian's prometheus package is not installed (make test-deps installs it)")
    assert promtool is not None and prometheus is not None
    port = free_port()
    voice = (
        f"\n[target voice]\naddress = 127.0.0.1:{config_port(server)}\nmodel = g711\nevery = 1\n"
    )
    path = write_config(tmp_path / "monitor.conf", server, voice)
    listen = f"[monitor]\nmetrics_listen = 127.0.0.1:{port}\n"
    path.write_text(path.read_text().replace("[monitor]\n", listen))
    daemon = MonitorProcess(tmp_path, path)
    scraper = None
    try:
        daemon.wait_log("info: run target=secure")
        daemon.wait_log("info: run target=plain")
        text = metrics_text(port)
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
        plain = 'site="paris",target="plain"'
        secure = 'site="",target="secure"'
        count = re.search(rf"^twamp_rtt_seconds_count\{{{plain}\}} (\S+)$", text, re.M)
        assert count is not None and float(count.group(1)) >= 3, text
        # The exposition sorts label names.
        assert f'twamp_packets_lost_total{{direction="out",{secure}}} 0.0' in text
        assert f'twamp_runs_total{{result="ok",{plain}}}' in text
        assert f"twamp_packets_dropped_by_host_total{{{plain}}} 0.0" in text
        assert f'twamp_delay_avg_seconds{{direction="rt",{plain}}}' in text
        assert "twamp_last_success_timestamp_seconds{" in text
        daemon.wait_log("info: run target=voice")
        text = metrics_text(port, gzipped=True)
        score = re.search(
            r'^twamp_mos\{direction="out",site="",target="voice"\} (\S+)$', text, re.M
        )
        assert score is not None and 4.0 < float(score.group(1)) <= 4.41, text
        assert 'twamp_mos{direction="out",site="paris",target="plain"}' not in text

        web = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: twamp-monitor\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        )
        scraper = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        query = urllib.parse.urlencode({"query": 'twamp_rtt_seconds_count{target="plain"}'})
        deadline = time.monotonic() + 60
        found: list[dict[str, object]] = []
        while time.monotonic() < deadline and not found:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{web}/api/v1/query?{query}", timeout=5
                ) as response:
                    found = json.load(response)["data"]["result"]
            except OSError:
                continue
        assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
        sample = found[0]
        assert sample["metric"]["site"] == "paris"  # type: ignore[index]
        assert float(sample["value"][1]) >= 3  # type: ignore[index]
    finally:
        if scraper is not None:
            scraper.terminate()
            scraper.wait(20)
        assert daemon.stop() == 0, daemon.log()


def test_imix_bytes_are_the_sum_of_the_sizes_sent(tmp_path: Path, server: ServerProcess) -> None:
    """Runs of 17 packets: one cycle of twelve sizes and five of the next, each packet counted
    at its own size."""
    port = free_port()
    path = tmp_path / "monitor.conf"
    path.write_text(
        f"[monitor]\nmetrics_listen = 127.0.0.1:{port}\nhistory =\n\n[target mix]\n"
        f"address = 127.0.0.1:{config_port(server)}\nmodel = imix\nbandwidth = 10M\n"
        "count = 17\nevery = 2\n"
    )
    daemon = MonitorProcess(tmp_path, path)
    try:
        daemon.wait_log("info: run target=mix")
        text = metrics_text(port)
    finally:
        assert daemon.stop() == 0, daemon.log()
    runs = re.search(r'^twamp_runs_total\{result="ok",target="mix"\} (\S+)$', text, re.M)
    assert runs is not None and float(runs.group(1)) >= 1, text
    packets = 17 * float(runs.group(1))
    sizes = [70, 576, 70, 576, 70, 576, 70, 576, 70, 70, 70, 1500]
    octets = float(runs.group(1)) * sum(sizes[k % 12] - 28 for k in range(17))  # IPv4, UDP
    assert f'twamp_packets_received_total{{target="mix"}} {packets}' in text, text
    assert f'twamp_sent_bytes_total{{target="mix"}} {octets}' in text, text
    assert f'twamp_received_bytes_total{{target="mix"}} {octets}' in text, text


def test_history_keeps_every_run_and_prints_them(tmp_path: Path, server: ServerProcess) -> None:
    database = tmp_path / "history.sqlite"
    path = write_config(tmp_path / "monitor.conf", server)
    path.write_text(path.read_text().replace("history =\n", f"history = {database}\n"))
    daemon = MonitorProcess(tmp_path, path)
    try:
        daemon.wait_log("info: run target=secure", count=2)
        # WAL: a reader sees committed rows while the daemon runs.
        listed = monitor("history", "--config", str(path), "--json")
        assert listed.returncode == 0, listed.stderr
        runs = json.loads(listed.stdout)
        assert {run["target"] for run in runs} == {"plain", "secure"}
        secure = [run for run in runs if run["target"] == "secure"]
        assert len(secure) >= 2
        assert secure[0]["result"]["received"] == 3
        assert secure[0]["result"]["mode"] == "authenticated"
        assert secure[0]["settings"]["test"]["key_id"] == "alice"
        assert "secret" not in secure[0]["settings"]["test"]
        assert SECRET not in listed.stdout
    finally:
        assert daemon.stop() == 0, daemon.log()
    one = monitor("history", "plain", "--config", str(path), "--since", "1h")
    assert one.returncode == 0, one.stderr
    assert "  plain  3 sent, 3 received, 0.0% loss, rtt avg" in one.stdout
    assert "secure" not in one.stdout
    future = monitor("history", "--config", str(path), "--since", "2999-01-01T00:00:00")
    assert future.returncode == 0 and future.stdout == ""
    bad = monitor("history", "--config", str(path), "--since", "yesterday")
    assert bad.returncode == 2 and "not a time or a duration" in bad.stderr
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_shipped_configuration_and_its_example_target_check() -> None:
    shipped = Path(__file__).parents[2] / "etc" / "twamp" / "twamp-monitor.conf"
    result = monitor("--config", str(shipped), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "0 enabled targets" in result.stdout


def test_an_ipfix_collector_that_does_not_resolve_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "monitor.conf"
    path.write_text(
        "[monitor]\nipfix_collector = no-such-host.invalid:4739\n[target a]\naddress = h\n"
    )
    result = monitor("--config", str(path), "--check-config")
    assert result.returncode == 78
    assert "ipfix_collector" in result.stderr and "does not resolve" in result.stderr


def test_key_file_takes_the_servers_keys_file_too(tmp_path: Path, server: ServerProcess) -> None:
    """One file for every tool: the line of the KeyID in twamp-server's keys file."""
    keys = tmp_path / "server" / "twamp-server.keys"  # the running server's own
    path = tmp_path / "monitor.conf"
    path.write_text(
        f"[target secure]\naddress = 127.0.0.1:{config_port(server)}\nmode = encrypted\n"
        f"key_id = alice\nkey_file = {keys}\ncount = 2\ninterval = 10\n"
    )
    result = monitor("--config", str(path), "--once")
    assert result.returncode == 0, result.stderr
    assert "encrypted mode" in result.stdout
    assert "2 sent, 2 received" in result.stdout


def test_a_stamp_target_against_twamp_server_reaches_history_and_metrics(
    tmp_path: Path,
) -> None:
    """A `stamp = yes` target measured by the daemon against our own STAMP reflector,
    authenticated with the server's keys file: the run is in the history and the metrics."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    stamp_port, metrics = free_port(socket.SOCK_DGRAM), free_port()
    config = server_config(
        workdir,
        stamp_ports=stamp_port,
        stamp_allow="::1",
        stamp_mode="stateful",
        stamp_key_id="alice",
    )
    database = tmp_path / "history.sqlite"
    path = tmp_path / "monitor.conf"
    path.write_text(
        f"[monitor]\ncount = 3\ninterval = 10\nhistory = {database}\n"
        f"metrics_listen = 127.0.0.1:{metrics}\n\n"
        f"[target stamp]\naddress = [::1]:{stamp_port}\nstamp = yes\nssid = 77\n"
        f"key_id = alice\nkey_file = {workdir / 'twamp-server.keys'}\nevery = 1\n"
        "stamp_tlv = direct-measurement, follow-up-telemetry\n"
    )
    with running_server(workdir, config) as server:
        daemon = MonitorProcess(tmp_path, path)
        try:
            daemon.wait_log("info: run target=stamp")
            text = metrics_text(metrics)
        finally:
            assert daemon.stop() == 0, daemon.log()
        started = [line for line in log_lines(server) if line["event"] == "stamp session started"]
    assert started and {(line["peer"], line["ssid"]) for line in started} == {("::1", 77)}
    target = 'target="stamp"'
    for direction in ("out", "in", "unknown"):
        assert f'twamp_packets_lost_total{{direction="{direction}",{target}}} 0.0' in text, text
    count = re.search(rf"^twamp_rtt_seconds_count\{{{target}\}} (\S+)$", text, re.M)
    assert count is not None and float(count.group(1)) >= 3, text
    listed = monitor("history", "stamp", "--config", str(path), "--json")
    assert listed.returncode == 0, listed.stderr
    result = json.loads(listed.stdout)[0]["result"]
    assert (result["mode"], result["sent"], result["received"]) == ("STAMP authenticated", 3, 3)
    assert (result["forward_lost"], result["reverse_lost"]) == (0, 0)
    assert result["stamp"]["ssid"] == 77
    assert result["stamp"]["direct_measurement"]["r_rxc"] == 3
    assert result["stamp"]["follow_up_replies"] == 2
    assert SECRET not in listed.stdout
