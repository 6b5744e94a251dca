"""An independent STAMP implementation reads what we write and writes what we read: scapy.

``scapy.contrib.stamp`` (scapy 2.8) knows the unauthenticated Session-Sender and Session-Reflector
packets of RFC 8762 with the SSID of RFC 8972, and TLVs as Flags/Type/Length/Value without the
values' meaning; it has no authenticated layout.  So the base packets and the TLV framing are
checked against it both ways, and the TLV values against the octets of tests/unit/test_stamp.py.

scapy's ``FlagsField("flags", 0, 8, "UMIRRRRR")`` names the bits from the least significant one,
so what it calls U is 0x01; RFC 8972 §4 draws U as the first (most significant) bit, 0x80.  The
flags are therefore compared as numbers here.

The last test runs over real UDP sockets on loopback: a sender built with scapy, a small socket
loop calling our sans-I/O :func:`reflect`, and scapy parsing the reply.
"""

from __future__ import annotations

import socket
import threading
import time

from scapy.contrib import stamp as scapy_stamp
from twamp_common import stamp_tlv
from twamp_common.stamp import StampSenderPacket, build_sender_packet, parse_reply
from twamp_common.stamp_reflector import Arrival, Counters, ReflectorConfig, ReflectorState, reflect
from twamp_common.stamp_tlv import (
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Location,
    LocationSubType,
    TimestampInformation,
)
from twamp_common.timestamp import NTP_UNIX_OFFSET, ErrorEstimate, ntp_to_ns
from twamp_common.udp_options import parse_ancillary, receive_options

Sender = scapy_stamp.STAMPSessionSenderTestUnauthenticated
Reflector = scapy_stamp.STAMPSessionReflectorTestUnauthenticated
ScapyTlv = scapy_stamp.STAMPTestTLV
ScapyErrorEstimate = scapy_stamp.ErrorEstimate

IPPROTO_IP, IP_TOS = socket.IPPROTO_IP, socket.IP_TOS
EE = ErrorEstimate(synchronized=True, scale=3, multiplier=9)
CONFIG = ReflectorConfig(ErrorEstimate(synchronized=False, scale=12, multiplier=5))
#: An NTP time with an exact binary fraction, so that scapy's float input is exact.
NTP_SECONDS = 3_900_000_000.25
T1_NS = ntp_to_ns(int(NTP_SECONDS * 2**32))
TLV_VALUES = [
    ExtraPadding(b"\x00" * 12),
    Location.asking(LocationSubType.SOURCE_IP, LocationSubType.DESTINATION_IP),
    TimestampInformation(),
    ClassOfService(46),
    DirectMeasurement(3),
    AccessReport(2, 1),
    FollowUpTelemetry(),
]


def scapy_tlvs(values: list[stamp_tlv.TlvValue], flags: int = 0x80) -> list[object]:
    return [
        ScapyTlv(flags=flags, type=v.TYPE, len=len(v.pack_value()), value=v.pack_value())
        for v in values
    ]


def raw(packet: object, name: str) -> int:
    """A field's wire value (scapy shows timestamps as decimals of seconds)."""
    return int(packet.getfieldval(name))  # type: ignore[attr-defined]


def test_scapy_sender_packet_is_read_by_us() -> None:
    sent = Sender(
        seq=0xDEADBEEF,
        ts=NTP_SECONDS,
        err_estimate=ScapyErrorEstimate(S=1, scale=3, multiplier=9),
        ssid=0x1234,
        tlv_objects=scapy_tlvs(TLV_VALUES),
    )
    wire = bytes(sent)
    ours = StampSenderPacket.unpack(wire)
    assert (ours.seq, ours.timestamp, ours.ssid) == (0xDEADBEEF, raw(sent, "ts"), 0x1234)
    assert ErrorEstimate.from_wire(ours.error_estimate) == EE
    decoded = stamp_tlv.decode(wire, 44)
    assert [tlv.value for tlv in decoded] == TLV_VALUES
    assert all(tlv.flags == stamp_tlv.TlvFlags.UNRECOGNIZED for tlv in decoded)


def test_our_sender_packet_is_read_by_scapy() -> None:
    wire = build_sender_packet(41, T1_NS, error_estimate=EE, ssid=7, tlvs=TLV_VALUES)
    parsed = Sender(wire)
    assert (parsed.seq, parsed.ssid, raw(parsed, "mbz")) == (41, 7, 0)
    assert raw(parsed, "ts") == int(NTP_SECONDS * 2**32)
    estimate = parsed.err_estimate
    assert (estimate.S, estimate.Z, estimate.scale, estimate.multiplier) == (1, 0, 3, 9)
    assert [(int(t.flags), t.type, t.value) for t in parsed.tlv_objects] == [
        (0x80, v.TYPE, v.pack_value()) for v in TLV_VALUES
    ]


def test_our_reflection_of_a_scapy_packet_is_read_by_scapy() -> None:
    sent = Sender(seq=9, ts=NTP_SECONDS, ssid=0xBEEF, tlv_objects=scapy_tlvs(TLV_VALUES))
    t2 = T1_NS + 1_000_000
    arrival = Arrival(ttl=63, tos=0xB8, source=("10.0.0.2", 5001), destination=("10.0.0.1", 862))
    reflection = reflect(
        bytes(sent), t2_ns=t2, config=CONFIG, arrival=arrival, counters=Counters(5, 4)
    )
    reply = Reflector(reflection.finish(t2 + 500))
    assert (reply.seq, reply.seq_sender, reply.ssid, reply.ttl_sender) == (9, 9, 0xBEEF, 63)
    assert raw(reply, "ts_sender") == raw(sent, "ts")
    assert ntp_to_ns(raw(reply, "ts_rx")) == t2
    assert ntp_to_ns(raw(reply, "ts")) == t2 + 500
    assert (raw(reply, "mbz1"), raw(reply, "mbz2")) == (0, 0)
    assert [(int(t.flags), t.type, t.len) for t in reply.tlv_objects] == [
        (0, v.TYPE, len(v.pack_value())) for v in TLV_VALUES
    ]
    assert reply.tlv_objects[3].value == ClassOfService(46, 46, 0).pack_value()
    assert len(bytes(reply)) == len(bytes(sent))


def test_scapy_reflector_packet_is_read_by_us() -> None:
    cos = ClassOfService(10, 12, 2)
    built = Reflector(
        seq=3,
        ts=NTP_SECONDS + 0.5,
        err_estimate=ScapyErrorEstimate(S=0, scale=12, multiplier=5),
        ssid=77,
        ts_rx=NTP_SECONDS + 0.25,
        seq_sender=4,
        ts_sender=NTP_SECONDS,
        err_estimate_sender=ScapyErrorEstimate(S=1, scale=3, multiplier=9),
        ttl_sender=250,
        tlv_objects=scapy_tlvs([cos], flags=0),
    )
    reply = parse_reply(bytes(built))
    assert (reply.seq, reply.sender_seq, reply.ssid, reply.ttl) == (3, 4, 77, 250)
    assert (reply.t1_ns, reply.t2_ns, reply.t3_ns) == (
        T1_NS,
        T1_NS + 250_000_000,
        T1_NS + 500_000_000,
    )
    assert reply.sender_error_estimate == EE
    assert reply.class_of_service == cos


def test_scapy_sender_against_our_reflector_over_udp() -> None:
    """A real datagram exchange on loopback; the reflector loop is test scaffolding."""
    reflector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reflector.bind(("127.0.0.1", 0))
    for option in receive_options(socket.AF_INET):
        reflector.setsockopt(*option)
    reflector.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    reflector.settimeout(5)
    address = reflector.getsockname()
    state = ReflectorState()
    count = 3

    def serve() -> None:
        for _ in range(count):
            data, ancillary, _flags, peer = reflector.recvmsg(2048, 256)
            kernel_t2, ttl = parse_ancillary(ancillary)
            tos = next(
                (v[0] for level, kind, v in ancillary if (level, kind) == (IPPROTO_IP, IP_TOS)),
                None,
            )
            t2 = kernel_t2 or time.time_ns()
            arrival = Arrival(ttl=ttl, tos=tos, source=peer, destination=address)
            reflection = reflect(
                data, t2_ns=t2, config=CONFIG, arrival=arrival, state=state, session=peer
            )
            reflector.sendto(reflection.finish(time.time_ns()), peer)

    loop = threading.Thread(target=serve)
    loop.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)  # DSCP 10
        sender.settimeout(5)
        for seq in range(100, 100 + count):
            packet = Sender(
                seq=seq,
                ts=time.time() + NTP_UNIX_OFFSET,
                ssid=0x5353,
                tlv_objects=scapy_tlvs([ClassOfService(0), DirectMeasurement(seq - 99)]),
            )
            sender.sendto(bytes(packet), address)
            data = sender.recv(2048)
            reply = Reflector(data)
            assert len(data) == len(bytes(packet))
            assert (reply.seq, reply.seq_sender, reply.ssid) == (seq - 100, seq, 0x5353)
            assert reply.ttl_sender == 64  # Linux's default TTL, as the reflector saw it
            assert raw(reply, "ts_sender") == raw(packet, "ts")
            assert raw(reply, "ts") >= raw(reply, "ts_rx") >= raw(packet, "ts") - 2**32
            cos = ClassOfService.from_value(reply.tlv_objects[0].value)
            assert (cos.dscp2, cos.ecn) == (10, 0)
            counters = DirectMeasurement.from_value(reply.tlv_objects[1].value)
            assert counters == DirectMeasurement(seq - 99, seq - 99, seq - 99)
            assert [int(t.flags) for t in reply.tlv_objects] == [0, 0]
    loop.join(5)
    reflector.close()
    assert not loop.is_alive()
