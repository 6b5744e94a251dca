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

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from support import SECRET, ServerProcess, config_port, free_port, running_server, server_config
from test_ipfix_nfacctd import NFACCTD, _wait_for
from test_ipfix_tshark import IANA_FIELDS, _as_list, _children, _ms, _pairs, _raw
from test_monitor import MonitorProcess, metrics_text, monitor
from twamp_common.ipfix import BY_NAME, ELEMENTS, Element, Kind

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


@dataclasses.dataclass(frozen=True)
class Exported:
    """One data record on the wire: when it left, from which port, with which sequence number
    (RFC 7011's, of the record), its template set before it in the same message or not."""

    time: float
    port: int
    sequence: int
    after_template: bool
    fields: dict[str, object]


def records(capture: Capture, transport: str, port: int) -> list[Exported]:
    """Every data record sent to ``port`` in the capture, decoded by tshark's IPFIX dissector,
    which must find nothing malformed there (ICMP errors, which quote the start of a
    datagram, are not read)."""
    decode = ["-d", f"{transport}.port=={port},cflow"]
    export = f"{transport}.dstport == {port} && !icmp && !icmpv6"
    bad = f'{export} && (_ws.malformed || _ws.expert.severity >= "Error")'
    assert capture.read(*decode, "-Y", bad) == ""
    packets = json.loads(
        capture.read(*decode, "-Y", f"{export} && cflow", "-T", "json"),
        object_pairs_hook=_pairs,
    )
    by_id = {(e.id, e.enterprise is not None): e for e in ELEMENTS}
    templates: dict[int, list[Element]] = {}
    found = []
    for packet in packets:
        layers = packet["_source"]["layers"]
        moment = float(layers["frame"]["frame.time_epoch"])
        port = int(
            layers["udp"]["udp.srcport"] if "udp" in layers else layers["tcp"]["tcp.srcport"]
        )
        for layer in _as_list(layers["cflow"]):
            assert int(layer["cflow.version"]) == 10
            sequence = int(layer["cflow.sequence"])
            template_sent = False
            for flowset in _children(layer, "Set "):
                if int(flowset["cflow.flowset_id"]) == 2:
                    template_sent = True
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
                    found.append(Exported(moment, port, sequence, template_sent, fields_of))
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
        "hostDroppedCount": result["host_dropped"],
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


def not_in_json(fields: Mapping[str, object]) -> set[str]:
    """The elements --json has no figure for: the end of the run, our address and port (the
    capture's test packets check these)."""
    sources = {name for name in fields if name.startswith("source")}
    return {"flowEndMilliseconds", *sources}


def same_figures(fields: Mapping[str, object], run: Mapping[str, object]) -> None:
    """Each of ``fields`` that --json has a figure for equals it (MOS at its three decimals)."""
    want = expected(run)
    for name, value in fields.items():
        if name in want:
            shown = round(value, 3) if name.endswith("Mos") else value  # type: ignore[call-overload]
            assert shown == want[name], (run["target"], name, shown, want[name])


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
    metrics = free_port()
    # A name, resolved when the file is read: the metric names the address.
    path = write_config(
        tmp_path,
        server,
        f"ipfix_collector = localhost:{port}\nmetrics_listen = 127.0.0.1:{metrics}\n",
    )
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
                assert dropped_total(metrics, port) == 0
            finally:
                assert daemon.stop() == 0, daemon.log()
    finally:
        capture.stop()
    runs = history(path)
    exported = records(capture, "udp", port)
    assert len(exported) == len(runs) >= 4
    assert {run["target"] for run in runs} == {"plain", "voice"}
    starts = {(run["target"], expected(run)["flowStartMilliseconds"]): run for run in runs}
    for sequence, record in enumerate(exported):
        assert record.sequence == sequence  # one session, counted from 0
        fields, moment = record.fields, record.time
        run = starts[fields["targetName"], fields["flowStartMilliseconds"]]
        want = expected(run)
        # The same elements as the JSON has figures for, with the same values.
        known = {name for name, value in want.items() if value is not None}
        assert set(fields) - known == not_in_json(fields), fields
        assert len(not_in_json(fields)) == 3
        same_figures(fields, run)
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


#: nfacctd's primitives for our elements (PEN:ID; length; semantics): pmacct has no signed or
#: float semantics, so signed delays and MOS come out as hex octets.
PRIMITIVES = {
    "rtt_min": (f"{PEN}:1", "8", "u_int", "roundTripDelayMin"),
    "rtt_avg": (f"{PEN}:2", "8", "u_int", "roundTripDelayAvg"),
    "rtt_max": (f"{PEN}:3", "8", "u_int", "roundTripDelayMax"),
    "out_min": (f"{PEN}:4", "8", "hex", "outboundDelayMin"),
    "out_avg": (f"{PEN}:5", "8", "hex", "outboundDelayAvg"),
    "out_max": (f"{PEN}:6", "8", "hex", "outboundDelayMax"),
    "in_min": (f"{PEN}:7", "8", "hex", "inboundDelayMin"),
    "in_avg": (f"{PEN}:8", "8", "hex", "inboundDelayAvg"),
    "in_max": (f"{PEN}:9", "8", "hex", "inboundDelayMax"),
    "out_jitter": (f"{PEN}:10", "8", "u_int", "outboundJitter"),
    "in_jitter": (f"{PEN}:11", "8", "u_int", "inboundJitter"),
    "rtt_jitter": (f"{PEN}:12", "8", "u_int", "roundTripJitter"),
    "fwd_loss": (f"{PEN}:13", "8", "u_int", "forwardLossCount"),
    "rev_loss": (f"{PEN}:14", "8", "u_int", "reverseLossCount"),
    "loss": (f"{PEN}:15", "8", "u_int", "totalLossCount"),
    "dups": (f"{PEN}:16", "8", "u_int", "duplicateCount"),
    "reordered": (f"{PEN}:17", "8", "u_int", "reorderedCount"),
    "out_mos": (f"{PEN}:18", "8", "hex", "outboundMos"),
    "in_mos": (f"{PEN}:19", "8", "hex", "inboundMos"),
    "target": (f"{PEN}:20", "vlen", "str", "targetName"),
    "model": (f"{PEN}:21", "vlen", "str", "trafficModel"),
    "mode": (f"{PEN}:22", "vlen", "str", "securityMode"),
    "synced": (f"{PEN}:23", "1", "u_int", "clocksSynchronised"),
    "host_drops": (f"{PEN}:24", "8", "u_int", "hostDroppedCount"),
    "dscp": ("195", "1", "u_int", "ipDiffServCodePoint"),
    "sent": ("86", "8", "u_int", "packetTotalCount"),
    "received": ("172", "8", "u_int", "postPacketTotalCount"),
}


class Nfacctd:
    """pmacct's collector on ``port``, printing each flow it gets as a JSON line to ``output``
    (appended: one file across restarts)."""

    def __init__(self, workdir: Path, port: int, output: Path, name: str) -> None:
        assert NFACCTD is not None, "nfacctd is missing: `make test-deps` installs it (pmacct)"
        primitives = workdir / "primitives.lst"
        primitives.write_text(
            "".join(
                f"name={name}\tfield_type={field}\tlen={length}\tsemantics={semantics}\n"
                for name, (field, length, semantics, _) in PRIMITIVES.items()
            )
        )
        self.log = workdir / f"{name}.log"
        config = workdir / f"{name}.conf"
        config.write_text(
            "daemonize: false\n"
            f"logfile: {self.log}\n"
            "nfacctd_ip: 127.0.0.1\n"
            f"nfacctd_port: {port}\n"
            f"aggregate_primitives: {primitives}\n"
            "plugins: print\n"
            "aggregate: src_host, dst_host, src_port, dst_port, timestamp_start, timestamp_end, "
            f"{', '.join(PRIMITIVES)}\n"
            "print_output: json\n"
            f"print_output_file: {output}\n"
            "print_output_file_append: true\n"
            "print_refresh_time: 1\n"
        )
        self.process = subprocess.Popen(
            [NFACCTD, "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its plugins are its children: stop them with it
        )
        _wait_for(
            lambda: self.log.exists() and "Purging cache - END" in self.log.read_text(), "start"
        )

    def kill(self) -> None:
        """Gone at once, as a crash would take it: nothing more is read from its socket."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def printed(output: Path) -> list[dict[str, object]]:
    lines = output.read_text().splitlines() if output.exists() else []
    return [json.loads(line) for line in lines]


def from_nfacctd(flow: Mapping[str, object]) -> dict[str, object]:
    """A flow nfacctd printed as element values, for ``same_figures``."""
    fields: dict[str, object] = {
        "flowStartMilliseconds": _nfacctd_ms(str(flow["timestamp_start"])),
        "flowEndMilliseconds": _nfacctd_ms(str(flow["timestamp_end"])),
        "sourceIPv4Address": flow["ip_src"],
        "destinationIPv4Address": flow["ip_dst"],
        "sourceTransportPort": flow["port_src"],
        "destinationTransportPort": flow["port_dst"],
    }
    for primitive, (_, _, semantics, name) in PRIMITIVES.items():
        text = str(flow[primitive])
        kind = BY_NAME[name].kind
        if semantics == "hex":
            # The octets as one hex number, leading zeros left out.
            octets = int(text, 16).to_bytes(8, "big")
            fields[name] = struct.unpack(_UNPACK[kind], octets)[0]
        elif kind is Kind.BOOLEAN:
            fields[name] = {"1": True, "2": False}[text]
        else:
            fields[name] = text if semantics == "str" else int(text)
    return fields


def _nfacctd_ms(text: str) -> int:
    moment = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.UTC)
    return round(moment.timestamp() * 1000)


def _runs_logged(daemon: MonitorProcess) -> int:
    return daemon.log().count("info: run target=")


def dropped_total(metrics: int, collector: int) -> float:
    """twamp_ipfix_records_dropped_total of the collector on ``collector``, from /metrics."""
    series = f'twamp_ipfix_records_dropped_total{{collector="127.0.0.1:{collector}"}} '
    text = metrics_text(metrics)
    line = next((line for line in text.splitlines() if line.startswith(series)), None)
    assert line is not None, text
    return float(line.removeprefix(series))


def test_nfacctd_stopped_and_restarted_gets_what_follows_and_the_drops_are_counted(
    tmp_path: Path, server: ServerProcess
) -> None:
    """Over UDP the daemon counts as dropped exactly the records in datagrams the collector's
    host refused (ICMP port unreachable, on the capture too) while nfacctd was down; nfacctd,
    started again, decodes at once what follows (a new session: templates first)."""
    port, metrics = free_port(socket.SOCK_DGRAM), free_port()
    key = tmp_path / "alice.key"
    key.write_text(SECRET + "\n")
    path = tmp_path / "monitor.conf"
    path.write_text(
        f"[monitor]\nhistory = {tmp_path / 'history.sqlite'}\nipfix_enterprise = {PEN}\n"
        f"ipfix_collector = 127.0.0.1:{port}\nmetrics_listen = 127.0.0.1:{metrics}\n"
        f"[target voice]\naddress = 127.0.0.1:{config_port(server)}\nmode = authenticated\n"
        f"key_id = alice\nkey_file = {key}\nmodel = g711\ncount = 20\ndscp = 46\nevery = 2\n"
    )
    output = tmp_path / "flows.json"
    capture = Capture(tmp_path / "export.pcapng", f"udp port {port} or icmp")
    collector = Nfacctd(tmp_path, port, output, "first")
    daemon = MonitorProcess(tmp_path, path)
    try:
        _wait_for(lambda: len(printed(output)) >= 2, "printing two runs", timeout=30)
        # Stop it just after a run, once it printed every run: no record is in its hands then,
        # and the next run is seconds away.
        runs = _runs_logged(daemon)
        daemon.wait_log("info: run target=", count=runs + 1, timeout=10)
        _wait_for(lambda: len(printed(output)) == _runs_logged(daemon), "printing every run")
        collector.kill()
        before = len(printed(output))
        daemon.wait_log("unreachable (port unreachable)", timeout=10)
        daemon.wait_log("info: run target=", count=_runs_logged(daemon) + 1, timeout=10)
        collector = Nfacctd(tmp_path, port, output, "second")
        _wait_for(lambda: len(printed(output)) >= before + 2, "printing after the restart", 30)
        dropped = dropped_total(metrics, port)
        daemon.wait_log("reachable again")
        assert collector.process.poll() is None
    finally:
        status = daemon.stop()
        collector.kill()
        capture.stop()
    assert status == 0, daemon.log()
    for name in ("first", "second"):
        assert "ERROR" not in (tmp_path / f"{name}.log").read_text()

    exported = records(capture, "udp", port)
    runs_by_start = {expected(run)["flowStartMilliseconds"]: run for run in history(path)}
    assert sorted(record.fields["flowStartMilliseconds"] for record in exported) == sorted(
        runs_by_start
    )  # every run went out, once
    refusals = capture.read(
        "-d",
        f"udp.port=={port},cflow",
        "-Y",
        f"icmp.type == 3 && icmp.code == 3 && udp.dstport == {port}",
        "-T",
        "fields",
        "-e",
        "udp.srcport",
        "-e",
        "cflow.sequence",
    )
    refused = {tuple(int(value) for value in line.split("\t")) for line in refusals.splitlines()}
    lost = [record for record in exported if (record.port, record.sequence) in refused]
    assert len(lost) == len(refused) >= 2  # one record per datagram: one run at a time
    assert dropped == len(lost)
    assert f"reachable again; {len(lost)} records dropped meanwhile" in daemon.log()
    # nfacctd wrote every other record, with the figures of its run.
    flows = printed(output)
    arrived = sorted(from_nfacctd(flow)["flowStartMilliseconds"] for flow in flows)
    assert arrived == sorted(
        record.fields["flowStartMilliseconds"] for record in exported if record not in lost
    )
    for flow in flows:
        fields = from_nfacctd(flow)
        same_figures(fields, runs_by_start[fields["flowStartMilliseconds"]])
    # The first record after the outage opened a new session: the template first, from 0.
    after = exported[exported.index(lost[-1]) + 1]
    assert after.sequence == 0 and after.after_template


class Stream:
    """The collector's side of one IPFIX-over-TCP connection: complete messages as read."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.port = connection.getpeername()[1]
        self.connection.settimeout(0.2)
        self.data = bytearray()

    def messages(self) -> int:
        """Messages complete so far (RFC 7011's length field frames them)."""
        with contextlib.suppress(TimeoutError):
            while chunk := self.connection.recv(65536):
                self.data += chunk
        count, at = 0, 0
        while at + 4 <= len(self.data):
            length = struct.unpack_from("!H", self.data, at + 2)[0]
            if at + length > len(self.data):
                break
            count, at = count + 1, at + length
        return count

    def read_to_end(self) -> None:
        self.connection.settimeout(10)
        while chunk := self.connection.recv(65536):
            self.data += chunk


def test_tcp_export_survives_the_collector_stopping_and_starting(
    tmp_path: Path, server: ServerProcess
) -> None:
    """The collector (a listener of the test's own: this nfacctd takes UDP only) closes its
    connection and stops listening, then listens again.  Records wait meanwhile; reconnects
    back off (1 s, 2 s, 4 s between attempts); the new connection starts with the templates
    and sequence 0; every run's record arrives once, and none is counted as dropped."""
    port, metrics = free_port(), free_port()
    path = tmp_path / "monitor.conf"
    path.write_text(
        f"[monitor]\nhistory = {tmp_path / 'history.sqlite'}\nipfix_enterprise = {PEN}\n"
        f"ipfix_collector = 127.0.0.1:{port}\nipfix_transport = tcp\n"
        f"metrics_listen = 127.0.0.1:{metrics}\n"
        f"[target plain]\naddress = 127.0.0.1:{config_port(server)}\ncount = 4\ninterval = 10\n"
        "every = 2\n"
    )
    capture = Capture(tmp_path / "export.pcapng", f"tcp port {port}")
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(30)
    daemon = MonitorProcess(tmp_path, path)
    try:
        first = Stream(listener.accept()[0])
        _wait_for(lambda: first.messages() >= 2, "two records on the first connection")
        # Stop just after a run, once every run's record came (one message each, runs being
        # seconds apart): the next run is seconds away.
        runs = _runs_logged(daemon)
        daemon.wait_log("info: run target=", count=runs + 1, timeout=10)
        _wait_for(lambda: first.messages() == _runs_logged(daemon), "the latest record")
        delivered = first.messages()
        first.connection.close()
        listener.close()
        daemon.wait_log(" unreachable (", timeout=10)
        time.sleep(4.5)  # refused attempts 1 s and 3 s later; the next one, 7 s later
        listener = socket.create_server(("127.0.0.1", port))
        listener.settimeout(30)
        second = Stream(listener.accept()[0])
        while_down = _runs_logged(daemon) - delivered
        _wait_for(lambda: second.messages() >= while_down + 1, "the waiting records and a new one")
        dropped = dropped_total(metrics, port)
    finally:
        status = daemon.stop()
        listener.close()
    second.read_to_end()
    capture.stop()
    assert status == 0, daemon.log()

    # What the collector read is all the exporter sent on each connection: no record went
    # to a connection the collector had closed.
    for stream in (first, second):
        segments = f"tcp.srcport == {stream.port} && tcp.len > 0"
        payload = capture.read("-Y", segments, "-T", "fields", "-e", "tcp.payload")
        assert bytes.fromhex("".join(payload.split()).replace(":", "")) == stream.data
    exported = records(capture, "tcp", port)
    runs_by_start = {expected(run)["flowStartMilliseconds"]: run for run in history(path)}
    starts = [record.fields["flowStartMilliseconds"] for record in exported]
    assert sorted(starts) == sorted(runs_by_start)  # every run, once: none lost, none twice
    assert dropped == 0
    assert "reachable again; 0 records dropped meanwhile" in daemon.log()
    for record in exported:
        same_figures(record.fields, runs_by_start[record.fields["flowStartMilliseconds"]])
    # Two connections, each its own stream: the templates first, records counted from 0.
    streams: dict[int, list[Exported]] = {}
    for record in exported:
        streams.setdefault(record.port, []).append(record)
    assert len(streams) == 2
    for stream in streams.values():
        assert [record.sequence for record in stream] == list(range(len(stream)))
        assert stream[0].after_template
    sent_templates = capture.read(
        "-d", f"tcp.port=={port},cflow", "-Y", "cflow.flowset_id == 2",
        "-T", "fields", "-e", "tcp.srcport", "-e", "cflow.template_id",
    )  # fmt: skip
    per_stream: dict[str, list[str]] = {}
    for line in sent_templates.splitlines():
        source, ids = line.split("\t")
        per_stream.setdefault(source, []).extend(ids.split(","))
    assert {int(source) for source in per_stream} == set(streams)
    for ids in per_stream.values():  # each template once a connection: no refresh over TCP
        assert len(ids) == len(set(ids)), per_stream
    # The attempts while nobody listened were refused (RST), each wait twice the last.
    syns = capture.read(
        "-Y", f"tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.dstport == {port}",
        "-T", "fields", "-e", "frame.time_epoch",
    )  # fmt: skip
    attempts = [float(moment) for moment in syns.split()]
    assert len(attempts) == 4, attempts  # the first connection, two refused, the second
    assert attempts[2] - attempts[1] >= 2.0 - 0.01
    assert attempts[3] - attempts[2] >= 4.0 - 0.01
