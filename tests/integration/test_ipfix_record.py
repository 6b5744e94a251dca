"""A real measurement as an IPFIX record: every figure the same as --json's, and tshark reads
the encoded record as it was meant."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from support import config_port, running_server, server_config
from twamp_client import Target, Test, measure
from twamp_client.reports import json as json_report
from twamp_client.reports.ipfix import record
from twamp_common.ipfix import Exporter
from twamp_common.traffic import TrafficModel


def test_a_measurement_becomes_a_record_with_its_json_figures(tmp_path: Path) -> None:
    with running_server(tmp_path, server_config(tmp_path)) as server:
        result = measure(
            Target("127.0.0.1", config_port(server)),
            Test(count=10, dscp=46, traffic=TrafficModel("g711")),
        )
    document = json_report.document(result)
    fields = record(result, name="lab")
    assert fields is not None
    assert fields["targetName"] == "lab"
    assert fields["destinationIPv4Address"] == ipaddress.ip_address("127.0.0.1")
    assert fields["sourceIPv4Address"] == ipaddress.ip_address("127.0.0.1")
    assert fields["destinationTransportPort"] == document["test_port"]
    assert fields["ipDiffServCodePoint"] == 46
    assert fields["packetTotalCount"] == document["sent"] == 10
    assert fields["postPacketTotalCount"] == document["received"] == 10
    assert fields["totalLossCount"] == document["lost"] == 0
    assert (fields["forwardLossCount"], fields["reverseLossCount"]) == (0, 0)
    assert fields["hostDroppedCount"] == document["host_dropped"] == 0
    for element, key in (
        ("roundTripDelay", "rtt_us"),
        ("outboundDelay", "outbound_us"),
        ("inboundDelay", "inbound_us"),
    ):
        for part in ("min", "avg", "max"):
            assert fields[f"{element}{part.title()}"] == round(document[key][part] * 1000)
    for element, key in (("outboundJitter", "outbound_us"), ("inboundJitter", "inbound_us")):
        assert fields[element] == round(document[key]["jitter"] * 1000)
    assert fields["roundTripJitter"] == round(document["jitter_us"]["rfc3550"] * 1000)
    assert fields["trafficModel"] == "g711"
    assert fields["securityMode"] == "unauthenticated"
    assert round(fields["outboundMos"], 3) == document["mos"]["out"]  # type: ignore[arg-type]
    assert fields["flowStartMilliseconds"] <= fields["flowEndMilliseconds"]  # type: ignore[operator]
    messages = Exporter(observation_domain=1).messages([fields], now=1_796_000_000.0)
    assert len(messages) == 1 and len(messages[0]) < 1472


def test_a_run_that_never_started_has_no_record() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    result = measure(Target("127.0.0.1", closed), Test(count=1))
    assert result.error is not None
    assert record(result) is None
