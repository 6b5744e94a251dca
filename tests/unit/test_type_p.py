"""How the Type-P Descriptor of Request-TW-Session is read (RFC 4656 §3.5, and the low-octet
encoding one popular sender uses)."""

from __future__ import annotations

import pytest
from twamp_common.udp_options import dscp_from_type_p


@pytest.mark.parametrize(
    ("type_p", "dscp"),
    [
        (0, 0),
        (46 << 24, 46),  # RFC encoding: 00 then six DSCP bits
        (0x3F00_0000, 63),
        (46, 46),  # DSCP in the low octet
        (63, 63),
        (0x4000_0000 | 0x1234 << 14, None),  # 01: PHB ID, not supported
        (0x8000_0000, None),
        (0x2E00_0001, None),  # stray bits beside an RFC-encoded DSCP
        (64, None),
    ],
)
def test_dscp_from_type_p(type_p: int, dscp: int | None) -> None:
    assert dscp_from_type_p(type_p) == dscp
