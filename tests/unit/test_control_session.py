"""The client's TWAMP-Control dialogue (``control_session.dialogue``) driven by hand: a real
server state machine's greeting in, the server's refusals made up."""

from __future__ import annotations

import pytest
from twamp_client.control_session import Await, ClientError, SessionRequest, dialogue
from twamp_common.codes import Accept, Mode
from twamp_common.control import ClientControl, ServerControl
from twamp_common.control_messages import ServerGreeting, ServerStart


def refused_set_up(accept: Accept) -> ClientError:
    """The error of an authenticated set-up the server answers with ``accept``."""
    client, server = ClientControl(), ServerControl(Mode(15), count=1024)
    client.receive_data(server.greet())
    greeting = client.next_event()
    assert isinstance(greeting, ServerGreeting)
    steps = dialogue(
        client,
        mode=Mode.AUTHENTICATED,
        key_id="alice",
        secret=b"correct horse battery staple",
        local="127.0.0.1",
        remote="127.0.0.1",
        request=SessionRequest(5000, 5001, lambda _mode: 0, 0, 1.0),
        now_ns=lambda: 0,
    )
    assert steps.send(None) == Await("Server-Greeting")
    assert isinstance(steps.send(greeting), bytes)  # the Set-Up-Response
    assert steps.send(None) == Await("Server-Start")
    with pytest.raises(ClientError) as raised:
        steps.send(ServerStart(accept))
    return raised.value


def test_a_refused_key_gets_the_key_hint() -> None:
    error = refused_set_up(Accept.FAILURE)
    assert "(Accept 1)" in str(error)
    assert error.hint == "check the KeyID and the shared secret"


@pytest.mark.parametrize(
    "accept",
    [Accept.INTERNAL_ERROR, Accept.PERMANENT_RESOURCE_LIMIT, Accept.TEMPORARY_RESOURCE_LIMIT],
)
def test_a_server_out_of_resources_does_not_blame_the_key(accept: Accept) -> None:
    error = refused_set_up(accept)
    assert f"(Accept {int(accept)})" in str(error)
    assert error.hint is None
