"""The Prometheus text format (version 0.0.4) as the monitor writes it, and its HTTP endpoint.

Why not prometheus_client's own formatter for the targets' series: it formats every sample
anew at each scrape (a Sample tuple, sorted labels, each value escaped), which for 500
targets is 24,000 lines and about a quarter of a second of CPU per scrape, taken from the
engine's thread through the interpreter lock.  A target's figures change only when one of
its runs ends, so its lines are written then, once, with the few primitives here, and a
scrape only joins text.  prometheus_client still formats the daemon's other series and
supplies the number format, so both parts write values alike.

The endpoint serves this one format on every path (as prometheus_client's does), which
Prometheus and promtool read, gzipped when the scraper accepts it (Prometheus does): 500
targets are megabytes of text, and zlib compresses it without holding the interpreter lock.
It has no OpenMetrics negotiation.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import zlib
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: prometheus_client's number format (Go's: 1e+06, +Inf), typed.
_number = cast(Callable[[float], str], floatToGoString)


@dataclasses.dataclass(frozen=True, slots=True)
class Family:
    """A metric family: its name as prometheus_client's MetricFamily objects take it (a
    counter without ``_total``), type and help text."""

    name: str
    kind: str
    help: str

    @property
    def exposed(self) -> str:
        """The name its HELP and TYPE lines carry (a counter's with ``_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def header(self) -> str:
        help_text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.exposed} {help_text}\n# TYPE {self.exposed} {self.kind}\n"


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """``name="value",...`` with each value escaped (backslash, newline, double quote)."""
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def sample(name: str, labels: str, value: float) -> str:
    """One sample line; ``labels`` from label_text (never empty here: every series has
    ``target``)."""
    return f"{name}{{{labels}}} {_number(value)}\n"


def serve(host: str, port: int, body: Callable[[], bytes]) -> ThreadingHTTPServer:
    """Answer every GET with ``body()``, on threads of the server's own; OSError when the
    address cannot be bound."""
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            text = body()
            gzipped = accepts_gzip(self.headers.get("Accept-Encoding", ""))
            if gzipped:
                text = zlib.compress(text, 1, wbits=31)  # 31: the gzip container
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Vary", "Accept-Encoding")
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: object) -> None:
            """Silent: a scrape every few seconds is not news for the journal."""

    class Server(ThreadingHTTPServer):
        address_family = family

    server = Server(cast(tuple[str, int], address[:2]), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header (RFC 9110 §12.5.3) takes gzip: named, or else
    ``*``, with a weight above 0."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, *parameters = (part.strip().lower() for part in item.split(";"))
        weight = 1.0
        for parameter in parameters:
            if parameter.startswith("q="):
                try:
                    weight = float(parameter[2:])
                except ValueError:
                    weight = 0.0  # unreadable: not an acceptance
        weights[coding] = weight
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0
