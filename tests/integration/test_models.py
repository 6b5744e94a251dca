"""Traffic models on the wire: tshark sees each model's IP sizes and intervals, both ways."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from support import free_port, run_client, running_server, server_config
from twamp_client import quality
from twamp_common import mos

TSHARK = shutil.which("tshark")


def capture(tmp_path: Path, port: int, *args: str) -> tuple[dict, list[tuple[float, int, int]]]:  # type: ignore[type-arg]
    """Run the client to a Light reflector on ``port`` while tshark watches: (the --json
    document, [(time, IP length, destination port)] of every test packet)."""
    assert TSHARK is not None, "tshark is missing: `make venv` installs it"
    out = tmp_path / "models.pcapng"
    dumper = subprocess.Popen(
        [TSHARK, "-i", "lo", "-f", f"udp port {port}", "-w", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert dumper.stderr is not None
        for line in dumper.stderr:
            if "Capturing on" in line:
                break
        time.sleep(0.5)  # the capture is announced a moment before it really runs
        result = run_client(f"127.0.0.1:{port}", "--light", "--json", "--wait", "0.3", *args)
        assert result.returncode == 0, result.stderr
    finally:
        time.sleep(0.5)
        dumper.terminate()
        dumper.wait(10)
    fields = subprocess.run(
        [
            TSHARK,
            "-r",
            str(out),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.len",
            "-e",
            "udp.dstport",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [(float(t), int(n), int(d)) for t, n, d in (line.split("\t") for line in fields if line)]
    return json.loads(result.stdout), rows


@pytest.fixture
def light_port(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port(socket.SOCK_DGRAM)
    config = server_config(tmp_path, light_ports=port, light_allow="127.0.0.0/8")
    with running_server(tmp_path, config):
        yield port


@pytest.mark.parametrize(
    ("args", "sizes", "interval_ms"),
    [
        (["--model", "g711", "-c", "20"], [200], 20.0),
        (["--model", "g729", "-c", "20"], [69], 20.0),
        (["--model", "cbr", "--bandwidth", "256k", "--ip-size", "400", "-c", "20"], [400], 12.5),
        (
            ["--model", "imix", "--bandwidth", "2M", "-c", "24"],
            [70, 576, 70, 576, 70, 576, 70, 576, 70, 70, 70, 1500],
            34352 / 24000,
        ),
    ],
    ids=["g711", "g729", "cbr", "imix"],
)
def test_each_model_on_the_wire(
    tmp_path: Path, light_port: int, args: list[str], sizes: list[int], interval_ms: float
) -> None:
    document, rows = capture(tmp_path, light_port, *args)
    count = document["sent"]
    assert document["received"] == count
    out = [(t, n) for t, n, d in rows if d == light_port]
    back = [(t, n) for t, n, d in rows if d != light_port]
    assert len(out) == len(back) == count
    expected = [sizes[k % len(sizes)] for k in range(count)]
    assert [n for _, n in out] == expected  # sender → reflector
    assert [n for _, n in back] == expected  # and back: the same size both ways
    payloads = [size - 28 for size in sizes]  # IPv4 and UDP headers
    if len(sizes) == 1:
        assert document["packet_size"] == payloads[0]
        assert "packet_sizes" not in document
    else:
        assert document["packet_sizes"] == payloads
        assert document["packet_size"] == pytest.approx(sum(payloads) / len(payloads), abs=1e-3)
    # The schedule's interval as the slope of send time against packet number, by the median
    # of the slopes of pairs at least half the run apart (Theil-Sen): deadlines are absolute,
    # so a packet a loaded machine sent late moves only its own pairs, each by its lateness
    # over at least half the run, and hardly the median.  1 % of 20 ms, 0.1 ms at the least.
    slopes = [
        (b[0] - a[0]) / (j - i)
        for (i, a), (j, b) in itertools.combinations(enumerate(out), 2)
        if j - i >= count // 2
    ]
    assert statistics.median(slopes) == pytest.approx(interval_ms / 1000, rel=0.01, abs=0.1e-3)


def test_a_model_replaces_interval_and_size() -> None:
    result = run_client("127.0.0.1", "--model", "g711", "-i", "10")
    assert result.returncode == 2
    assert "--model sets the sizes and intervals: leave out -i" in result.stderr
    result = run_client("127.0.0.1", "--model", "cbr", "--bandwidth", "fast")
    assert "--bandwidth 'fast' is not a bit rate" in result.stderr


def test_voice_models_are_scored_per_direction() -> None:
    """10 % random loss on the way out only, through a stateful reflector that splits it: the
    outbound MOS is G.711's at 10 %, the inbound one G.711's at none, each with G.711's 20 ms of
    packetisation delay (loopback adds microseconds)."""
    from peers import FakeReflector, Stamps, honest

    def drop_every_tenth(stamps: Stamps) -> bytes | None:
        return None if stamps.sender.seq % 10 == 5 else honest(stamps)

    with FakeReflector(drop_every_tenth) as peer:
        result = run_client(
            f"127.0.0.1:{peer.port}",
            "--light",
            "--model",
            "g711",
            "-c",
            "100",
            "--wait",
            "0.3",
            "--json",
        )
        text = run_client(
            f"127.0.0.1:{peer.port}",
            "--light",
            "--model",
            "g711",
            "-c",
            "10",
            "--wait",
            "0.3",
            "-s",
        ).stdout
    document = json.loads(result.stdout)
    assert (document["forward_lost"], document["reverse_lost"]) == (10, 0)
    score = document["mos"]
    assert score["codec"] == "g711"
    g711 = mos.CODECS["g711"]

    def expected(loss_percent: float, direction: str) -> mos.Assessment:
        """The E-model at this loss and the run's own delay and jitter on the basis it says
        (a loaded machine adds milliseconds of jitter, which the score rightly includes)."""
        if score["delay_basis"] == quality.ONE_WAY:
            delay_us, jitter_us = document[direction]["avg"], document[direction]["jitter"]
        else:
            delay_us = document["rtt_us"]["avg"] / 2
            jitter_us = document["jitter_us"]["rfc3550"]
        return mos.assess(
            g711,
            loss_percent=loss_percent,
            one_way_delay_ns=delay_us * 1e3,
            jitter_ns=jitter_us * 1e3,
        )

    lossy, clean = expected(10, "outbound_us"), expected(0, "inbound_us")
    assert score["out"] == pytest.approx(lossy.mos, abs=0.005)
    assert score["r_out"] == pytest.approx(lossy.r, abs=0.05)
    assert score["in"] == pytest.approx(clean.mos, abs=0.005)
    assert 3.3 < score["out"] < 3.41  # G.107 at 10 % and no delay: 3.41
    assert 4.3 < score["in"] <= 4.41  # and at none: 4.41
    assert "MOS (g711, ITU-T G.107) out" in text


def test_runs_without_a_voice_model_have_no_mos(tmp_path: Path, light_port: int) -> None:
    document, _rows = capture(tmp_path, light_port, "-c", "3", "-i", "10")
    assert document["mos"] is None
