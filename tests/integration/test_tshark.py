"""An independent decoder reads what we put on the wire: Wireshark's TWAMP dissectors.

A real twamp-server and a client built on twamp_common exchange a full open-mode session over
loopback (TWAMP-Control on TCP 862 when it can be had, else on a free port that tshark is told
to decode as TWAMP-Control; TWAMP-Test on UDP) while tshark captures.  tshark must then find
every control message and every test packet, each in both directions, with no malformed packet
and no expert error.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from support import ControlClient, free_port, ping, running_server
from twamp_common.codes import Accept

TSHARK = shutil.which("tshark")


def control_port() -> int:
    """862 when this process may bind it and it is free, else any free port."""
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", 862))
    except OSError:
        return free_port()
    return 862


def test_tshark_dissects_control_and_test_packets(tmp_path: Path) -> None:
    assert TSHARK is not None, "tshark is missing: `make venv` installs it (Debian package tshark)"
    tcp, udp = control_port(), free_port(socket.SOCK_DGRAM)
    capture = tmp_path / "twamp.pcapng"
    dumper = subprocess.Popen(
        [TSHARK, "-i", "lo", "-f", f"tcp port {tcp} or udp port {udp}", "-w", str(capture)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert dumper.stderr is not None
        for line in dumper.stderr:  # wait until the capture really runs
            if "Capturing on" in line:
                break
        config = f"control_port = {tcp}\ntest_port = {udp}\nlisten = 127.0.0.1\nkeys_file =\n"
        with running_server(tmp_path, config), ControlClient("127.0.0.1", tcp) as client:
            assert client.set_up().accept == Accept.OK
            with client.test_socket() as sender:
                accepted = client.request(sender.getsockname()[1])
                assert client.start().accept == Accept.OK
                for seq in range(5):
                    assert ping(sender, ("127.0.0.1", accepted.port), seq) is not None
                client.stop()
        time.sleep(0.5)
    finally:
        dumper.terminate()
        dumper.wait(10)

    decode = ["-d", f"tcp.port=={tcp},twamp.control", "-d", f"udp.port=={udp},twamp.test"]

    def frames(display_filter: str) -> list[str]:
        result = subprocess.run(
            [
                TSHARK,
                "-r",
                str(capture),
                *decode,
                "-Y",
                display_filter,
                "-T",
                "fields",
                "-e",
                "frame.number",
                "-e",
                "_ws.col.info",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return [line for line in result.stdout.splitlines() if line.strip()]

    assert frames('_ws.malformed || _ws.expert.severity >= "Error"') == []
    # Greeting, Set-Up-Response, Server-Start, Request, Accept, Start, Start-Ack, Stop.
    assert len(frames("twamp.control && tcp.len > 0")) >= 8
    test_packets = frames("twamp.test")
    assert len(test_packets) == 10  # five sent, five reflected
    assert len(frames(f"twamp.test && udp.srcport == {udp}")) == 5
