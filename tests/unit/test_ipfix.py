"""The IPFIX encoder against octets written out by hand from RFC 7011 §3 and §6–7."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from twamp_common.errors import LocalProtocolError
from twamp_common.ipfix import (
    BY_NAME,
    ELEMENTS,
    Exporter,
    Kind,
    encode_value,
    endpoint_fields,
    variable_length,
)

NOW = 1_700_000_000.9  # export time 0x6553f100: seconds, truncated
RECORD = {
    "flowStartMilliseconds": 1_700_000_000_123,
    "sourceIPv4Address": "192.0.2.1",
    "packetTotalCount": 100,
    "roundTripDelayMin": 1500,
    "outboundDelayMin": -20,
    "targetName": "r1",
    "clocksSynchronised": False,
}
#: RECORD's template, ID 256: seven field specifiers, the last four with the enterprise bit and
#: PEN 32473 (0x7ed9).
RECORD_TEMPLATE = bytes.fromhex(
    "0002 0034"  # template set, 52 octets
    "0100 0007"  # template 256, 7 fields
    "0098 0008"  # flowStartMilliseconds 152, 8 octets
    "0008 0004"  # sourceIPv4Address 8
    "0056 0008"  # packetTotalCount 86
    "8001 0008 00007ed9"  # roundTripDelayMin, enterprise 1
    "8004 0008 00007ed9"  # outboundDelayMin, enterprise 4
    "8014 ffff 00007ed9"  # targetName, enterprise 20, variable length
    "8017 0001 00007ed9"  # clocksSynchronised, enterprise 23
)
RECORD_DATA = bytes.fromhex(
    "0100 002c"  # data set of template 256, 44 octets
    "0000018bcfe5687b"  # 1 700 000 000 123 ms
    "c0000201"  # 192.0.2.1
    "0000000000000064"  # 100
    "00000000000005dc"  # 1500
    "ffffffffffffffec"  # −20, two's complement
    "02 7231"  # "r1", one length octet
    "02"  # false
)


def header(length: int, sequence: int, domain: int = 7) -> bytes:
    return bytes.fromhex(f"000a {length:04x} 6553f100 {sequence:08x} {domain:08x}")


def test_message_header_template_set_and_data_set_octet_for_octet() -> None:
    messages = Exporter(observation_domain=7).messages([RECORD], NOW)
    assert messages == [header(0x70, 0) + RECORD_TEMPLATE + RECORD_DATA]


def test_enterprise_elements_carry_the_exporters_pen() -> None:
    (message,) = Exporter(7, enterprise=0x01020304).messages([RECORD], NOW)
    assert message.count(bytes.fromhex("01020304")) == 4
    assert bytes.fromhex("7ed9") not in message


def test_none_and_absent_values_leave_the_element_out_with_its_own_template() -> None:
    exporter = Exporter(7)
    without = {**RECORD, "roundTripDelayMin": None}
    del without["outboundDelayMin"]
    first, second = exporter.messages([RECORD], NOW), exporter.messages([without], NOW)
    template = bytes.fromhex(
        "0002 0024 0101 0005 0098 0008 0008 0004 0056 0008 8014 ffff 00007ed9 8017 0001 00007ed9"
    )
    data = bytes.fromhex("0101 001c 0000018bcfe5687b c0000201 0000000000000064 02 7231 02")
    assert first == [header(0x70, 0) + RECORD_TEMPLATE + RECORD_DATA]
    assert second == [header(16 + len(template) + len(data), 1) + template + data]
    # Both templates stay: a complete record again uses 256, with no template this time.
    assert exporter.messages([RECORD], NOW) == [header(0x3C, 2) + RECORD_DATA]


def test_ipv4_and_ipv6_records_use_their_own_templates_in_one_message() -> None:
    v4 = endpoint_fields("192.0.2.1", 862, "198.51.100.7", 863)
    v6 = endpoint_fields(ipaddress.ip_address("2001:db8::1"), 862, "2001:db8::2", 863)
    (message,) = Exporter(1).messages([v4, v6, v6], NOW)
    assert message == header(len(message), 0, domain=1) + bytes.fromhex(
        "0002 0018 0100 0004 0008 0004 000c 0004 0007 0002 000b 0002"
        "0100 0010 c0000201 c6336407 035e 035f"
        "0002 0018 0101 0004 001b 0010 001c 0010 0007 0002 000b 0002"
        "0101 004c"
        "20010db8000000000000000000000001 20010db8000000000000000000000002 035e 035f"
        "20010db8000000000000000000000001 20010db8000000000000000000000002 035e 035f"
    )


def test_endpoint_fields_refuse_mixed_versions() -> None:
    with pytest.raises(ValueError, match="different IP versions"):
        endpoint_fields("192.0.2.1", 1, "::1", 2)


@pytest.mark.parametrize(
    ("size", "prefix"),
    [(0, "00"), (1, "01"), (254, "fe"), (255, "ff00ff"), (256, "ff0100"), (1000, "ff03e8")],
)
def test_variable_length_uses_one_octet_below_255_and_three_from_255(
    size: int, prefix: str
) -> None:
    content = bytes(range(256)) * 4
    assert variable_length(content[:size]) == bytes.fromhex(prefix) + content[:size]


def test_variable_length_refuses_more_than_65535_octets() -> None:
    with pytest.raises(ValueError, match="65536 octets"):
        variable_length(bytes(65536))


def test_long_string_in_a_record_takes_the_three_octet_form() -> None:
    (message,) = Exporter(7).messages([{"targetName": "é" * 150}], NOW)
    assert message.endswith(bytes.fromhex("0100 0133 ff012c") + "é".encode() * 150)


@pytest.mark.parametrize(
    ("name", "value", "octets"),
    [
        ("clocksSynchronised", True, "01"),
        ("clocksSynchronised", False, "02"),
        ("ipDiffServCodePoint", 46, "2e"),
        ("sourceTransportPort", 65535, "ffff"),
        ("packetTotalCount", 2**64 - 1, "ffffffffffffffff"),
        ("outboundDelayAvg", -(2**63), "8000000000000000"),
        ("inboundMos", 4.25, "4011000000000000"),
        ("outboundMos", 3, "4008000000000000"),
        ("sourceIPv6Address", "::1", "00000000000000000000000000000001"),
        ("flowEndMilliseconds", 0, "0000000000000000"),
        ("securityMode", "", "00"),
    ],
)
def test_each_type_encodes_per_rfc_7011_section_6(name: str, value: object, octets: str) -> None:
    assert encode_value(BY_NAME[name], value) == bytes.fromhex(octets)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("clocksSynchronised", 1, "True or False"),
        ("ipDiffServCodePoint", 256, "outside unsigned8"),
        ("packetTotalCount", -1, "outside unsigned64"),
        ("roundTripDelayMin", True, "integer"),
        ("roundTripDelayMin", 1.5, "integer"),
        ("outboundDelayMin", 2**63, "outside signed64"),
        ("inboundMos", "4", "number"),
        ("sourceIPv4Address", "::1", "IPv4 address"),
        ("sourceIPv6Address", "192.0.2.1", "IPv6 address"),
        ("sourceIPv4Address", "nowhere", "does not appear to be"),
        ("sourceIPv4Address", 3221225985, "IPv4 address"),
        ("targetName", b"r1", "string"),
    ],
)
def test_bad_values_are_refused_by_name(name: str, value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_value(BY_NAME[name], value)


def test_a_bad_record_consumes_nothing() -> None:
    exporter = Exporter(7)
    with pytest.raises(LocalProtocolError, match="record 1: packetTotalCount") as caught:
        exporter.messages([RECORD, {**RECORD, "packetTotalCount": -1}], NOW)
    assert caught.value.field == "packetTotalCount"
    with pytest.raises(LocalProtocolError, match="'jitter' is not an element"):
        exporter.messages([{"jitter": 3}], NOW)
    with pytest.raises(LocalProtocolError, match="no known value"):
        exporter.messages([{"targetName": None}], NOW)
    assert exporter.sequence == 0
    assert exporter.messages([RECORD], NOW) == [header(0x70, 0) + RECORD_TEMPLATE + RECORD_DATA]


def test_sequence_number_counts_data_records_sent_before_each_message() -> None:
    exporter = Exporter(7)
    ten = [{"packetTotalCount": n} for n in range(10)]
    sequences = [struct.unpack_from("!I", m, 8)[0] for m in exporter.messages(ten[:3], NOW)]
    sequences += [struct.unpack_from("!I", m, 8)[0] for m in exporter.messages(ten, NOW)]
    assert sequences == [0, 3]
    assert exporter.sequence == 13
    assert exporter.messages([], NOW) == []


def test_sequence_number_wraps_modulo_2_to_the_32() -> None:
    exporter = Exporter(7, max_message_size=16 + 12 + 4 + 8)
    exporter._sequence = 2**32 - 1
    messages = exporter.messages([{"packetTotalCount": 1}, {"packetTotalCount": 2}], NOW)
    assert [struct.unpack_from("!I", m, 8)[0] for m in messages] == [2**32 - 1, 0]
    assert exporter.sequence == 1


@pytest.mark.parametrize(("limit", "counts"), [(56, [3, 4, 3]), (55, [2, 4, 4])])
def test_records_are_split_so_that_no_message_exceeds_the_limit(
    limit: int, counts: list[int]
) -> None:
    # 8-octet records; 16 header + 12 template set + 4 data set header + 8 n; then 16 + 4 + 8 n.
    records = [{"packetTotalCount": n} for n in range(10)]
    messages = Exporter(7, max_message_size=limit).messages(records, NOW)
    assert [(len(m) - 20 - (12 if i == 0 else 0)) // 8 for i, m in enumerate(messages)] == counts
    assert all(len(m) <= limit for m in messages)
    assert [struct.unpack_from("!H", m, 2)[0] for m in messages] == [len(m) for m in messages]
    assert [struct.unpack_from("!I", m, 8)[0] for m in messages] == [
        0,
        counts[0],
        counts[0] + counts[1],
    ]
    values = b"".join(m[20 + (12 if i == 0 else 0) :] for i, m in enumerate(messages))
    assert values == b"".join(struct.pack("!Q", n) for n in range(10))


def test_template_and_record_that_fit_only_apart_go_in_two_messages() -> None:
    exporter = Exporter(7, max_message_size=16 + 4 + 43)
    record = {"targetName": "x" * 42}  # 43 octets of data; its template set is 16
    template, data, again = exporter.messages([record, record], NOW)
    assert template == header(32, 0) + bytes.fromhex("0002 0010 0100 0001 8014 ffff 00007ed9")
    assert data == header(63, 0) + bytes.fromhex("0100 002f 2a") + b"x" * 42
    assert again == header(63, 1) + bytes.fromhex("0100 002f 2a") + b"x" * 42  # no template


def test_a_record_too_big_for_one_message_is_refused() -> None:
    exporter = Exporter(7, max_message_size=16 + 4 + 43)
    with pytest.raises(LocalProtocolError, match="44 octets; at most 43 fit a 63-octet"):
        exporter.messages([{"packetTotalCount": 1}, {"targetName": "x" * 43}], NOW)
    assert exporter.sequence == 0


def test_a_template_too_big_for_one_message_is_refused() -> None:
    record = dict.fromkeys(("roundTripDelayMin", "roundTripDelayAvg", "roundTripDelayMax"), 1)
    with pytest.raises(LocalProtocolError, match="template of 3 elements does not fit"):
        Exporter(7, max_message_size=16 + 4 + 4 + 3 * 8 - 1).messages([record], NOW)


def test_templates_are_resent_after_the_refresh_time_and_after_reset() -> None:
    exporter = Exporter(7, template_refresh=600)

    def with_template(now: float) -> bool:
        (message,) = exporter.messages([RECORD], now)
        return message[16:18] == b"\x00\x02"

    assert with_template(NOW)
    assert not with_template(NOW + 599.8)
    assert with_template(NOW + 600)
    assert not with_template(NOW + 1000)
    assert with_template(NOW - 5)  # the clock stepped back
    assert exporter.sequence == 5
    exporter.reset()
    assert exporter.sequence == 0
    (message,) = exporter.messages([RECORD], NOW)
    assert message == header(0x70, 0) + RECORD_TEMPLATE + RECORD_DATA


def test_without_refresh_a_template_is_sent_once_per_session() -> None:
    exporter = Exporter(7, template_refresh=None)
    first = exporter.messages([RECORD], NOW)
    later = exporter.messages([RECORD], NOW + 10**6)
    assert first == [header(0x70, 0) + RECORD_TEMPLATE + RECORD_DATA]
    assert later == [bytes.fromhex("000a 003c 6563 3340 00000001 00000007") + RECORD_DATA]
    exporter.reset()
    assert exporter.messages([RECORD], NOW) == first


def test_a_template_goes_only_into_the_message_with_its_first_record() -> None:
    records = [{"packetTotalCount": n} for n in range(10)]
    messages = Exporter(7, max_message_size=56).messages(records, NOW)
    assert [m[16:18] for m in messages] == [b"\x00\x02", b"\x01\x00", b"\x01\x00"]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"observation_domain": -1}, "observation domain"),
        ({"observation_domain": 2**32}, "observation domain"),
        ({"enterprise": 0}, "enterprise number"),
        ({"enterprise": 2**32}, "enterprise number"),
        ({"max_message_size": 20}, "maximum message size"),
        ({"max_message_size": 65536}, "maximum message size"),
        ({"template_refresh": 0}, "template refresh"),
        ({"template_refresh": float("nan")}, "template refresh"),
    ],
)
def test_bad_exporter_settings_are_refused(arguments: dict[str, float], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Exporter(**{"observation_domain": 7, **arguments})


@pytest.mark.parametrize("now", [-1.0, 2.0**32, float("inf")])
def test_an_export_time_the_header_cannot_hold_is_refused(now: float) -> None:
    with pytest.raises(ValueError, match="export time"):
        Exporter(7).messages([RECORD], now)


def test_element_table_is_consistent() -> None:
    assert len(BY_NAME) == len(ELEMENTS)
    ours = [e for e in ELEMENTS if e.enterprise is not None]
    assert [e.id for e in ours] == list(range(1, len(ours) + 1))
    assert all(e.id < 0x8000 for e in ELEMENTS)
    kinds = {e.name: e.kind for e in ours}
    assert kinds["roundTripDelayMin"] is Kind.UNSIGNED64
    assert kinds["inboundDelayMin"] is Kind.SIGNED64
    assert kinds["outboundMos"] is Kind.FLOAT64
