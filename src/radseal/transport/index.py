"""The receiver's index: one row per accepted message, in SQLite.

The message id is the primary key, so a message is recorded once even when
two receivers (or two requests) race on it: the second insert is ignored and
both answer with the receipt that won. WAL mode with ``synchronous=FULL``
makes a committed row survive a crash; a connection per call keeps it safe
to use from the receiver's worker threads.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from radseal.transport.errors import TransportError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id       TEXT PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    sender_key_id    TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    sealed_bytes     INTEGER NOT NULL,
    payload_bytes    INTEGER NOT NULL,
    ratio            REAL NOT NULL,
    location         TEXT NOT NULL,
    probability      REAL,
    label            TEXT,
    receipt          TEXT NOT NULL
)
"""


class ReceiptIndex:
    """SQLite file mapping message id -> receipt (and where the object went)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
                db.commit()
        except OSError as exc:
            raise TransportError(f"{self.path}: cannot open the receipt index ({exc.strerror or exc})") from None
        except sqlite3.Error as exc:
            raise TransportError(f"{self.path}: cannot open the receipt index ({exc})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def get(self, message_id: str) -> dict | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT receipt FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def record(self, receipt: dict, location: str) -> dict:
        """Insert the receipt unless the message is already there; return the receipt on record."""
        diagnosis = receipt.get("diagnosis") or {}
        with closing(self._connect()) as db:
            with db:
                db.execute(
                    "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        receipt["message_id"],
                        receipt["sop_instance_uid"],
                        receipt["sender_key_id"],
                        receipt["received_at"],
                        receipt["sealed_bytes"],
                        receipt["payload_bytes"],
                        receipt["ratio"],
                        location,
                        diagnosis.get("probability"),
                        diagnosis.get("name", diagnosis.get("label")),
                        json.dumps(receipt, sort_keys=True),
                    ),
                )
            row = db.execute("SELECT receipt FROM messages WHERE message_id = ?", (receipt["message_id"],)).fetchone()
        return json.loads(row[0])

    def count(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def rows(self) -> list[dict]:
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM messages ORDER BY received_at")]
