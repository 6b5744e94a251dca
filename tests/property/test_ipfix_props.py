"""Property tests of the IPFIX exporter's framing.

For any records (any subset of elements, strings of any length) and any message size limit,
the messages read back by a small RFC 7011 reader written here hold every record once, in
order; no message exceeds the limit; every length field is right; every data set's template
came first; and each sequence number counts the records of the messages before it.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twamp_common.ipfix import ELEMENTS, Exporter

FIXED = [e.name for e in ELEMENTS if e.kind.length <= 8 and e.name != "packetTotalCount"]
VALUES = {
    1: st.integers(0, 2**8 - 1),
    2: st.integers(0, 2**16 - 1),
    4: st.integers(0, 2**32 - 1),
    8: st.integers(0, 2**63 - 1),
}


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, object]]:
    """Records numbered by packetTotalCount, each with its own subset of other elements."""
    result: list[dict[str, object]] = []
    for number in range(draw(st.integers(0, 30))):
        record: dict[str, object] = {"packetTotalCount": number}
        for name in draw(st.sets(st.sampled_from(FIXED), max_size=6)):
            element = next(e for e in ELEMENTS if e.name == name)
            if element.kind == "boolean":
                record[name] = draw(st.booleans())
            elif element.kind == "float64":
                record[name] = draw(st.floats(allow_nan=False))
            elif element.kind == "ipv4Address":
                record[name] = "192.0.2.9"
            else:
                record[name] = draw(VALUES[element.kind.length])
        if draw(st.booleans()):
            record["targetName"] = "t" * draw(st.integers(0, 600))
        result.append(record)
    return result


def _read(messages: list[bytes], limit: int) -> tuple[list[int], list[int], list[int]]:
    """packetTotalCount of every data record in order; each message's sequence number and
    number of data records."""
    templates: dict[int, list[tuple[int, int]]] = {}  # ID → (element ID, field length)
    numbers: list[int] = []
    sequences, counts = [], []
    for message in messages:
        before = len(numbers)
        version, length, _, sequence, _ = struct.unpack_from("!HHIII", message)
        assert (version, length) == (10, len(message))
        assert length <= limit
        sequences.append(sequence)
        offset = 16
        while offset < length:
            set_id, set_length = struct.unpack_from("!HH", message, offset)
            body, offset = message[offset + 4 : offset + set_length], offset + set_length
            assert set_length >= 4 and offset <= length
            if set_id == 2:
                template_id, count = struct.unpack_from("!HH", body)
                fields, at = [], 4
                for _ in range(count):
                    element_id, field_length = struct.unpack_from("!HH", body, at)
                    at += 8 if element_id & 0x8000 else 4
                    fields.append((element_id, field_length))
                assert at == len(body)
                templates[template_id] = fields
                continue
            assert set_id in templates, "a data set before its template"
            at = 0
            while at < len(body):
                for element_id, field_length in templates[set_id]:
                    width = field_length
                    if field_length == 65535:
                        width, at = body[at], at + 1
                        if width == 255:
                            width, at = struct.unpack_from("!H", body, at)[0], at + 2
                    if element_id == 86:
                        numbers.append(struct.unpack_from("!Q", body, at)[0])
                    at += width
            assert at == len(body)
        counts.append(len(numbers) - before)
    return numbers, sequences, counts


@given(records(), st.integers(700, 2000), st.sampled_from([None, 600.0]))
def test_every_record_arrives_once_in_order_within_the_limit(
    batch: list[dict[str, object]], limit: int, refresh: float | None
) -> None:
    exporter = Exporter(5, max_message_size=limit, template_refresh=refresh)
    messages = exporter.messages(batch, 2.0) + exporter.messages(batch, 700.0)
    numbers, sequences, counts = _read(messages, limit)
    assert numbers == list(range(len(batch))) * 2
    assert sequences == [sum(counts[:i]) for i in range(len(messages))]
    assert exporter.sequence == 2 * len(batch)
