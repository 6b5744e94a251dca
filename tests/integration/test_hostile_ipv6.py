"""Connection lockout over IPv6: one host's /64 holds many addresses, and must still not take
every control connection.  Runs in a network namespace the test creates (root needed; CI runs
as root), so that the addresses exist on a loopback interface of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, free_port, server_config

ATTACK_NET = "2001:db8:1::"  # one /64: 63 addresses of it attack
HONEST = "2001:db8:2::1"  # another /64
SERVER = "2001:db8:9::1"

#: Run inside the namespace: two connections from each attacking address, then the honest
#: client; prints how many attackers were offered modes and whether the honest one was.
_CLIENTS = """
import json, socket, sys
server, port = sys.argv[1], int(sys.argv[2])
def modes(sock):
    greeting = b""
    while len(greeting) < 64 and (data := sock.recv(64 - len(greeting))):
        greeting += data
    return int.from_bytes(greeting[12:16], "big")
held, served = [], 0
for host in range(2, 65):
    for _ in range(2):
        sock = socket.create_connection((server, port), timeout=5,
                                        source_address=(f"2001:db8:1::{host:x}", 0))
        held.append(sock)
served = sum(modes(sock) != 0 for sock in held)
honest = socket.create_connection((server, port), timeout=5, source_address=("2001:db8:2::1", 0))
print(json.dumps({"served": served, "honest": modes(honest)}))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10)


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name = f"twamp-h6-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        for address in [SERVER, HONEST, *(f"{ATTACK_NET}{host:x}" for host in range(2, 65))]:
            _ip("-n", name, "addr", "add", f"{address}/128", "dev", "lo", "nodad")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)


def test_one_ipv6_64_does_not_lock_others_out(tmp_path: Path, namespace: str) -> None:
    port = free_port()
    config = server_config(
        tmp_path,
        listen=SERVER,
        control_port=port,
        max_connections=100,
        max_idle_connections=100,
        reserved_connections=0,
        status_interval=60,
    )
    server = ServerProcess(tmp_path, config, prefix=["ip", "netns", "exec", namespace])
    try:
        server.wait_ready()
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", _CLIENTS, SERVER, str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outcome = json.loads(result.stdout)
        assert outcome["served"] == 64  # max_connections_per_network's default, of 126
        assert outcome["honest"] != 0  # another /64 is still served
    finally:
        server.stop()
    assert "max_connections_per_network (64) reached for 2001:db8:1::/64" in server.log()
