"""Wireshark decodes our STAMP packets as TWAMP-Test where the layouts agree.

tshark 4.0 (Debian bookworm) has no STAMP dissector; its TWAMP-Test dissector, given no
TWAMP-Control context, reads every datagram as an unauthenticated reflector packet, which is
exactly the STAMP unauthenticated reflector layout (RFC 8762 §4.3.1, the SSID where RFC 5357 has
its first MBZ), and agrees with the sender layout on its first 16 octets.  A pcap written here
with the standard library holds request/reply pairs (with and without TLVs); tshark must find
no malformed packet and read back every field where the layouts agree.
"""

from __future__ import annotations

import datetime
import struct
from pathlib import Path

from support import tshark_lines
from twamp_common.stamp import build_sender_packet
from twamp_common.stamp_reflector import Arrival, Counters, ReflectorConfig, reflect
from twamp_common.stamp_tlv import (
    ClassOfService,
    DirectMeasurement,
    FollowUpTelemetry,
    Location,
    LocationSubType,
    TimestampInformation,
)
from twamp_common.timestamp import ErrorEstimate

PORT = 40862
SENDER, REFLECTOR = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
T1 = 1_700_000_000_123_456_000
EE = ErrorEstimate(synchronized=True, scale=3, multiplier=9)
OUR_EE = ErrorEstimate(synchronized=False, scale=14, multiplier=200)
TLV_SETS = [
    [],
    [ClassOfService(46), DirectMeasurement(1)],
    [TimestampInformation(), FollowUpTelemetry(), Location.asking(LocationSubType.SOURCE_IP)],
]


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _ipv4_udp(source: bytes, destination: bytes, ports: tuple[int, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload  # checksum 0: none
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, source, destination
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + udp


def _write_pcap(path: Path, datagrams: list[bytes]) -> None:
    """Classic pcap, link type 228 (raw IPv4)."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228))
        for index, datagram in enumerate(datagrams):
            out.write(struct.pack("<IIII", 1_700_000_000 + index, 0, len(datagram), len(datagram)))
            out.write(datagram)


def _ns(text: str) -> int:
    """tshark's absolute time ("Nov 14, 2023 22:13:20.123456789 UTC") in Unix ns, rounded to
    the microsecond: tshark truncates the 2**-32 s fraction where we round it."""
    stamp, fraction = text.removesuffix(" UTC").rsplit(".", 1)
    moment = datetime.datetime.strptime(stamp, "%b %d, %Y %H:%M:%S").replace(tzinfo=datetime.UTC)
    return _us(int(moment.timestamp()) * 1_000_000_000 + int(fraction.ljust(9, "0")))


def _us(ns: int) -> int:
    return (ns + 500) // 1000


def test_tshark_reads_stamp_as_twamp_test_where_layouts_agree(tmp_path: Path) -> None:
    datagrams, expected = [], []
    for seq, tlvs in enumerate(TLV_SETS):
        t1 = T1 + seq * 1_000_000
        request = build_sender_packet(
            seq, t1, error_estimate=EE, ssid=0x5300 + seq, tlvs=tlvs, size=120 if seq else None
        )
        reply = reflect(
            request,
            t2_ns=t1 + 40_000,
            config=ReflectorConfig(OUR_EE),
            arrival=Arrival(ttl=61, tos=0),
            counters=Counters(seq + 1, seq + 1),
        ).finish(t1 + 55_000)
        assert len(reply) == len(request)
        datagrams += [
            _ipv4_udp(SENDER, REFLECTOR, (5000, PORT), request),
            _ipv4_udp(REFLECTOR, SENDER, (PORT, 5000), reply),
        ]
        expected.append(("request", seq, _us(t1), EE.to_wire(), 0x5300 + seq))
        expected.append(("reply", seq, _us(t1 + 55_000), OUR_EE.to_wire(), 0x5300 + seq))
        expected.append((_us(t1 + 40_000), seq, _us(t1), EE.to_wire(), 61))
    capture = tmp_path / "stamp.pcap"
    _write_pcap(capture, datagrams)
    decode = ["-d", f"udp.port=={PORT},twamp.test"]

    def run(*args: str) -> list[str]:
        return tshark_lines(capture, decode, *args)

    assert run("-Y", '_ws.malformed || _ws.expert.severity >= "Error"') == []
    fields = [
        "twamp.test.seq_number",
        "twamp.test.timestamp",
        "twamp.test.error_estimate",
        "twamp.test.mbz1",
        "twamp.test.receive_timestamp",
        "twamp.test.sender_seq_number",
        "twamp.test.sender_timestamp",
        "twamp.test.sender_error_estimate",
        "twamp.test.sender_ttl",
    ]
    rows = run("-Y", "twamp.test", "-T", "fields", *(f"-e{name}" for name in fields))
    assert len(rows) == 2 * len(TLV_SETS)
    for index, row in enumerate(rows):
        seq, t, error, ssid, t2, sender_seq, t1, sender_error, ttl = row.split("\t")
        kind, want_seq, want_t, want_error, want_ssid = expected[3 * (index // 2) + index % 2]
        # Sequence Number, Timestamp, Error Estimate and SSID share offsets in both packets.
        assert (int(seq), _ns(t), int(error, 0), int(ssid, 0)) == (
            want_seq,
            want_t,
            want_error,
            want_ssid,
        ), kind
        if kind == "reply":  # the whole reflector layout is TWAMP-Test's
            assert (_ns(t2), int(sender_seq), _ns(t1), int(sender_error, 0), int(ttl)) == (
                expected[3 * (index // 2) + 2]
            )
