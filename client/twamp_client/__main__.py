"""``twamp-client``: measure a path to a TWAMP server or a TWAMP Light reflector.

Exit status: 0 when replies came, 1 when every packet was lost, 2 for usage, name resolution,
connection, authentication or protocol errors (with partial results printed when a test had
already run).
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import sys

from twamp_common.clock import read_clock_state
from twamp_common.codes import AUTHENTICATED_TEST_MODES, Mode, mode_name
from twamp_common.stats import summarize
from twamp_common.test_packets import SENDER_HEADER_SIZE, SYMMETRIC_SENDER_PADDING
from twamp_common.udp_options import (
    dont_fragment_options,
    receive_options,
    send_options,
    traffic_class_options,
)

from . import report
from .control_session import ClientError, ControlSession
from .options import Options, UsageError, parse, read_secret
from .sender import Outcome, Plan, Sender, enable_tx_timestamps

#: Extra seconds the reflector keeps reflecting after Stop-Sessions, beyond --wait.
STOP_MARGIN = 1.0


def resolve(options: Options) -> tuple[int, tuple[str, int] | tuple[str, int, int, int]]:
    """(family, socket address) of the target; ClientError when the name does not resolve."""
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(options.family or 0, socket.AF_UNSPEC)
    kind = socket.SOCK_DGRAM if options.light else socket.SOCK_STREAM
    try:
        found = socket.getaddrinfo(options.host, options.port, family, kind)
    except socket.gaierror as error:
        raise ClientError(f"cannot resolve {options.host!r}: {error.strerror}") from None
    found.sort(key=lambda entry: entry[0] != socket.AF_INET6)  # IPv6 first, like twping
    return found[0][0], found[0][4]  # type: ignore[return-value]


def padding_for(options: Options, mode: Mode) -> int:
    """Sender padding: as given, from --size, or what makes both directions the same size."""
    authenticated = bool(mode & AUTHENTICATED_TEST_MODES)
    if options.padding is not None:
        return options.padding
    if options.size is not None:
        header = SENDER_HEADER_SIZE[authenticated]
        if options.size < header:
            raise UsageError(f"--size {options.size} is below the {header}-octet sender header")
        return options.size - header
    return SYMMETRIC_SENDER_PADDING[authenticated]


def test_socket(options: Options, family: int) -> socket.socket:
    """The Session-Sender's UDP socket: kernel timestamps (receive and, if the kernel can,
    transmit), TTL, DSCP, DF, source."""
    settings = [*receive_options(family), *send_options(family, options.ttl)]
    settings += traffic_class_options(family, options.dscp)
    if options.dont_fragment:
        settings += dont_fragment_options(family)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for level, option, value in settings:
        sock.setsockopt(level, option, value)
    enable_tx_timestamps(sock)  # before anything is sent: its counter is then the seq
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104
    host, port = options.source or (wildcard, 0)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ClientError(
            f"cannot bind the test socket to {host} port {port}: {error.strerror}"
        ) from None
    return sock


def run(options: Options) -> int:
    family, address = resolve(options)
    clock = read_clock_state()
    started = datetime.datetime.now(datetime.UTC)
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(test_socket(options, family))
        control: ControlSession | None = None
        if options.light:
            mode = Mode.UNAUTHENTICATED
            destination = address
            protection = None
            mode_text = "TWAMP Light"
        else:
            secret = read_secret(options) if options.key_id else None
            source = options.source[0] if options.source else None
            control = ControlSession(address, family, source=source, max_count=options.max_count)
            stack.callback(control.close)
            mode = control.set_up(options.mode, options.key_id, secret)
            accepted = control.request(
                sender_port=sock.getsockname()[1],
                receiver_port=options.reflector_port,
                padding=padding_for(options, mode),
                dscp=options.dscp,
                timeout=options.wait + STOP_MARGIN,
            )
            destination = (address[0], accepted.port, *address[2:])
            protection = control.protection(accepted.sid)
            control.start()
            mode_text = mode_name(mode)
        padding = padding_for(options, mode)
        authenticated = bool(mode & AUTHENTICATED_TEST_MODES)
        header = report.Header(
            host=options.host,
            address=address[0],
            port=options.port,
            mode=mode_text,
            count=options.count,
            interval_ms=options.interval_ms,
            packet_size=SENDER_HEADER_SIZE[authenticated] + padding,
            started=started,
        )
        text = report.TextReport(header, per_packet=not options.summary_only)
        textual = not (options.json or options.raw or options.quiet)
        if textual:
            text.start()
        plan = Plan(
            destination=destination,
            count=options.count,
            interval_ns=round(options.interval_ms * 1e6),
            poisson=options.schedule == "poisson",
            padding=padding,
            zero_padding=options.zero_padding,
            mode=mode,
            protection=protection,
            error_estimate=clock.error_estimate().to_wire(),
            wait=options.wait,
        )
        sender = Sender(
            sock,
            plan,
            control=control.sock if control else None,
            on_reply=text.reply if textual else lambda _r, _d: None,
            on_lost=text.lost if textual else lambda _s: None,
        )
        outcome = sender.run()
        if control is not None and outcome.aborted is None:
            with contextlib.suppress(ClientError):
                control.stop()
    return finish(options, header, outcome, clock.synchronized, text)


def unsync_reason(outcome: Outcome, sender_synchronized: bool) -> str | None:
    if not sender_synchronized:
        return "this host's clock is not synchronised (check chrony/ntpd: timedatectl)"
    if not outcome.reflector_synchronized:
        return "the reflector says its clock is not synchronised"
    if any(reply.outbound < 0 or reply.inbound < 0 for reply in outcome.replies):
        return "some one-way delays are negative, so the clocks disagree"
    return None


def finish(
    options: Options,
    header: report.Header,
    outcome: Outcome,
    sender_synchronized: bool,
    text: report.TextReport,
) -> int:
    summary = summarize(
        outcome.sent,
        outcome.replies,
        sender_synchronized=sender_synchronized,
        reflector_synchronized=outcome.reflector_synchronized,
        initial_ttl=options.ttl,
    )
    why = unsync_reason(outcome, sender_synchronized)
    if options.raw:
        report.write_raw(outcome.send_times, outcome.replies)
    elif options.json:
        extra = {"late": outcome.late, "invalid": outcome.invalid, "error": outcome.aborted}
        report.write_json(report.json_document(header, summary, unsync_reason=why, extra=extra))
    elif not options.quiet:
        text.summary(summary, unsync_reason=why)
    if outcome.aborted is not None:
        print(f"twamp-client: {outcome.aborted}", file=sys.stderr)
        return 2
    return 0 if summary.received else 1


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse(argv)
        return run(options)
    except UsageError as error:
        print(f"twamp-client: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"twamp-client: {error}", file=sys.stderr)
        if error.hint:
            print(f"twamp-client: hint: {error.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
