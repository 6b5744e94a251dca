"""twamp-client --stamp against STAMP reflectors on loopback, over IPv4 and IPv6.

Two reflectors answer (tests/peers.py): scapy's ``scapy.contrib.stamp`` reading our request and
building the reply (unauthenticated; it fills Timestamp Information and Class of Service and
returns every other TLV with U set), and a socket loop around our own sans-I/O ``reflect()``
(both modes, every TLV, the real kernel send time of each reply for Follow-Up Telemetry).  Each
records what it put in every reply, and the client's figures are checked against that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from peers import FakeReflector, ScapyStampReflector, StampAnswer, StampReflector, honest
from support import run_client as client
from twamp_client import Engine, Measurement, Target, Test, measure
from twamp_common.codes import Mode
from twamp_common.stamp_sender import TLV_CHOICES

HOSTS = ["127.0.0.1", "::1"]
SECRET = b"stamp shared secret"
#: Every TLV but HMAC (which the key adds).
ALL_TLVS = ",".join(name for name in TLV_CHOICES if name != "hmac")


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_json(*args: str) -> dict[str, Any]:
    result = client(*args, "--json")
    assert result.returncode in (0, 1), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def sent_back(answers: list[StampAnswer]) -> list[StampAnswer]:
    return [answer for answer in answers if not answer.dropped]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"alice {SECRET.decode()}\n")
    return path


@pytest.mark.parametrize("host", HOSTS)
def test_every_tlv_against_our_reflector(host: str) -> None:
    with StampReflector(host) as reflector:
        args = [where(host, reflector.port), "--stamp", "-c", "5", "-i", "10", "--dscp", "AF41"]
        document = run_json(*args, "--stamp-tlv", ALL_TLVS, "--ssid", "4660", "--ttl", "70")
    assert reflector.errors == []
    assert (document["mode"], document["sent"], document["received"]) == ("STAMP", 5, 5)
    answers = reflector.answers
    assert [(answer.ssid, answer.ttl) for answer in answers] == [(4660, 70)] * 5
    assert document["hops"] == {"min": 0, "max": 0}  # loopback: the TTL it was sent with
    assert all(answer.reply_size == answer.size for answer in answers)
    stamp = document["stamp"]
    assert stamp["ssid"] == 4660
    assert stamp["timestamp_information"] == {
        "sync_in": "ptp",
        "method_in": "hw-assist",
        "sync_out": "ptp",
        "method_out": "sw-local",
    }
    seen = {answer.tos >> 2 for answer in answers if answer.tos is not None}
    assert seen == {34}  # AF41, as the reflector's socket reported it
    assert stamp["class_of_service"] == {
        "dscp_requested": 34,
        "dscp_at_reflector": {"34": 5},
        "ecn_at_reflector": {"0": 5},
        "dscp_of_replies": {"34": 5},
        "ecn_of_replies": {"0": 5},
        "refused": 0,
    }
    assert stamp["direct_measurement"] == {
        "s_txc": 5,
        "r_rxc": 5,
        "r_txc": 5,
        "forward_lost": 0,
        "reverse_lost": 0,
    }
    location = stamp["location"]
    assert (location["source_address"], location["destination_address"]) == (host, host)
    assert location["destination_port"] == reflector.port
    assert stamp["follow_up_method"] == "sw-local"
    assert stamp["follow_up_replies"] == 4  # every reply but the first
    assert 0 < stamp["follow_up_inbound_us"]["min"] <= stamp["follow_up_inbound_us"]["max"]
    assert stamp["tlv_flags"] == {} and stamp["tlv_integrity_failed"] == 0


@pytest.mark.parametrize("host", HOSTS)
def test_every_tlv_against_scapy(host: str) -> None:
    with ScapyStampReflector(host) as reflector:
        args = [where(host, reflector.port), "--stamp", "-c", "3", "-i", "10", "--dscp", "EF"]
        document = run_json(*args, "--stamp-tlv", ALL_TLVS)
    assert reflector.errors == []
    assert document["received"] == 3
    assert document["forward_lost"] == 0 and document["reverse_lost"] == 0
    stamp = document["stamp"]
    assert stamp["ssid"] == reflector.answers[0].ssid != 0  # a random SSID, one per session
    assert stamp["timestamp_information"] == {
        "sync_in": "ntp",
        "method_in": "sw-local",
        "sync_out": "ntp",
        "method_out": "sw-local",
    }
    assert stamp["class_of_service"]["dscp_at_reflector"] == {"46": 3}
    assert stamp["class_of_service"]["dscp_of_replies"] == {"46": 3}
    # What scapy's reflector does not fill comes back U: reported, never read as answers.
    # The Access Report goes in the first packet only: its retransmission timer (3 s) has not
    # expired when the run ends (RFC 8972 §4.6).
    assert stamp["tlv_flags"] == {
        "access-report": {"U": 1},
        **{name: {"U": 3} for name in ("direct-measurement", "follow-up-telemetry", "location")},
    }
    assert stamp["direct_measurement"] is None and stamp["location"] is None
    assert stamp["follow_up_inbound_us"] is None


@pytest.mark.parametrize("host", HOSTS)
def test_text_output_names_each_figure(host: str) -> None:
    with ScapyStampReflector(host) as reflector:
        result = client(
            where(host, reflector.port),
            "--stamp",
            "-c",
            "2",
            "-i",
            "10",
            "--stamp-tlv",
            "timestamp-information",
            "--stamp-tlv",
            "class-of-service,location",
            "--ssid",
            "7",
        )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"STAMP {host} port {reflector.port}, STAMP mode, SSID 7,")
    assert f"--- {host} port {reflector.port} STAMP statistics ---" in out
    assert "2 sent, 2 received, 0.0% loss (forward 0, reverse 0)" in out
    assert "reflector timestamps: T2 ntp sw-local, T3 ntp sw-local\n" in out
    assert (
        "class of service: at the reflector DSCP 0 (2), ECN 0 (2); replies asked for DSCP 0,"
        " arrived with DSCP 0 (2), ECN 0 (2), 0 refused (RP)\n" in out
    )
    assert "TLV flags (U unrecognized, M malformed, I integrity): location U 2\n" in out


@pytest.mark.parametrize("host", HOSTS)
def test_authenticated_with_every_tlv(host: str, key_file: Path) -> None:
    with StampReflector(host, key=SECRET, authenticated=True) as reflector:
        document = run_json(
            where(host, reflector.port),
            "--stamp",
            *("-m", "authenticated", "-u", "alice", "--key-file", str(key_file)),
            *("-c", "3", "-i", "10", "--stamp-tlv", ALL_TLVS),
        )
    assert reflector.errors == []
    assert (document["mode"], document["received"], document["invalid"]) == (
        "STAMP authenticated",
        3,
        0,
    )
    stamp = document["stamp"]
    assert stamp["tlv_flags"] == {} and stamp["tlv_integrity_failed"] == 0
    assert stamp["direct_measurement"]["r_rxc"] == 3


def test_a_key_alone_means_authenticated_and_a_wrong_one_loses_everything(
    key_file: Path,
) -> None:
    with StampReflector(key=b"another secret", authenticated=True) as reflector:
        result = client(
            f"127.0.0.1:{reflector.port}",
            *("--stamp", "-u", "alice", "--key-file", str(key_file), "-c", "2", "-i", "10"),
            *("--wait", "0.3"),
        )
    assert result.returncode == 1
    assert "STAMP authenticated mode" in result.stdout
    assert "2 sent, 0 received, 100.0% loss" in result.stdout
    assert len(reflector.errors) == 2 and "HMAC" in reflector.errors[0]


def test_unauthenticated_with_an_hmac_tlv(key_file: Path) -> None:
    with StampReflector(key=SECRET) as reflector:
        document = run_json(
            f"127.0.0.1:{reflector.port}",
            *("--stamp", "-m", "unauthenticated", "-u", "alice", "--key-file", str(key_file)),
            *("-c", "2", "-i", "10", "--stamp-tlv", "class-of-service,hmac"),
        )
    assert reflector.answers[0].size == 44 + 8 + 20  # base, Class of Service, HMAC TLV
    assert document["received"] == 2
    assert document["stamp"]["tlv_flags"] == {}
    assert document["stamp"]["class_of_service"]["dscp_at_reflector"] == {"0": 2}


def test_tlvs_failing_their_hmac_are_flagged_and_not_read(key_file: Path) -> None:
    with StampReflector(key=b"another secret") as reflector:
        document = run_json(
            f"127.0.0.1:{reflector.port}",
            *("--stamp", "-m", "unauthenticated", "-u", "alice", "--key-file", str(key_file)),
            *("-c", "2", "-i", "10", "--stamp-tlv", "class-of-service,hmac"),
        )
    assert document["received"] == 2  # the base packets are fine
    stamp = document["stamp"]
    assert stamp["tlv_flags"] == {"class-of-service": {"I": 2}, "hmac": {"I": 2}}
    assert stamp["tlv_integrity_failed"] == 2 and stamp["class_of_service"] is None


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("peer", [StampReflector, ScapyStampReflector])
def test_loss_in_each_direction_is_counted(
    host: str, peer: type[StampReflector] | type[ScapyStampReflector]
) -> None:
    ignore, drop = frozenset({1, 6}), frozenset({3})
    with peer(host, ignore=ignore, drop=drop) as reflector:
        document = run_json(
            where(host, reflector.port),
            *("--stamp", "-c", "8", "-i", "10", "--wait", "0.3"),
            *("--stamp-tlv", "direct-measurement"),
        )
    assert [answer.sender_seq for answer in reflector.answers] == [0, 2, 3, 4, 5, 7]
    assert (document["sent"], document["received"], document["lost"]) == (8, 5, 3)
    assert (document["forward_lost"], document["reverse_lost"]) == (2, 1)
    if peer is StampReflector:
        assert document["stamp"]["direct_measurement"] == {
            "s_txc": 8,
            "r_rxc": 6,
            "r_txc": 6,
            "forward_lost": 2,
            "reverse_lost": 1,
        }


@pytest.mark.parametrize("host", HOSTS)
def test_follow_up_inbound_uses_the_reflectors_kernel_send_times(host: str) -> None:
    names = ("follow-up-telemetry", "location")
    with StampReflector(host, drop=frozenset({2})) as reflector:
        result = measure(
            Target(host, reflector.port, stamp=True),
            Test(count=5, interval_ms=10, wait=0.3, stamp_tlvs=names),
        )
    assert result.error is None and result.outcome is not None and result.stamp is not None
    arrived = {reply.reflector_seq: reply.t4 for reply in result.outcome.replies}
    sent = {answer.seq: answer.sent for answer in reflector.answers}
    # Each reply names the previous one the reflector sent; reply 2 was not sent, so reply 3
    # names reply 1; the reply it names must have come back to be corrected.
    expected = sorted(arrived[seq] - sent[seq] for seq in (0, 1, 3))
    inbound = result.stamp.follow_up_inbound
    assert inbound is not None
    assert (inbound.count, inbound.min, inbound.max) == (3, expected[0], expected[-1])
    user_space = [reply.inbound for reply in result.outcome.replies]
    assert inbound.max < max(user_space)  # the reflector's own delay before sending is gone
    assert result.header is not None and result.stamp.location is not None
    assert result.stamp.location.source_port == result.header.sender_port


def test_sizes_are_the_same_both_ways() -> None:
    with StampReflector() as reflector:
        result = client(
            f"127.0.0.1:{reflector.port}",
            *("--stamp", "-c", "2", "-i", "10", "--size", "200", "--stamp-tlv", "location", "-s"),
        )
    assert result.returncode == 0, result.stderr
    assert "2 packets of 200 octets" in result.stdout
    assert [(a.size, a.reply_size) for a in reflector.answers] == [(200, 200)] * 2


def test_a_traffic_model_sizes_stamp_packets() -> None:
    with StampReflector() as reflector:
        result = client(
            f"127.0.0.1:{reflector.port}",
            *("--stamp", "--model", "g711", "-c", "3", "--stamp-tlv", "class-of-service", "-s"),
        )
    assert result.returncode == 0, result.stderr
    assert "3 packets of 172 octets every 20 ms" in result.stdout  # 200 - 20 (IPv4) - 8 (UDP)
    assert [(a.size, a.reply_size) for a in reflector.answers] == [(172, 172)] * 3


def test_the_engine_runs_stamp_beside_light() -> None:
    results: dict[bool, Measurement] = {}

    def done(result: Measurement) -> None:
        results[result.target.stamp] = result

    with StampReflector() as stamp, FakeReflector(honest) as light:
        engine = Engine()
        try:
            engine.submit(Target("127.0.0.1", stamp.port, stamp=True), Test(4, 10.0), done)
            engine.submit(Target("127.0.0.1", light.port, light=True), Test(4, 10.0), done)
            engine.run()
        finally:
            engine.close()
    stamped, plain = results[True], results[False]
    assert stamped.header is not None and plain.header is not None
    assert (stamped.header.mode, plain.header.mode) == ("STAMP", "TWAMP Light")
    assert stamped.stamp is not None and plain.stamp is None
    for result in (stamped, plain):
        assert result.summary is not None and result.summary.received == 4


def test_many_stamp_targets_and_raw_rows(tmp_path: Path) -> None:
    with StampReflector() as four, ScapyStampReflector("::1") as six:
        targets = tmp_path / "targets"
        targets.write_text(f"[::1]:{six.port}  # scapy\n")
        args = [f"127.0.0.1:{four.port}", "-f", str(targets)]
        result = client(*args, "--stamp", "-c", "3", "-i", "10", "--raw")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].startswith("target,seq,t1_ns")
    assert len(rows) == 1 + 6
    assert len(four.answers) == len(six.answers) == 3
    for reflector in (four, six):  # one SSID per session, kept for all its packets
        assert len({answer.ssid for answer in reflector.answers}) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--light", "--stamp"], "--light and --stamp are two protocols: give one"),
        (["--stamp", "-m", "encrypted", "-u", "a"], "-m encrypted -u a: STAMP has no such mode"),
        (["--stamp", "--stamp-tlv", "colour"], "--stamp-tlv: 'colour' is not a STAMP TLV"),
        (["--stamp", "--stamp-tlv", "hmac"], "hmac: the HMAC TLV needs the secret of a KeyID"),
        (["--stamp-tlv", "location"], "--stamp-tlv is for STAMP reflectors: add --stamp"),
        (["--ssid", "5"], "--ssid is for STAMP reflectors: add --stamp"),
        (["--stamp", "--ssid", "0"], "--ssid 0 is outside 1..65535"),
        (["--stamp", "-m", "authenticated"], "the authenticated mode needs a KeyID"),
        (["--stamp", "-m", "unauthenticated", "-u", "a"], "uses a KeyID's secret only for the"),
    ],
)
def test_bad_stamp_options_are_one_sentence(args: list[str], message: str) -> None:
    result = client("127.0.0.1", *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("test", "message"),
    [
        (Test(count=1, mode=Mode.AUTHENTICATED), "authenticated STAMP needs a key"),
        (Test(count=1, stamp_tlvs=("colour",)), "'colour' is not a STAMP TLV"),
        (Test(count=1, stamp_tlvs=("hmac",)), "the HMAC TLV needs the secret of a KeyID"),
        (Test(count=1, ssid=70000), "SSID 70000 is outside 0..65535"),
    ],
)
def test_a_library_test_stamp_cannot_run_is_an_error(test: Test, message: str) -> None:
    result = measure(Target("127.0.0.1", 9, stamp=True), test)
    assert result.error == f"cannot measure STAMP: {message}"
    assert result.status == 2


def test_padding_stamp_cannot_carry_is_an_error() -> None:
    result = client("127.0.0.1", "--stamp", "--padding", "2", "-c", "1")
    assert result.returncode == 2
    assert "Extra Padding TLV, 0 or at least 4 octets: 2 octets" in result.stderr
