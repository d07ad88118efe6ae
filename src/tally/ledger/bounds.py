"""The one bound on points, wherever they enter Tally (API, admin, imports, program settings).

A billion points in one movement is far beyond any real program, and it keeps every balance
many orders of magnitude inside a 64-bit integer: SQLite silently turns an integer that
overflows into a REAL, after which sums and comparisons on that customer go wrong.
"""

from __future__ import annotations

MAX_POINTS = 1_000_000_000
