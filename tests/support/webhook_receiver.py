"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that records each request.

Answers follow a script (status, delay) one request at a time, then `default`; each request is
kept with its headers and raw body so a test can verify signatures as a merchant's code would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """The server's script and what it received."""

    url: str
    script: list[tuple[int, float]] = field(default_factory=list)
    default: tuple[int, float] = (200, 0.0)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *plan: int | tuple[int, float]) -> None:
        """Answer the next requests with these statuses (or (status, delay in seconds))."""
        with self.lock:
            self.script.extend(p if isinstance(p, tuple) else (p, 0.0) for p in plan)

    def next_answer(self) -> tuple[int, float]:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


@contextmanager
def webhook_receiver(path: str = "/hooks/tally") -> Iterator[Receiver]:
    """Run a receiver until the block ends; yields it with its URL (http://127.0.0.1:<port>)."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, delay = receiver.next_answer()
            # Recorded before answering: once the sender has its answer the test may read the
            # list at once, and a request recorded after that would be missing.
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.requests.append(Received(self.path, headers, body, status))
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"status {status}".encode())
            except OSError:
                pass  # the sender gave up waiting (a timeout test)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
