"""twamp-monitor's IPFIX export as a real daemon sends it, read by real decoders.

The daemon measures a real twamp-server on loopback and exports each run; tshark captures the
loopback interface while it does.  Every field of every data record must equal the same run's
figures in the history's ``--json`` documents (the history and the export are fed the same
finished run), and the test packets on the wire must be the flow the record names.  Then the
collector goes away and comes back mid-test: nfacctd over UDP, and a TCP listener of the test's
own over TCP (this nfacctd listens on UDP only), with what the daemon counts as dropped checked
against what was lost.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from support import SECRET, ServerProcess, config_port, free_port, running_server, server_config
from test_ipfix_tshark import IANA_FIELDS, _as_list, _children, _ms, _pairs, _raw
from test_monitor import MonitorProcess, monitor
from twamp_common.ipfix import ELEMENTS, Element, Kind

TSHARK = shutil.which("tshark")
PEN = 99_999
_UNPACK = {
    Kind.UNSIGNED64: "!Q",
    Kind.SIGNED64: "!q",
    Kind.FLOAT64: "!d",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path / "server"
    workdir.mkdir()
    with running_server(workdir, server_config(workdir)) as process:
        yield process


class Capture:
    """tshark writing what crosses the loopback interface to a file, until stopped."""

    def __init__(self, path: Path, capture_filter: str) -> None:
        assert TSHARK is not None, "tshark is missing: `make venv` installs it"
        self.path = path
        self.process = subprocess.Popen(
            [TSHARK, "-i", "lo", "-f", capture_filter, "-w", str(path)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:  # wait until the capture really runs
            if "Capturing on" in line:
                break

    def stop(self) -> None:
        time.sleep(0.3)  # what is on its way gets written
        self.process.terminate()
        self.process.wait(10)

    def read(self, *args: str) -> str:
        assert TSHARK is not None
        return subprocess.run(
            [TSHARK, "-r", str(self.path), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout


def _decoded(kind: Kind, octets: bytes) -> object:
    """An enterprise field's value from the raw octets tshark shows."""
    if kind is Kind.BOOLEAN:
        assert octets in (b"\x01", b"\x02")
        return octets == b"\x01"
    if kind is Kind.STRING:
        return octets.decode()
    return struct.unpack(_UNPACK[kind], octets)[0]


def _iana(element: Element, flow: Mapping[str, object]) -> object:
    if element.name == "flowStartMilliseconds":
        return _ms(flow["cflow.timedelta_tree"]["cflow.abstimestart"])  # type: ignore[index]
    if element.name == "flowEndMilliseconds":
        return _ms(flow["cflow.timedelta_tree"]["cflow.abstimeend"])  # type: ignore[index]
    text = str(flow[IANA_FIELDS[element.name]])
    return text if "Address" in element.name else int(text)


def records(capture: Capture, decode_as: str) -> list[tuple[float, int, dict[str, object]]]:
    """(capture time, sequence number, every field by element name) of each data record in
    the capture, decoded by tshark's IPFIX dissector, which must find nothing malformed."""
    decode = ["-d", decode_as]
    assert capture.read(*decode, "-Y", '_ws.malformed || _ws.expert.severity >= "Error"') == ""
    packets = json.loads(
        capture.read(*decode, "-Y", "cflow", "-T", "json"), object_pairs_hook=_pairs
    )
    by_id = {(e.id, e.enterprise is not None): e for e in ELEMENTS}
    templates: dict[int, list[Element]] = {}
    found = []
    for packet in packets:
        moment = float(packet["_source"]["layers"]["frame"]["frame.time_epoch"])
        for layer in _as_list(packet["_source"]["layers"]["cflow"]):
            assert int(layer["cflow.version"]) == 10
            sequence = int(layer["cflow.sequence"])
            for flowset in _children(layer, "Set "):
                if int(flowset["cflow.flowset_id"]) == 2:
                    for template in _children(flowset, "Template "):
                        fields = []
                        for field in _children(template, "Field "):
                            if int(field["cflow.template_ipfix_pen_provided"]):
                                assert int(field["cflow.template_ipfix_field_pen"]) == PEN
                                number = int(field["cflow.template_ipfix_field_type_enterprise"])
                                fields.append(by_id[number, True])
                            else:
                                fields.append(
                                    by_id[int(field["cflow.template_ipfix_field_type"]), False]
                                )
                        templates[int(template["cflow.template_id"])] = fields
                    continue
                for flow in _children(flowset, "Flow "):
                    elements = templates[int(flowset["cflow.flowset_id"])]
                    ours = iter(_as_list(flow.get("cflow.enterprise_private_entry", [])))
                    fields_of: dict[str, object] = {}
                    for element in elements:
                        fields_of[element.name] = (
                            _iana(element, flow)
                            if element.enterprise is None
                            else _decoded(element.kind, _raw(str(next(ours))))
                        )
                    assert next(ours, None) is None
                    found.append((moment, sequence, fields_of))
                    sequence += 1
    return found


def _ns(value_us: float) -> int:
    return round(value_us * 1000)


def expected(run: Mapping[str, object]) -> dict[str, object]:
    """What the record of a run must carry, from the history's JSON of that run: its figures
    (``result``, the ``--json`` document) and its settings; None where the run could not tell,
    which the record must leave out."""
    result: Mapping[str, object] = run["result"]  # type: ignore[assignment]
    settings: Mapping[str, object] = run["settings"]  # type: ignore[assignment]
    started = datetime.datetime.fromisoformat(str(result["start_time"]))
    peer: Mapping[str, object] = result["peer"]  # type: ignore[assignment]
    family = "IPv6" if ":" in str(peer["address"]) else "IPv4"
    fields: dict[str, object] = {
        "flowStartMilliseconds": round(started.timestamp() * 1000),
        f"destination{family}Address": peer["address"],
        "destinationTransportPort": result["test_port"],
        "ipDiffServCodePoint": settings["test"]["dscp"],  # type: ignore[index]
        "packetTotalCount": result["sent"],
        "postPacketTotalCount": result["received"],
        "forwardLossCount": result["forward_lost"],
        "reverseLossCount": result["reverse_lost"],
        "totalLossCount": result["lost"],
        "duplicateCount": result["duplicates"],
        "reorderedCount": result["reordered"],
        "targetName": run["target"],
        "trafficModel": None if settings["model"] is None else settings["model"]["name"],  # type: ignore[index]
        "securityMode": result["mode"],
        "clocksSynchronised": result["clocks_synchronized"],
        "roundTripJitter": None
        if result["jitter_us"]["rfc3550"] is None  # type: ignore[index]
        else _ns(result["jitter_us"]["rfc3550"]),  # type: ignore[index]
    }
    for element, key in (
        ("roundTripDelay", "rtt_us"),
        ("outboundDelay", "outbound_us"),
        ("inboundDelay", "inbound_us"),
    ):
        dist: Mapping[str, float] | None = result[key]  # type: ignore[assignment]
        for part in ("min", "avg", "max"):
            fields[f"{element}{part.title()}"] = None if dist is None else _ns(dist[part])
    for element, key in (("outboundJitter", "outbound_us"), ("inboundJitter", "inbound_us")):
        dist = result[key]  # type: ignore[assignment]
        fields[element] = None if dist is None or dist["jitter"] is None else _ns(dist["jitter"])
    mos: Mapping[str, float] | None = result["mos"]  # type: ignore[assignment]
    fields["outboundMos"] = None if mos is None else mos["out"]
    fields["inboundMos"] = None if mos is None else mos["in"]
    return fields


def history(config: Path) -> list[dict[str, object]]:
    listed = monitor("history", "--config", str(config), "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def write_config(tmp_path: Path, server: ServerProcess, monitor_keys: str) -> Path:
    """Two targets: IPv4 with a DSCP, and IPv6, authenticated, with the g711 voice model."""
    key = tmp_path / "alice.key"
    key.write_text(SECRET + "\n")
    port = config_port(server)
    path = tmp_path / "monitor.conf"
    path.write_text(
        f"[monitor]\nhistory = {tmp_path / 'history.sqlite'}\nipfix_enterprise = {PEN}\n"
        f"{monitor_keys}"
        f"[target plain]\naddress = 127.0.0.1:{port}\ncount = 4\ninterval = 10\ndscp = 46\n"
        "every = 2\n"
        f"[target voice]\naddress = [::1]:{port}\nmode = authenticated\nkey_id = alice\n"
        f"key_file = {key}\nmodel = g711\ncount = 20\nevery = 2\n"
    )
    return path


def test_every_field_of_every_exported_record_is_its_runs_json_figure(
    tmp_path: Path, server: ServerProcess
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    path = write_config(tmp_path, server, f"ipfix_collector = 127.0.0.1:{port}\n")
    # Every UDP datagram on loopback: the export, and the test packets of each run.
    capture = Capture(tmp_path / "export.pcapng", "udp")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
            collector.bind(("127.0.0.1", port))
            daemon = MonitorProcess(tmp_path, path)
            try:
                collector.settimeout(30)
                for _ in range(4):  # two runs of each target, at least
                    collector.recv(65535)
            finally:
                assert daemon.stop() == 0, daemon.log()
    finally:
        capture.stop()
    runs = history(path)
    exported = records(capture, f"udp.port=={port},cflow")
    assert len(exported) == len(runs) >= 4
    assert {run["target"] for run in runs} == {"plain", "voice"}
    starts = {(run["target"], expected(run)["flowStartMilliseconds"]): run for run in runs}
    for sequence, (moment, number, fields) in enumerate(exported):
        assert number == sequence  # one session, counted from 0
        run = starts[fields["targetName"], fields["flowStartMilliseconds"]]
        want = expected(run)
        # The same elements, and the same values; MOS at the JSON's three decimals.
        known = {name for name, value in want.items() if value is not None}
        assert set(fields) - known == {
            "flowEndMilliseconds",
            *(name for name in fields if name.startswith("source")),
        }, fields
        for name in known:
            value = fields[name]
            if name.endswith("Mos"):
                value = round(value, 3)  # type: ignore[call-overload]
            assert value == want[name], (name, value, want[name])
        # The test packets on the wire are the flow the record names, with its DSCP.
        version = "IPv6" if "sourceIPv6Address" in fields else "IPv4"
        ours = (fields[f"source{version}Address"], fields["sourceTransportPort"])
        theirs = (fields[f"destination{version}Address"], fields["destinationTransportPort"])
        sent = packets(capture, ours, theirs)
        reflected = packets(capture, theirs, ours)
        assert len(sent) == fields["packetTotalCount"]
        assert len(reflected) == fields["postPacketTotalCount"]
        assert {dscp for _, dscp in sent} == {fields["ipDiffServCodePoint"]}
        # Start: when the run began, before its first packet; end (which --json does not
        # give): after its last reply, to the millisecond, and before the record left.
        start, end = fields["flowStartMilliseconds"], fields["flowEndMilliseconds"]
        assert isinstance(start, int) and isinstance(end, int)
        assert start <= sent[0][0] * 1000
        assert int(reflected[-1][0] * 1000) <= end <= moment * 1000


def packets(
    capture: Capture, source: tuple[object, object], destination: tuple[object, object]
) -> list[tuple[float, int]]:
    """(time, DSCP) of every UDP packet in the capture from ``source`` to ``destination``."""
    ip = "ipv6" if ":" in str(source[0]) else "ip"
    dscp = "ipv6.tclass.dscp" if ip == "ipv6" else "ip.dsfield.dscp"
    display = (
        f"{ip}.src == {source[0]} && udp.srcport == {source[1]}"
        f" && {ip}.dst == {destination[0]} && udp.dstport == {destination[1]}"
    )
    text = capture.read("-Y", display, "-T", "fields", "-e", "frame.time_epoch", "-e", dscp)
    rows = [line.split("\t") for line in text.splitlines() if line]
    return [(float(moment), int(value)) for moment, value in rows]
