"""Property tests of the STAMP Session-Sender: whatever the path loses, the books balance.

A stateful sans-I/O reflector answers; each packet is lost on the way out, on the way back, or
not at all, and its reply may come twice.  The sender's loss, duplicates and the Direct
Measurement split must then be exactly what the path did.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twamp_common.codes import Mode
from twamp_common.schedule import Periodic
from twamp_common.stamp_reflector import ReflectorConfig, ReflectorState, reflect
from twamp_common.stamp_sender import StampSetup, sender_tlvs, summarize
from twamp_common.stats import summarize as summarize_replies
from twamp_common.test_session import Answered, SenderPlan, SessionSender
from twamp_common.timestamp import ErrorEstimate

MS = 1_000_000
WALL = 1_796_000_000 * 1_000_000_000
REFLECTOR = ("192.0.2.1", 862)
SYNCED = ErrorEstimate(True, 0, 1)
#: What the path does to one packet: delivered, lost out, lost back, delivered twice.
FATES = st.sampled_from(["ok", "out", "back", "twice"])


@settings(max_examples=60, deadline=None)
@given(fates=st.lists(FATES, min_size=1, max_size=40), authenticated=st.booleans())
def test_the_books_balance_whatever_the_path_loses(fates: list[str], authenticated: bool) -> None:
    key = b"k" * 32
    setup = StampSetup(
        ssid=5,
        tlvs=sender_tlvs(["direct-measurement"], dscp=0),
        authenticated=authenticated,
        key=key if authenticated else None,
    )
    plan = SenderPlan(
        count=len(fates),
        schedule=Periodic(MS, 0),
        mode=Mode.UNAUTHENTICATED,
        protection=None,
        padding=b"",
        error_estimate=SYNCED.to_wire(),
        wait_ns=100 * MS,
        reflector=REFLECTOR,
        stamp=setup,
    )
    sender = SessionSender(plan, now=0)
    config = ReflectorConfig(SYNCED, authenticated=authenticated)
    state = ReflectorState()
    duplicates = 0
    for seq, fate in enumerate(fates):
        packet = sender.outgoing()
        assert packet is not None
        wire = bytes(packet.wire(WALL + seq * MS))
        sender.sent(WALL + seq * MS, seq * MS)
        if fate == "out":
            continue
        reflection = reflect(wire, t2_ns=WALL + seq * MS, config=config, key=key, state=state)
        reply = reflection.finish(WALL + seq * MS + 1)
        if fate == "back":
            continue
        for _ in range(2 if fate == "twice" else 1):
            event = sender.handle_reply(reply, t4=WALL + seq * MS + 2, source=REFLECTOR)
            assert isinstance(event, Answered)
        duplicates += fate == "twice"
    sender.handle_timer(len(fates) * MS + 100 * MS)
    assert sender.finished
    outcome = sender.outcome
    figures = summarize_replies(
        outcome.sent, outcome.replies, sender_synchronized=True, reflector_synchronized=True
    )
    answered = sum(fate in ("ok", "twice") for fate in fates)
    assert (figures.sent, figures.received, figures.duplicates) == (
        len(fates),
        answered,
        duplicates,
    )
    assert figures.lost == len(fates) - answered
    stamp = summarize(outcome.stamp, ssid=5)
    if answered == 0:
        assert stamp.direct_measurement is None
        return
    # The last reply that came counts what the path did up to its packet.
    last = max(seq for seq, fate in enumerate(fates) if fate in ("ok", "twice"))
    upto = fates[: last + 1]
    assert stamp.forward_lost == upto.count("out")
    assert stamp.reverse_lost == upto.count("back")
