"""An HTTP server on 127.0.0.1 that misbehaves in one chosen way, run as its own process.

Modes (every path, every method):

- ``drip``: a 200 whose headers announce a body, then ``chunk`` bytes every ``interval_s``
  seconds (a server that never stops sending, so a per-read timeout never fires);
- ``drip-headers``: the status line and headers themselves, a few bytes at a time;
- ``hang``: accept the connection and never answer;
- ``5xx``: always ``503 Service Unavailable``;
- ``echo-401``: ``401 Unauthorized`` whose body echoes the request's headers (as some
  misconfigured gateways do), and a second line with only the Authorization token.

``GET /__hits`` (not misbehaving) returns how many requests came.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = ("drip", "drip-headers", "hang", "5xx", "echo-401")
HITS_PATH = "/__hits"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, mode: str, chunk: int, interval_s: float) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.mode = mode
        self.chunk = chunk
        self.interval_s = interval_s
        self.hits = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up: what this server is for
            return False
        return True

    def _drip(self, data: bytes) -> None:
        step = self.server.chunk
        for start in range(0, len(data), step):
            if not self._send(data[start : start + step]):
                return
            time.sleep(self.server.interval_s)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == HITS_PATH:
            with self.server.lock:
                body = json.dumps({"hits": self.server.hits}).encode()
            self._send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            return
        with self.server.lock:
            self.server.hits += 1
        mode = self.server.mode
        if mode == "hang":
            time.sleep(3600)
            return
        if mode == "5xx":
            body = b'{"code": 503, "description": "down for maintenance"}'
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            self._send(head.encode() + body)
            return
        if mode == "echo-401":
            token = self.headers.get("Authorization", "").split(" ", 1)[-1]
            echoed = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
            body = f"bad credentials {echoed}\ntoken {token} refused".encode()
            head = (
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            self._send(head.encode() + body)
            return
        body = b'{"type": "Catalog", "id": "slow", "links": [], "description": "x"}' * 50
        status = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nAccept-Ranges: bytes\r\n\r\n"
        ).encode()
        if mode == "drip-headers":
            self._drip(status + body)
            return
        if self._send(status):
            self._drip(body)

    do_GET = do_POST = do_HEAD = _handle  # noqa: N815


@dataclass(frozen=True)
class MisbehavingServer:
    url: str
    port: int

    def hits(self) -> int:
        with urllib.request.urlopen(f"{self.url}{HITS_PATH}", timeout=5) as response:
            return int(json.loads(response.read())["hits"])


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def misbehaving_server(
    mode: str, *, chunk: int = 10, interval_s: float = 0.5, log: Path | None = None
) -> Iterator[MisbehavingServer]:
    """The server as a separate process, stopped by PID when the block ends."""
    from tests.servers._process import free_port, running

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {MODES}")
    port = free_port()
    repo = Path(__file__).resolve().parents[2]
    command = [
        sys.executable, "-m", "tests.servers.misbehaving_http", "--port", str(port),
        "--mode", mode, "--chunk", str(chunk), "--interval-s", str(interval_s),
    ]  # fmt: skip
    with running(command, lambda: _answers(port), name=f"{mode} server", timeout=30,
                 env={"PYTHONPATH": str(repo)}, log=log):  # fmt: skip
        yield MisbehavingServer(url=f"http://127.0.0.1:{port}", port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--interval-s", type=float, default=0.5)
    args = parser.parse_args()
    _Server(args.port, args.mode, args.chunk, args.interval_s).serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
