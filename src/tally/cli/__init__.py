"""The `tally` command: the root app in `main.py`, one module per command group beside it.

`support.py` holds what every command shares; the groups (`imports.py`, `notifications.py`,
`outbox.py`, `dotdigital.py`, `program.py`) import it, never `main.py`. `tally.cli:app` is the
console script.
"""

from tally.cli.main import app

__all__ = ["app"]
