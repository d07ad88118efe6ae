"""`tally serve` and `tally worker` as real processes of this checkout, and waiting on conditions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def tally_env(database_url: str, **settings: str | float | int) -> dict[str, str]:
    """The environment of a tally process on this database: ``TALLY_<NAME>`` per setting."""
    return {
        **os.environ,
        # This checkout's sources, whatever the virtualenv has installed.
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "TALLY_DATABASE_URL": database_url,
        "TALLY_ENVIRONMENT": "test",
        **{f"TALLY_{name.upper()}": str(value) for name, value in settings.items()},
    }


def start_tally(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``tally <command>``; its output goes to ``log`` (appended)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from tally.cli import app; app()", command],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    """kill -9, and reap it."""
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not stop."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        kill(process)


def wait_for(
    predicate: Callable[[], object], what: str, *, timeout: float = 120.0, every: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the server answers /healthz (fail at once if it exits)."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, "the server to start", timeout=60, every=0.2)
