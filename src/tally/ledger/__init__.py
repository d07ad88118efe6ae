"""The points ledger: immutable entries, the only way a balance changes."""
