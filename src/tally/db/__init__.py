"""Database plumbing: declarative base, column types, engines, sessions, migrations."""
