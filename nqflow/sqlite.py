"""The one way nqflow opens its SQLite files (scheduler state, outbox, volume baseline)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

#: Seconds a connection waits for another process's write lock before it fails.
BUSY_TIMEOUT_S = 30


@contextmanager
def connect(path: str | Path, rows_as_mappings: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection in write-ahead-log mode (readers never block the one writer, and a crash
    mid-write leaves the last commit intact), committed when the block succeeds, rolled back
    when it raises, and closed either way. `rows_as_mappings` gives rows readable by name."""
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as conn:
        if rows_as_mappings:
            conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            yield conn
