"""A plugin for worker-process tests: a handler that logs to a file and can be made slow.

Loaded by `tally worker` through TALLY_PLUGIN_MODULES. Each call appends `start <message id> <pid>`
and, after sleeping TALLY_TEST_PROBE_SLEEP seconds, `done <message id> <pid>` to the file named by
TALLY_TEST_PROBE_LOG (single short appends are atomic, so concurrent workers can share it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from tally.outbox.registry import HandlerContext, Registry

HANDLER_NAME = "test-probe"


def _log(line: str) -> None:
    path = os.environ["TALLY_TEST_PROBE_LOG"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def probe(context: HandlerContext, _payload: dict[str, Any]) -> None:
    """Log the start, sleep, log the end."""
    _log(f"start {context.message_id} {os.getpid()}")
    time.sleep(float(os.environ.get("TALLY_TEST_PROBE_SLEEP", "0")))
    _log(f"done {context.message_id} {os.getpid()}")


def register(registry: Registry) -> None:
    """Subscribe the probe to CustomerUpdated."""
    registry.subscribe("CustomerUpdated", HANDLER_NAME, probe)
