"""The client library and engine against a real twamp-server: many measurements in one thread.

Every mode, TWAMP Light beside TWAMP-Control, a bad target among good ones, submissions from
another thread while the engine runs forever, and the many-target command line (its blocks, its
table, its JSON array, -f files and exit status).
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import FakeReflector, Proxy, honest
from support import (
    SECRET,
    ServerProcess,
    config_port,
    free_port,
    running_server,
    server_config,
    wait_log,
)
from support import run_client as client
from twamp_client import Engine, Measurement, Observer, Target, Test, measure
from twamp_common.codes import Mode
from twamp_common.stats import Reply


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    light = free_port(socket.SOCK_DGRAM)
    config = server_config(
        tmp_path,
        light_ports=light,
        light_allow="127.0.0.0/8 ::1/128",
        max_connections_per_client=64,
        max_sessions=64,
        max_sessions_per_client=64,
    )
    with running_server(tmp_path, config) as process:
        process.light_port = light  # type: ignore[attr-defined]
        yield process


def exact(measurement: Measurement, count: int) -> None:
    """A clean loopback run: everything sent came back, and the books balance."""
    assert measurement.error is None, measurement.error
    summary = measurement.summary
    assert summary is not None
    assert summary.sent == count
    assert summary.sent == summary.received + summary.lost
    assert summary.received == count
    assert summary.round_trip is not None and summary.round_trip.min > 0


def test_measure_is_one_call(server: ServerProcess) -> None:
    result = measure(Target("127.0.0.1", config_port(server)), Test(count=5, interval_ms=10))
    exact(result, 5)
    assert result.header is not None
    assert result.header.mode == "unauthenticated"
    assert result.status == 0


def test_the_engine_runs_every_mode_and_light_side_by_side(server: ServerProcess) -> None:
    port = config_port(server)
    secret = SECRET.encode()
    jobs = [
        (Target("127.0.0.1", port), Test(count=20, interval_ms=5)),
        (
            Target("::1", port),
            Test(count=20, interval_ms=5, mode=Mode.MIXED, key_id="alice", secret=secret),
        ),
        (
            Target("127.0.0.1", port),
            Test(count=20, interval_ms=5, mode=Mode.AUTHENTICATED, key_id="alice", secret=secret),
        ),
        (
            Target("127.0.0.1", port),
            Test(count=20, interval_ms=5, mode=Mode.ENCRYPTED, key_id="alice", secret=secret),
        ),
        (Target("127.0.0.1", server.light_port, light=True), Test(count=20, interval_ms=5)),  # type: ignore[attr-defined]
    ]
    engine = Engine()
    results: dict[int, Measurement] = {}
    for index, (target, test) in enumerate(jobs):
        engine.submit(target, test, lambda m, at=index: results.__setitem__(at, m))
    started = time.monotonic()
    engine.run()
    engine.close()
    elapsed = time.monotonic() - started
    assert sorted(results) == list(range(len(jobs)))
    for measurement in results.values():
        exact(measurement, 20)
    assert [results[i].header.mode for i in range(len(jobs))] == [  # type: ignore[union-attr]
        "unauthenticated",
        "mixed",
        "authenticated",
        "encrypted",
        "TWAMP Light",
    ]
    # Side by side, not one after the other: five runs of 0.1 s plus the final wait.
    assert elapsed < 5 * 0.1 + 1 + 2


def test_fifty_sessions_at_once_each_with_exact_books(server: ServerProcess) -> None:
    engine = Engine()
    results: list[Measurement] = []
    for _ in range(50):
        engine.submit(
            Target("127.0.0.1", config_port(server)), Test(count=25, interval_ms=20), results.append
        )
    engine.run()
    engine.close()
    assert len(results) == 50
    for measurement in results:
        exact(measurement, 25)


class Stalls(Observer):
    """A library user's observer that keeps the engine's thread busy for ``seconds`` at its
    first reply: a slow callback, or a host that did not let the process run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def answered(self, reply: Reply, duplicate: bool) -> None:
        if self.seconds:
            time.sleep(self.seconds)
            self.seconds = 0


def test_replies_that_came_in_time_while_the_engine_was_busy_are_not_late() -> None:
    """A run with replies in flight (a 50 ms path) while another run's callback holds the
    thread for 0.5 s, past the first run's 0.3 s wait: its replies queued meanwhile arrived in
    time, and are read before any packet is given up."""
    with FakeReflector(honest, delay=0.05) as far, FakeReflector(honest) as near:
        engine = Engine()
        results: dict[str, Measurement] = {}
        engine.submit(
            Target("127.0.0.1", far.port, light=True),
            Test(count=100, interval_ms=5, wait=0.3),
            lambda m: results.__setitem__("far", m),
        )
        engine.submit(
            Target("127.0.0.1", near.port, light=True),
            Test(count=3, interval_ms=50),
            lambda m: results.__setitem__("near", m),
            Stalls(0.5),
            delay=0.2,
        )
        engine.run()
        engine.close()
    far_run = results["far"]
    assert far_run.summary is not None and far_run.outcome is not None
    assert (far_run.outcome.late, far_run.summary.lost, far_run.summary.received) == (0, 0, 100)
    exact(results["near"], 3)


def test_a_bad_target_fails_alone(server: ServerProcess) -> None:
    engine = Engine()
    results: dict[str, Measurement] = {}
    closed = free_port()
    for name, target in (
        ("good", Target("127.0.0.1", config_port(server))),
        ("unknown", Target("no-such-host.invalid")),
        ("refused", Target("127.0.0.1", closed)),
    ):
        engine.submit(
            target, Test(count=3, interval_ms=10), lambda m, n=name: results.__setitem__(n, m)
        )
    engine.run()
    engine.close()
    exact(results["good"], 3)
    assert results["unknown"].status == 2
    assert "cannot resolve 'no-such-host.invalid'" in (results["unknown"].error or "")
    assert results["refused"].error == f"connection refused by 127.0.0.1 port {closed}"
    assert results["refused"].hint is not None


def test_cancel_ends_a_run_at_once_with_stop_sessions_and_no_result(
    server: ServerProcess,
) -> None:
    """A 10 s run cancelled after half a second: the engine's loop returns at once, nothing is
    delivered, Stop-Sessions was the client's last message, and the reflector's session ended
    with the connection; a run beside it goes on to its end."""
    engine = Engine()
    delivered: list[Measurement] = []
    with Proxy(("127.0.0.1", config_port(server))) as proxy:
        long_run = engine.submit(
            Target("127.0.0.1", proxy.port), Test(count=1000, interval_ms=10), delivered.append
        )
        engine.submit(
            Target("127.0.0.1", config_port(server)),
            Test(count=100, interval_ms=10),
            delivered.append,
        )
        loop = threading.Thread(target=engine.run)
        loop.start()
        time.sleep(0.5)
        cancelled_at = time.monotonic()
        engine.cancel(long_run)
        engine.cancel(long_run)  # twice, or after the end: nothing happens
        ended = wait_log(server, "session ended", reason="control connection closed")
        assert time.monotonic() - cancelled_at < 0.5
        loop.join(10)
        assert not loop.is_alive()
        engine.cancel(long_run)
        engine.close()
        client_sent = bytes(proxy.from_client)
    assert 10 <= ended["reflected"] < 100, ended  # type: ignore[operator]
    # The client's messages, unauthenticated: Stop-Sessions (command 3, 32 octets) last.
    assert client_sent[-32] == 3 and len(client_sent) == 164 + 112 + 32 + 32, client_sent.hex()
    assert len(delivered) == 1  # the other run's result only
    exact(delivered[0], 100)


def test_forever_takes_submissions_from_other_threads_until_shutdown(server: ServerProcess) -> None:
    engine = Engine()
    results: list[Measurement] = []
    loop = threading.Thread(target=engine.run, kwargs={"forever": True})
    loop.start()
    try:
        for _ in range(3):
            engine.submit(
                Target("127.0.0.1", config_port(server)),
                Test(count=3, interval_ms=10, wait=0.5),
                results.append,
            )
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while len(results) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loop.is_alive()  # idle, not finished: it runs until shut down
    finally:
        engine.shutdown()
        loop.join(10)
    assert not loop.is_alive()
    engine.close()
    assert len(results) == 3
    for measurement in results:
        exact(measurement, 3)


def test_many_targets_on_the_command_line(server: ServerProcess, tmp_path: Path) -> None:
    port = config_port(server)
    listed = tmp_path / "targets.txt"
    listed.write_text(f"# sites\n[::1]:{port}   # the IPv6 one\n\nno-such-host.invalid\n")
    result = client(f"127.0.0.1:{port}", "-f", str(listed), "-c", "4", "-i", "10")
    assert result.returncode == 2, result.stderr  # one target failed
    out = result.stdout
    first, second = out.index(f"TWAMP 127.0.0.1 port {port}"), out.index(f"TWAMP ::1 port {port}")
    assert first < second  # blocks in the order given
    assert out.count("4 sent, 4 received, 0.0% loss") == 2
    assert "--- no-such-host.invalid port 862: cannot resolve" in out
    assert "seq=" not in out
    table = out[out.index("target ") :].splitlines()
    assert table[0].split()[:3] == ["target", "sent", "received"]
    assert table[1].split()[:4] == [f"127.0.0.1:{port}", "4", "4", "0.0"]
    assert table[2].split()[:4] == [f"[::1]:{port}", "4", "4", "0.0"]
    assert "error: cannot resolve" in table[3]
    assert "twamp-client: no-such-host.invalid: cannot resolve" in result.stderr


def test_many_targets_as_a_json_array(server: ServerProcess) -> None:
    port = config_port(server)
    result = client(
        f"127.0.0.1:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "-c", "2", "-i", "10", "--json"
    )
    assert result.returncode == 2  # the repeated target is an error of its own
    documents = json.loads(result.stdout)
    assert [d["peer"]["host"] for d in documents] == ["127.0.0.1", f"127.0.0.1:{port}", "::1"]
    assert documents[0]["received"] == documents[2]["received"] == 2
    assert "repeats target 1" in documents[1]["error"]


def test_every_target_answering_exits_0_and_one_silent_exits_1(server: ServerProcess) -> None:
    port = config_port(server)
    good = client(f"127.0.0.1:{port}", f"[::1]:{port}", "-c", "2", "-i", "10", "-q")
    assert good.returncode == 0, good.stderr
    silent = free_port(socket.SOCK_DGRAM)
    mixed = client(
        f"127.0.0.1:{server.light_port}",
        f"127.0.0.1:{silent}",
        "--light",  # type: ignore[attr-defined]
        "-c",
        "2",
        "-i",
        "10",
        "--wait",
        "0.2",
        "-q",
    )
    assert mixed.returncode == 1, mixed.stderr


def test_a_target_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    result = client("-f", str(tmp_path / "missing.txt"))
    assert result.returncode == 2
    assert result.stderr == (
        f"twamp-client: cannot read -f {tmp_path / 'missing.txt'}: No such file or directory\n"
    )


def test_an_event_for_a_descriptor_number_reused_within_its_poll_is_skipped() -> None:
    """One poll reports two sockets; the first one's handler closes the second and opens
    another that gets its number (a run ending, the next starting): the second report is the
    closed socket's, and must not reach the new socket's handler."""
    engine = Engine()
    first, first_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    second, second_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reused = second.fileno()
    newcomer_calls: list[int] = []
    replacement: list[socket.socket] = []

    def on_first(_mask: int) -> None:
        first.recv(16)
        engine._unregister(reused)
        second.close()
        fresh, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        if fresh.fileno() != reused:  # the kernel hands out the lowest free number
            os.dup2(fresh.fileno(), reused)
            fresh.close()
            fresh = socket.socket(fileno=reused)
        replacement.append(fresh)
        engine._register(reused, select.EPOLLIN, newcomer_calls.append)
        engine.shutdown()

    try:
        engine._register(first.fileno(), select.EPOLLIN, on_first)
        engine._register(reused, select.EPOLLIN, lambda _mask: pytest.fail("closed, not read"))
        first_peer.send(b"1")  # ready first: epoll reports in the order sockets became ready
        second_peer.send(b"2")
        engine.run(forever=True)
        assert replacement and replacement[0].fileno() == reused
        assert newcomer_calls == []
    finally:
        engine.close()
        for sock in (first, first_peer, second_peer, *replacement):
            sock.close()
