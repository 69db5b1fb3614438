"""An HTTP proxy on 127.0.0.1 that breaks a seeded share of the requests it forwards.

Run as a process (``faulty_proxy(target, ...)`` starts one and stops it by PID). Modes:

- ``faulty``: forward to ``target``, except that a seeded random share ``fail_rate`` of requests
  gets a 500, 502, 503 or 429 (with Retry-After), a slow answer (after ``slow_s``, beyond the
  client's timeout), or a dropped connection;
- ``garbage``: answer every request with 200 and an HTML page (a captive portal, a wrong URL);
- ``hang``: accept connections and never answer.

``GET /__proxy_stats`` (not forwarded) returns the counts of forwarded and broken requests.
The Host header is passed on unchanged, so the API writes links that lead back to the proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

STATS_PATH = "/__proxy_stats"
FAULTS = ("500", "502", "503", "429", "slow", "drop")
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding",
}  # fmt: skip


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, target: str, mode: str, fail_rate: float, seed: int,
                 slow_s: float, retry_after_s: int) -> None:  # fmt: skip
        super().__init__(("127.0.0.1", port), _Handler)
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.mode = mode
        self.fail_rate = fail_rate
        self.slow_s = slow_s
        self.retry_after_s = retry_after_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def draw_fault(self) -> str | None:
        """The fault for the next request, in arrival order (so a seed gives one sequence)."""
        with self.lock:
            self.stats["requests"] += 1
            if self.random.random() >= self.fail_rate:
                self.stats["forwarded"] += 1
                return None
            fault = self.random.choice(FAULTS)
            self.stats[fault] += 1
            self.stats["faults"] += 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == STATS_PATH:
            with self.server.lock:
                stats = dict(self.server.stats)
            self._reply(200, json.dumps(stats).encode(), "application/json")
            return
        mode = self.server.mode
        if mode == "hang":
            time.sleep(3600)
            return
        if mode == "garbage":
            page = b"<html><body><h1>Welcome</h1>Please log in to continue.</body></html>"
            self._reply(200, page, "text/html")
            return
        fault = self.server.draw_fault()
        if fault == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slow":
            time.sleep(self.server.slow_s)
        elif fault is not None:
            status = int(fault)
            extra = {"Retry_After": str(self.server.retry_after_s)} if status == 429 else {}
            message = json.dumps({"code": status, "description": "injected fault"}).encode()
            self._reply(status, message, "application/json", **extra)
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        upstream = http.client.HTTPConnection(
            self.server.target_host, self.server.target_port, timeout=60
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Accept-Encoding"] = "identity"
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815


@dataclass(frozen=True)
class FaultyProxy:
    url: str
    port: int

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}{STATS_PATH}", timeout=5) as response:
            return dict(json.loads(response.read()))


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def faulty_proxy(
    target: str = "http://127.0.0.1:9",
    *,
    mode: str = "faulty",
    fail_rate: float = 0.3,
    seed: int = 0,
    slow_s: float = 3.0,
    retry_after_s: int = 1,
    log: Path | None = None,
) -> Iterator[FaultyProxy]:
    """The proxy as a separate process in front of ``target``, stopped by PID on exit."""
    from tests.servers._process import free_port, running

    port = free_port()
    repo = Path(__file__).resolve().parents[2]
    command = [
        sys.executable, "-m", "tests.servers.faulty_proxy", "--port", str(port),
        "--target", target, "--mode", mode, "--fail-rate", str(fail_rate), "--seed", str(seed),
        "--slow-s", str(slow_s), "--retry-after-s", str(retry_after_s),
    ]  # fmt: skip
    with running(command, lambda: _answers(port), name="faulty proxy", timeout=30,
                 env={"PYTHONPATH": str(repo)}, log=log):  # fmt: skip
        yield FaultyProxy(url=f"http://127.0.0.1:{port}", port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=("faulty", "garbage", "hang"), default="faulty")
    parser.add_argument("--fail-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-s", type=float, default=3.0)
    parser.add_argument("--retry-after-s", type=int, default=1)
    args = parser.parse_args()
    proxy = _Proxy(args.port, args.target, args.mode, args.fail_rate, args.seed, args.slow_s,
                   args.retry_after_s)  # fmt: skip
    proxy.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
