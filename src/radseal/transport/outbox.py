"""The sender's durable outbox: sealed messages kept until a receipt arrives.

One SQLite file (``DIR/outbox.sqlite``, WAL, ``synchronous=FULL``: every
commit is fsync'd). A message is committed here *before* its first send and
its sealed bytes are dropped only after a receipt naming its message id came
back; the row then stays as a small record (state ``delivered`` plus the
receipt) so that sending the same input file again can be noticed.

States: ``pending`` (to send; retried after a restart), ``delivered``
(receipt held, sealed bytes dropped), ``rejected`` (the receiver refused it
with a 4xx: kept, sealed bytes included, for a person to look at).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from radseal.transport.errors import OutboxError

OUTBOX_FILE = "outbox.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id   TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    source_key   TEXT NOT NULL,
    sealed       BLOB,
    sealed_bytes INTEGER NOT NULL,
    created      REAL NOT NULL,
    updated      REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL DEFAULT 'pending',
    last_error   TEXT,
    receipt      TEXT
);
CREATE INDEX IF NOT EXISTS messages_source_key ON messages (source_key);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, created);
"""


@dataclass(frozen=True)
class OutboxEntry:
    message_id: str
    source: str
    sealed: bytes
    attempts: int


class Outbox:
    """A folder holding ``outbox.sqlite``; safe to share between threads and processes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / OUTBOX_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox ({exc})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _write(self, sql: str, params: tuple) -> None:
        try:
            with closing(self._connect()) as db, db:
                db.execute(sql, params)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: cannot write the outbox ({exc})") from None

    def add(self, message_id: str, sealed: bytes, source: str, source_key: str) -> None:
        """Commit a sealed message (durable once this returns)."""
        now = time.time()
        self._write(
            "INSERT INTO messages (message_id, source, source_key, sealed, sealed_bytes, created, updated)"
            " VALUES (?,?,?,?,?,?,?)",
            (message_id, source, source_key, sealed, len(sealed), now, now),
        )

    def find_source(self, source_key: str) -> tuple[str, str] | None:
        """(message id, state) of the newest message made from this input, if any."""
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT message_id, state FROM messages WHERE source_key = ? ORDER BY created DESC LIMIT 1",
                (source_key,),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def pending(self) -> list[OutboxEntry]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT message_id, source, sealed, attempts FROM messages WHERE state = 'pending' ORDER BY created"
            ).fetchall()
        return [OutboxEntry(r[0], r[1], bytes(r[2]), int(r[3])) for r in rows]

    def record_attempt(self, message_id: str, error: str) -> None:
        self._write(
            "UPDATE messages SET attempts = attempts + 1, last_error = ?, updated = ? WHERE message_id = ?",
            (error[:500], time.time(), message_id),
        )

    def mark_delivered(self, message_id: str, receipt: dict) -> None:
        """Drop the sealed bytes and keep the receipt (the receipt has been checked by the caller)."""
        self._write(
            "UPDATE messages SET state = 'delivered', sealed = NULL, receipt = ?, last_error = NULL,"
            " attempts = attempts + 1, updated = ? WHERE message_id = ?",
            (json.dumps(receipt, sort_keys=True), time.time(), message_id),
        )

    def mark_rejected(self, message_id: str, error: str) -> None:
        self._write(
            "UPDATE messages SET state = 'rejected', last_error = ?, attempts = attempts + 1, updated = ?"
            " WHERE message_id = ?",
            (error[:500], time.time(), message_id),
        )

    def state(self, message_id: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT state FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return row[0] if row else None

    def receipt(self, message_id: str) -> dict | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT receipt FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def counts(self) -> dict[str, int]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        counts = {"pending": 0, "delivered": 0, "rejected": 0}
        counts.update({state: int(n) for state, n in rows})
        return counts
