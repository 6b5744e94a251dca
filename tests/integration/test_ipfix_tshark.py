"""Wireshark's IPFIX dissector reads our export exactly as we meant it.

A pcap written here with the standard library (Ethernet, IPv4 and UDP headers built by hand,
IPFIX's port 4739) carries the messages of an :class:`Exporter`: IPv4 and IPv6 records, values
left out, both variable-length forms, records split over several messages and a template
refresh.  tshark must find no malformed packet and no expert error; every IANA field must read
back as the value encoded, and every enterprise field must show our PEN in its template and
our raw octets in the data.
"""

from __future__ import annotations

import datetime
import json
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

from twamp_common.ipfix import (
    DOCUMENTATION_PEN,
    ELEMENTS,
    IPFIX_PORT,
    Exporter,
    Kind,
    endpoint_fields,
)

TSHARK = shutil.which("tshark")
NOW = 1_700_000_011.25
START = 1_700_000_000_123

#: tshark's field for each IANA element we use.
IANA_FIELDS = {
    "sourceIPv4Address": "cflow.srcaddr",
    "destinationIPv4Address": "cflow.dstaddr",
    "sourceIPv6Address": "cflow.srcaddrv6",
    "destinationIPv6Address": "cflow.dstaddrv6",
    "sourceTransportPort": "cflow.srcport",
    "destinationTransportPort": "cflow.dstport",
    "ipDiffServCodePoint": "cflow.ip_dscp",
    "packetTotalCount": "cflow.permanent_packets",
    "postPacketTotalCount": "cflow.post_total_packets",
}


def _run(index: int) -> dict[str, object]:
    """A complete record of run ``index``: every element has a value."""
    return {
        "flowStartMilliseconds": START + index * 60_000,
        "flowEndMilliseconds": START + index * 60_000 + 10_333,
        **endpoint_fields("192.0.2.1", 40000 + index, "198.51.100.7", 862),
        "ipDiffServCodePoint": 46,
        "packetTotalCount": 500,
        "postPacketTotalCount": 497 - index,
        "roundTripDelayMin": 180_250,
        "roundTripDelayAvg": 201_777,
        "roundTripDelayMax": 2**40 + 3,
        "outboundDelayMin": -1_250,
        "outboundDelayAvg": 90_001,
        "outboundDelayMax": 150_000,
        "inboundDelayMin": 70_000,
        "inboundDelayAvg": 111_776,
        "inboundDelayMax": -(2**62),
        "outboundJitter": 4_321,
        "inboundJitter": 1_234,
        "roundTripJitter": 5_000,
        "forwardLossCount": 1,
        "reverseLossCount": 2 + index,
        "totalLossCount": 3 + index,
        "duplicateCount": 4,
        "reorderedCount": 5,
        "outboundMos": 4.3912,
        "inboundMos": 1.0,
        "targetName": f"edge-{index}.example",
        "trafficModel": "g711",
        "securityMode": "authenticated",
        "clocksSynchronised": index % 2 == 0,
        "hostDroppedCount": 6 * index,
    }


def _records() -> list[dict[str, object]]:
    v6 = {
        **_run(7),
        **endpoint_fields("2001:db8::1", 50000, "2001:db8:ff::2", 863),
        "targetName": "ŝ" * 200,  # 400 octets: the three-octet length form
        "forwardLossCount": None,  # could not be told
        "reverseLossCount": None,
        "outboundMos": None,
    }
    del v6["sourceIPv4Address"], v6["destinationIPv4Address"], v6["inboundMos"]
    return [_run(0), v6, _run(1), _run(2), _run(3), v6]


def _frame(payload: bytes) -> bytes:
    """Ethernet II, IPv4 (header checksum filled in), UDP (checksum 0: none) to port 4739."""
    udp = struct.pack("!HHHH", 50123, IPFIX_PORT, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    total = sum(struct.unpack("!10H", ip))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    ip = ip[:10] + struct.pack("!H", checksum) + ip[12:]
    return bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + ip + udp


def _write_pcap(path: Path, payloads: list[bytes]) -> None:
    """Classic pcap, link type 1 (Ethernet)."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for index, payload in enumerate(payloads):
            frame = _frame(payload)
            out.write(struct.pack("<IIII", int(NOW) + index, 0, len(frame), len(frame)))
            out.write(frame)


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """tshark's JSON repeats keys (one per enterprise field): keep every value, in order."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            previous = result[key]
            result[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[key] = value
    return result


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _ms(text: str) -> int:
    stamp, fraction = text.removesuffix(" UTC").rsplit(".", 1)
    moment = datetime.datetime.strptime(stamp, "%b %d, %Y %H:%M:%S").replace(tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 1000 + int(fraction[:3])


def _tshark(capture: Path, *args: str) -> str:
    assert TSHARK is not None, "tshark is missing: `make venv` installs it (Debian package tshark)"
    return subprocess.run(
        [TSHARK, "-r", str(capture), "-d", f"udp.port=={IPFIX_PORT},cflow", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def _children(layer: Mapping[str, object], prefix: str) -> list[Mapping[str, object]]:
    found = [value for key, value in layer.items() if key.startswith(prefix)]
    assert all(isinstance(value, Mapping) for value in found)
    return found  # type: ignore[return-value]


def _octets(kind: Kind, value: object) -> bytes:
    """What tshark must show of an enterprise field: RFC 7011 §6.1 big-endian values, 1 or 2
    for a boolean, a string's UTF-8 without its length prefix (tshark shows that apart)."""
    if isinstance(value, bool):
        return b"\x01" if value else b"\x02"
    if isinstance(value, str):
        return value.encode()
    codes = {Kind.UNSIGNED64: "!Q", Kind.SIGNED64: "!q", Kind.FLOAT64: "!d"}
    return struct.pack(codes[kind], value)


def _raw(entry: str) -> bytes:
    return bytes.fromhex(entry.replace(":", ""))


def test_tshark_decodes_every_field_as_encoded(tmp_path: Path) -> None:
    records = _records()
    exporter = Exporter(observation_domain=4_000_000_001, max_message_size=700)
    messages = exporter.messages(records, NOW)
    refresh = exporter.messages(records[:1], NOW + 600)  # the template again, then its data
    capture = tmp_path / "ipfix.pcap"
    _write_pcap(capture, messages + refresh)
    assert len(messages) >= 3, "the size limit must split the records"

    assert _tshark(capture, "-Y", '_ws.malformed || _ws.expert.severity >= "Error"') == ""
    text = _tshark(capture, "-T", "json")
    assert "_ws.malformed" not in text
    packets = json.loads(text, object_pairs_hook=_pairs)
    assert len(packets) == len(messages) + len(refresh)

    templates: dict[int, list[Mapping[str, object]]] = {}
    flows: list[tuple[int, Mapping[str, object]]] = []
    headers: list[tuple[int, int, int, int]] = []
    per_packet: list[int] = []
    set_ids: list[list[int]] = []
    for packet in packets:
        layer = packet["_source"]["layers"]["cflow"]
        headers.append(
            (
                int(layer["cflow.sequence"]),
                int(layer["cflow.od_id"]),
                int(layer["cflow.timestamp_tree"]["cflow.exporttime"]),
                int(layer["cflow.len"]),
            )
        )
        flows_before = len(flows)
        for flowset in _children(layer, "Set "):
            set_id = int(flowset["cflow.flowset_id"])
            if set_id == 2:
                for template in _children(flowset, "Template "):
                    templates[int(template["cflow.template_id"])] = _children(template, "Field ")
            else:
                flows += [(set_id, flow) for flow in _children(flowset, "Flow ")]
        per_packet.append(len(flows) - flows_before)
        set_ids.append([int(flowset["cflow.flowset_id"]) for flowset in _children(layer, "Set ")])

    # Each header counts the data records of the messages before it (RFC 7011 §3.1).
    assert headers == [
        (sum(per_packet[:i]), 4_000_000_001, int(NOW) + (600 if i >= len(messages) else 0), len(m))
        for i, m in enumerate(messages + refresh)
    ]
    assert len(flows) == len(records) + 1
    # Templates 256 (IPv4) and 257 (IPv6) go out once, then again after the refresh time.
    assert next(ids for ids in set_ids if 2 in ids)[:2] == [2, 256]
    assert sum(ids.count(2) for ids in set_ids) == 3
    assert set_ids[-1] == [2, 256]

    for (template_id, flow), record in zip(flows, [*records, records[0]], strict=True):
        present = [e for e in ELEMENTS if record.get(e.name) is not None]
        fields = templates[template_id]
        assert len(fields) == len(present)
        entries = _as_list(flow.get("cflow.enterprise_private_entry", []))
        ours = iter(entries)
        for element, field in zip(present, fields, strict=True):
            value = record[element.name]
            if element.enterprise is None:
                assert int(field["cflow.template_ipfix_pen_provided"]) == 0
                assert int(field["cflow.template_ipfix_field_type"]) == element.id
                if element.name == "flowStartMilliseconds":
                    assert _ms(flow["cflow.timedelta_tree"]["cflow.abstimestart"]) == value
                elif element.name == "flowEndMilliseconds":
                    assert _ms(flow["cflow.timedelta_tree"]["cflow.abstimeend"]) == value
                else:
                    assert flow[IANA_FIELDS[element.name]] == str(value), element.name
            else:
                assert int(field["cflow.template_ipfix_pen_provided"]) == 1
                assert int(field["cflow.template_ipfix_field_pen"]) == DOCUMENTATION_PEN
                assert int(field["cflow.template_ipfix_field_type_enterprise"]) == element.id
                assert _raw(next(ours)) == _octets(element.kind, value), element.name
        assert next(ours, None) is None
    long_names = [flow for _, flow in flows if "cflow.string_len_long" in str(flow)]
    assert len(long_names) == 2
