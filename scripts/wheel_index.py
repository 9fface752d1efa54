"""Serve a directory of wheels as a PEP 503 "simple" index on a loopback port.

For image builds on a machine that reaches PyPI but not the PyPI-external PyTorch CPU
index: the CPU torch wheel lies on local disk, and `--build-arg TORCH_INDEX_URL=` points
the build at this server (the build runs with host networking).

    python3 scripts/wheel_index.py WHEEL_DIR [--port N]            # serve; prints the URL
    python3 scripts/wheel_index.py WHEEL_DIR [--port N] -- CMD...  # serve while CMD runs,
                                             # with TORCH_INDEX_URL set in its environment

A fixed port keeps the URL, hence the image build's layer cache, the same between runs;
when it is taken, a free one is used (the torch layer is then rebuilt).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import html
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def project_name(wheel: Path) -> str:
    """The normalized project name of a wheel file (PEP 503)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()


class IndexHandler(SimpleHTTPRequestHandler):
    """`/simple/<project>/` lists the project's wheels; `/files/<wheel>` serves one."""

    def __init__(self, *args: object, wheel_dir: Path, **kwargs: object) -> None:
        self.wheel_dir = wheel_dir
        super().__init__(*args, directory=str(wheel_dir), **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path.startswith("/files/"):
            super().do_GET()  # translate_path maps it into the wheel directory
            return
        project = path.strip("/").removeprefix("simple").strip("/")
        wheels = sorted(
            w for w in self.wheel_dir.glob("*.whl") if not project or project_name(w) == project
        )
        if project and not wheels:
            self.send_error(404, f"no wheels for {project}")
            return
        if project:
            links = [
                f'<a href="/files/{urllib.parse.quote(w.name)}">{html.escape(w.name)}</a>'
                for w in wheels
            ]
        else:
            names = sorted({project_name(w) for w in wheels})
            links = [f'<a href="/simple/{n}/">{n}</a>' for n in names]
        body = (
            "<!DOCTYPE html><html><body>\n" + "<br>\n".join(links) + "\n</body></html>\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def translate_path(self, path: str) -> str:
        name = urllib.parse.unquote(urllib.parse.urlsplit(path).path).removeprefix("/files/")
        return str(self.wheel_dir / Path(name).name)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pip's own output says what it fetched


def serve(wheel_dir: Path, host: str, port: int) -> ThreadingHTTPServer:
    handler = partial(IndexHandler, wheel_dir=wheel_dir)
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        return ThreadingHTTPServer((host, 0), handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    wheel_dir = args.wheel_dir.resolve()
    if not any(wheel_dir.glob("torch-*.whl")):
        print(f"no torch wheel in {wheel_dir}", file=sys.stderr)
        return 1
    server = serve(wheel_dir, args.host, args.port)
    url = f"http://{args.host}:{server.server_address[1]}/simple/"
    if not command:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        return 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.call(command, env={**os.environ, "TORCH_INDEX_URL": url})
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
