"""A key-derivation flood from many networks against the real twamp-server process.

Each forged Set-Up-Response (authenticated mode, a random Token) comes from an address that has
never failed, in a network that has not used up its free failures, so the per-address and
per-network backoff never applies: only the global cap on key derivations bounds the cost, and
only the turns it hands out at random among the set-ups waiting let an honest client through.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import support
from support import ControlClient, config_port, ping, running_server, server_config
from twamp_common.codes import Accept, Mode
from twamp_server.derivations import BURST, PATIENCE, SHARE

SECRET = support.SECRET.encode()
#: Server-Greeting and Server-Start lengths (RFC 4656 §3.1); Accept is octet 15 of the latter.
GREETING = 64
SERVER_START = 48
COUNT = 32768  # the most a client accepts by default: each derivation then costs ~10 ms
WORKERS = 8  # more than the 4 derivations the server runs or queues: the others wait
FLOOD_SECONDS = 4.0
#: When the honest client comes: the flood has taken every derivation by then.
HONEST_AFTER = 1.0


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _forged_set_up(port: int, source: str) -> int:
    """The Accept of a Set-Up-Response with a made-up Token: costs the attacker nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        _recv_exactly(s, GREETING)
        mode = int(Mode.AUTHENTICATED).to_bytes(4, "big")
        s.sendall(mode + b"alice".ljust(80, b"\0") + os.urandom(64 + 16))
        return _recv_exactly(s, SERVER_START)[15]


def _source(worker: int, attempt: int) -> str:
    """A fresh address per attempt, eight per /24 (a network's free failures)."""
    network = attempt // 8
    return f"127.{10 + 25 * worker + network // 256 % 25}.{network % 256}.{1 + attempt % 8}"


def _cpu_beside_the_loop(pid: int) -> float:
    """CPU seconds of process ``pid``'s threads other than its main one, from /proc.

    The server's main thread is its event loop, which answers every forged set-up; the key
    derivations run on a thread of their own, and the reflector's threads are idle here.
    """
    ticks = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if int(task.name) != pid:
            # Fields after the command's closing parenthesis start at the third, state; utime
            # and stime are the fourteenth and fifteenth (proc(5)).
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def test_a_derivation_flood_from_many_networks_is_capped_and_others_are_served(
    tmp_path: Path,
) -> None:
    config = server_config(tmp_path, pbkdf2_count=COUNT, status_interval=60)
    with running_server(tmp_path, config) as server:
        port = config_port(server)
        stop = threading.Event()
        answers: list[list[int]] = [[] for _ in range(WORKERS)]

        errors: list[BaseException] = []

        def flood(worker: int) -> None:
            attempt = 0
            try:
                while not stop.is_set():
                    answers[worker].append(_forged_set_up(port, _source(worker, attempt)))
                    attempt += 1
            except BaseException as error:  # the test fails on it below
                errors.append(error)

        threads = [threading.Thread(target=flood, args=(n,)) for n in range(WORKERS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            time.sleep(HONEST_AFTER)
            with ControlClient("127.0.0.1", port, source="127.0.1.1", timeout=10) as honest:
                asked = time.monotonic()
                start = honest.set_up(Mode.AUTHENTICATED, b"alice", SECRET)
                waited = time.monotonic() - asked
                assert start.accept == Accept.OK, start  # served on its first try
                with honest.test_socket() as udp:
                    accepted = honest.request(udp.getsockname()[1], padding=64)
                    honest.start()
                    protection = honest.control.test_protection(accepted.sid)
                    reflector = ("127.0.0.1", accepted.port)
                    reply = ping(udp, reflector, 0, padding=64, protection=protection)
            time.sleep(max(0.0, FLOOD_SECONDS - (time.monotonic() - started)))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        elapsed = time.monotonic() - started
        derivations_cpu = _cpu_beside_the_loop(server.process.pid)
    assert not errors, errors
    assert reply is not None
    assert waited < PATIENCE, waited
    # The flood was held, not refused to retry at once (which won it every turn that freed):
    # its set-ups waited for their turns and were derived, and failed.
    every = [accept for worker in answers for accept in worker]
    refused = every.count(Accept.TEMPORARY_RESOURCE_LIMIT)
    assert every and refused <= len(every) // 10, (refused, len(every))
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("reason") == "authentication failed"]
    assert len(failed) >= len(every) - refused
    # What the flood's derivations cost, as the kernel counted it: half a core in the long run
    # and the burst, with room for the clock tick and the last derivations let in; an uncapped
    # flood keeps the derivation thread busy for the whole `elapsed`.
    allowed = 1.1 * (BURST + SHARE * elapsed) + 0.1
    assert derivations_cpu < allowed, (derivations_cpu, allowed, elapsed)
