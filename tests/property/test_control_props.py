"""The server's control state machine against arbitrary client bytes: it returns events or
NEED_DATA, or raises our ProtocolError — never another exception, whatever a client sends."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st
from twamp_common.codes import Mode
from twamp_common.control import NEED_DATA, ServerControl
from twamp_common.control_messages import SetUpResponse
from twamp_common.errors import ProtocolError

OPEN_SETUP = SetUpResponse(Mode.UNAUTHENTICATED).pack()


def _drive(server: ServerControl, chunks: list[bytes]) -> None:
    with contextlib.suppress(ProtocolError):
        for chunk in chunks:
            server.receive_data(chunk)
            while (event := server.next_event()) is not NEED_DATA:
                if not isinstance(event, SetUpResponse):
                    return  # a command (known or not): the driver would answer it
                server.start(None, 0)


@given(st.lists(st.binary(max_size=200), max_size=6))
def test_arbitrary_bytes_before_set_up(chunks: list[bytes]) -> None:
    server = ServerControl(Mode(15), count=1024)
    server.greet()
    _drive(server, chunks)


@given(st.lists(st.binary(max_size=200), max_size=6))
def test_arbitrary_bytes_after_an_open_set_up(chunks: list[bytes]) -> None:
    server = ServerControl(Mode(15), count=1024)
    server.greet()
    _drive(server, [OPEN_SETUP, *chunks])
