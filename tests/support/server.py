"""Run the real ASGI app under uvicorn in a background thread, on a free loopback port; run
queued imports in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.imports import queue
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve `app` over real HTTP until the block ends; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def import_worker(settings: Settings, factory: sessionmaker[Session]) -> Iterator[None]:
    """A worker that runs only queued imports (the tests' settings run no worker) in a thread."""
    registry = Registry()
    queue.register(registry)
    worker = Worker(settings=settings, session_factory=factory, registry=registry)
    thread = worker.start_thread()
    try:
        yield
    finally:
        worker.stop()
        thread.join(timeout=60)
