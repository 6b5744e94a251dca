"""A real collector, pmacct's nfacctd, receives our IPFIX export over UDP on loopback.

nfacctd is told about a few of our enterprise elements in its aggregate_primitives file (PEN
32473) and prints every flow it aggregates as JSON; the values it prints must be the ones
exported: IANA addresses, ports, times, DSCP and packets received, our unsigned counters as
numbers, signed delays, MOS and the boolean as raw octets, the target name in both
variable-length forms.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import free_port
from twamp_common.ipfix import DOCUMENTATION_PEN, Exporter, endpoint_fields

NFACCTD = shutil.which("nfacctd", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
START = 1_700_000_000_123

#: pmacct primitives: name, (element ID, PEN:ID for enterprise ones; length; semantics).
PRIMITIVES = {
    "rtt_min": ("32473:1", "8", "u_int"),
    "outbound_min": ("32473:4", "8", "hex"),
    "reverse_loss": ("32473:14", "8", "u_int"),
    "inbound_mos": ("32473:19", "8", "hex"),
    "target": ("32473:20", "vlen", "str"),
    "model": ("32473:21", "vlen", "str"),
    "synced": ("32473:23", "1", "u_int"),
    "dscp": ("195", "1", "u_int"),
    "received": ("172", "8", "u_int"),
}


def _record(index: int, target: str) -> dict[str, object]:
    return {
        "flowStartMilliseconds": START + index * 60_000,
        "flowEndMilliseconds": START + index * 60_000 + 10_456,
        **endpoint_fields(
            "192.0.2.1" if index % 2 else "2001:db8::1",
            40000 + index,
            "198.51.100.7" if index % 2 else "2001:db8::7",
            862,
        ),
        "ipDiffServCodePoint": 46 - index,
        "packetTotalCount": 500,
        "postPacketTotalCount": 497 - index,
        "roundTripDelayMin": 180_250 + index,
        "outboundDelayMin": -1_250 * (index + 1),
        "reverseLossCount": 2 + index,
        "inboundMos": 4.25 - index / 8,
        "targetName": target,
        "trafficModel": "g711",
        "clocksSynchronised": index % 2 == 0,
    }


def _stamp(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"nfacctd: {what} did not happen within {timeout} s")


def _stop(collector: subprocess.Popen[bytes]) -> None:
    """End nfacctd and its plugin processes (its own group); this nfacctd may ignore SIGTERM
    while its print plugin waits, so SIGKILL follows after a while."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(collector.pid, signal_number)
        try:
            collector.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
        return


def test_nfacctd_collects_the_values_we_export(tmp_path: Path) -> None:
    assert NFACCTD is not None, "nfacctd is missing: `make test` installs it (Debian pmacct)"
    port = free_port(socket.SOCK_DGRAM)
    (tmp_path / "primitives.lst").write_text(
        "".join(
            f"name={name}\tfield_type={field}\tlen={length}\tsemantics={semantics}\n"
            for name, (field, length, semantics) in PRIMITIVES.items()
        )
    )
    output, log = tmp_path / "flows.json", tmp_path / "nfacctd.log"
    (tmp_path / "nfacctd.conf").write_text(
        "daemonize: false\n"
        f"logfile: {log}\n"
        "nfacctd_ip: 127.0.0.1\n"
        f"nfacctd_port: {port}\n"
        f"aggregate_primitives: {tmp_path / 'primitives.lst'}\n"
        "plugins: print\n"
        "aggregate: src_host, dst_host, src_port, dst_port, timestamp_start, timestamp_end, "
        f"{', '.join(PRIMITIVES)}\n"
        "print_output: json\n"
        f"print_output_file: {output}\n"
        "print_refresh_time: 1\n"
    )
    records = [_record(0, "edge-0"), _record(1, "ŝ" * 200), _record(2, "edge-2"), _record(3, "")]
    exporter = Exporter(observation_domain=9, enterprise=DOCUMENTATION_PEN, max_message_size=600)
    messages = exporter.messages(records, time.time())
    assert len(messages) > 1
    collector = subprocess.Popen(
        [NFACCTD, "-f", str(tmp_path / "nfacctd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its plugins are its children: stop them with it
    )
    try:
        _wait_for(lambda: log.exists() and "Purging cache - END" in log.read_text(), "start")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for message in messages:
                sender.sendto(message, ("127.0.0.1", port))

        def lines() -> list[str]:
            return output.read_text().splitlines() if output.exists() else []

        _wait_for(lambda: len(lines()) >= len(records), "printing every record")
    finally:
        _stop(collector)
    assert "ERROR" not in log.read_text()

    flows = sorted((json.loads(line) for line in lines()), key=lambda flow: flow["port_src"])
    assert len(flows) == len(records)
    for flow, record in zip(flows, records, strict=True):
        source = record.get("sourceIPv4Address", record.get("sourceIPv6Address"))
        destination = record.get("destinationIPv4Address", record.get("destinationIPv6Address"))
        assert flow == {
            "event_type": "purge",
            "ip_src": str(source),
            "ip_dst": str(destination),
            "port_src": record["sourceTransportPort"],
            "port_dst": record["destinationTransportPort"],
            "timestamp_start": _stamp(record["flowStartMilliseconds"]),  # type: ignore[arg-type]
            "timestamp_end": _stamp(record["flowEndMilliseconds"]),  # type: ignore[arg-type]
            "rtt_min": str(record["roundTripDelayMin"]),
            "outbound_min": struct.pack("!q", record["outboundDelayMin"]).hex(),
            "reverse_loss": str(record["reverseLossCount"]),
            "inbound_mos": struct.pack("!d", record["inboundMos"]).hex(),
            "target": record["targetName"],
            "model": "g711",
            "synced": "1" if record["clocksSynchronised"] else "2",
            "dscp": str(record["ipDiffServCodePoint"]),
            "received": str(record["postPacketTotalCount"]),
        }
