#!/usr/bin/env python3
"""Serve the static page (`frontend/`) with a `config.js` that names the gateway.

`make local-up` runs it inside its own process; the `page` service of compose.yaml runs it
as a program in a container. The committed `frontend/config.js` is the deployment
default, so it is never edited: this server answers `/config.js` itself. It also answers
`/healthz`, the path the container images' health check asks.

    python3 scripts/page_server.py [--host H] [--port N] [--frontend DIR]
                                   [--gateway-url URL | --gateway-port N]

The gateway's URL and port default to GATEWAY_PUBLIC_URL and GATEWAY_PORT.

Every response carries the page's security headers, the Content-Security-Policy the
deployed page gets from CloudFront (infra/template.yaml, kept equal by tests/infra)
with `connect-src` naming the gateway this server points the page at.

Standard library only: it runs before anything is installed, and in any image with
python3.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FRONTEND_DIR = Path(__file__).resolve().parents[1] / "frontend"

# What frontend/ needs and nothing more: its own scripts and stylesheet (no inline code,
# no eval), `data:` for the empty favicon, fetch() to the gateway; never framed, no
# plugins, no <base>, no form posted anywhere (the page sends with fetch). `{gateway}`
# is the gateway's origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{gateway}; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # The page needs no Referer (CORS uses Origin); links in answers are the model's.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# An origin as a CSP source may hold: scheme, host name or IPv4 address, port.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def config_js(gateway_url: str | None, gateway_port: int) -> bytes:
    """The page's config. With no fixed URL, the page calls the gateway on whatever host
    name it was itself opened with (the server is bound to every interface, or the host
    name differs between the browser and this process, as with a container)."""
    if gateway_url:
        url_expr = json.dumps(gateway_url.rstrip("/"))
    else:
        url_expr = f'location.protocol + "//" + location.hostname + ":{gateway_port}"'
    return (
        "// Served by scripts/page_server.py: the gateway this page talks to.\n"
        f"window.APP_CONFIG = {{ gatewayUrl: {url_expr} }};\n"
    ).encode()


def gateway_origin(gateway_url: str | None, gateway_port: int, request_host: str | None) -> str:
    """The origin the page's fetch() goes to, as `config_js` sends it there: the fixed
    URL's, or this server's host name (as the browser wrote it) on the gateway's port.
    Empty when there is none to name."""
    if gateway_url:
        parts = urlsplit(gateway_url)
        origin = f"{parts.scheme}://{parts.netloc}"
    else:
        hostname = urlsplit(f"//{request_host}").hostname if request_host else None
        if not hostname:
            return ""
        origin = f"http://{hostname}:{gateway_port}"
    return origin if _ORIGIN.match(origin) else ""


def security_headers(gateway: str) -> dict[str, str]:
    """The headers of every response, for a page that talks to `gateway` (an origin)."""
    policy = CONTENT_SECURITY_POLICY.format(gateway=f" {gateway}" if gateway else "")
    return {"Content-Security-Policy": policy, **SECURITY_HEADERS}


class FrontendHandler(http.server.SimpleHTTPRequestHandler):
    """Serves `frontend/`, but `/config.js` from memory; nothing is cached, so an
    edited page shows on reload. Every answer, errors included, carries the page's
    security headers."""

    config_body: bytes = b""
    gateway_url: str | None = None
    gateway_port: int = 8000
    log_line: Callable[[str], None] = staticmethod(print)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/config.js":
            self._send(self.config_body, "text/javascript; charset=utf-8")
        elif path == "/healthz":
            self._send(b"ok\n", "text/plain; charset=utf-8")
        else:
            super().do_GET()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        origin = gateway_origin(self.gateway_url, self.gateway_port, self.headers.get("Host"))
        for name, value in security_headers(origin).items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        self.log_line(f"{self.address_string()} {format % args}")


class FrontendServer(http.server.ThreadingHTTPServer):
    """One thread per connection (a slow client never blocks the page), IPv4 or IPv6."""

    daemon_threads = True

    def __init__(self, host: str, port: int, handler: Callable[..., Any]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)


def make_frontend_server(
    host: str,
    port: int,
    *,
    gateway_url: str | None,
    gateway_port: int,
    log_line: Callable[[str], None] = print,
    frontend_dir: Path = FRONTEND_DIR,
) -> FrontendServer:
    """A static server for `frontend_dir` (not yet serving: call `serve_forever`)."""
    handler = type(
        "Handler",
        (FrontendHandler,),
        {
            "config_body": config_js(gateway_url, gateway_port),
            "gateway_url": gateway_url,
            "gateway_port": gateway_port,
            "log_line": staticmethod(log_line),
        },
    )
    return FrontendServer(host, port, partial(handler, directory=str(frontend_dir)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--frontend", type=Path, default=FRONTEND_DIR, help="the page's folder")
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get("GATEWAY_PUBLIC_URL", ""),
        help="the gateway as the browser reaches it",
    )
    parser.add_argument(
        "--gateway-port",
        type=int,
        default=int(os.environ.get("GATEWAY_PORT") or 8000),
        help="without --gateway-url: the gateway's port on the host the page was opened from",
    )
    args = parser.parse_args(argv)
    if not (args.frontend / "index.html").is_file():
        parser.error(f"no index.html in {args.frontend}")
    server = make_frontend_server(
        args.host,
        args.port,
        gateway_url=args.gateway_url or None,
        gateway_port=args.gateway_port,
        log_line=lambda line: print(line, flush=True),
        frontend_dir=args.frontend,
    )
    print(f"page: serving {args.frontend} on {args.host}:{args.port}", flush=True)
    # As a container's PID 1, SIGTERM has no default action: make `stop` end it at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt), server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
