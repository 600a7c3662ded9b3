"""The sender's durable outbox: sealed messages kept until a matching receipt arrives.

One SQLite file (``DIR/outbox.sqlite``, WAL, ``synchronous=FULL``: every
commit is fsync'd), created readable by its owner only, in a folder created
``0700``. A message is committed here *before* its first send and its sealed
bytes are dropped only after a receipt that names its message id, this
device's key id and the SHA-256 of its sealed bytes came back; the row then
stays as a small record (state ``delivered`` plus the receipt) so that
sending the same input file again can be noticed, until it is purged after
the retention period (:meth:`Outbox.purge_delivered`).

States: ``pending`` (to send; retried after a restart), ``delivered``
(receipt held, sealed bytes dropped), ``refused`` (the receiver refused it
for good, or answered with a receipt for another message: kept, sealed bytes
included, with the receiver's status, error code and reason, never sent
again until :meth:`Outbox.retry` puts it back to ``pending``).

No input file path is stored: a file name often carries a patient's name.
A message is labelled by the first hex digits of its input's SHA-256
(``sha256:…``, what ``sha256sum FILE`` prints), which identifies the file to
whoever holds it and tells nothing to anyone else. SQLite's ``secure_delete``
is on, so purged rows and scrubbed labels are overwritten in the file, not
just unlinked from its b-tree.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from radseal.transport.errors import OutboxError
from radseal.transport.files import own_private_dir, private_file

OUTBOX_FILE = "outbox.sqlite"
SCHEMA_VERSION = 2
STATES = ("pending", "delivered", "refused")

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
    receipt      TEXT,
    refused_status INTEGER,
    refused_code   TEXT
);
CREATE INDEX IF NOT EXISTS messages_source_key ON messages (source_key);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, created);
"""


def source_label(source_key: str) -> str:
    """The label kept for an input: ``sha256:`` and the first 16 hex digits of its bytes' SHA-256."""
    return f"sha256:{source_key.split(':', 1)[0][:16]}"


@dataclass(frozen=True)
class OutboxEntry:
    message_id: str
    source: str  # a label (``sha256:…``), never a file path
    sealed: bytes
    attempts: int


@dataclass(frozen=True)
class OutboxRow:
    """One message as ``radseal outbox status`` shows it (no sealed bytes)."""

    message_id: str
    source: str
    state: str
    sealed_bytes: int
    created: float
    updated: float
    attempts: int
    last_error: str | None
    refused_status: int | None
    refused_code: str | None


class Outbox:
    """A folder holding ``outbox.sqlite``; safe to share between threads and processes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / OUTBOX_FILE
        try:
            own_private_dir(self.directory)
            private_file(self.path)
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                self._create_or_migrate(db)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox ({exc})") from None

    def _create_or_migrate(self, db: sqlite3.Connection) -> None:
        db.isolation_level = None
        db.execute("BEGIN IMMEDIATE")
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise OutboxError(f"{self.path}: outbox of schema {version}, written by a newer radseal; upgrade radseal")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            scrubbed = False
            if version < SCHEMA_VERSION:
                columns = {r[1] for r in db.execute("PRAGMA table_info(messages)")}
                for column, kind in (("refused_status", "INTEGER"), ("refused_code", "TEXT")):
                    if column not in columns:
                        db.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
                db.execute("UPDATE messages SET state = 'refused' WHERE state = 'rejected'")
                # Outboxes written before this schema kept the input's path: replace it by the label.
                rows = db.execute("SELECT message_id, source_key FROM messages").fetchall()
                db.executemany("UPDATE messages SET source = ? WHERE message_id = ?",
                               [(source_label(key), mid) for mid, key in rows])
                scrubbed = bool(rows)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if scrubbed:
            db.execute("VACUUM")  # rebuild the file: no page keeps an old path
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA secure_delete=ON")
        return db

    def _write(self, sql: str, params: tuple) -> int:
        try:
            with closing(self._connect()) as db, db:
                return db.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: cannot write the outbox ({exc})") from None

    def add(self, message_id: str, sealed: bytes, label: str, source_key: str) -> None:
        """Commit a sealed message (durable once this returns).

        ``label`` names the message in reports; callers pass
        :func:`source_label` or a name that carries no patient data.
        """
        now = time.time()
        self._write(
            "INSERT INTO messages (message_id, source, source_key, sealed, sealed_bytes, created, updated)"
            " VALUES (?,?,?,?,?,?,?)",
            (message_id, label, source_key, sealed, len(sealed), now, now),
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

    def mark_refused(self, message_id: str, status: int | None, code: str, reason: str) -> None:
        """Set a message aside (sealed bytes kept) with the receiver's status, error code and reason."""
        self._write(
            "UPDATE messages SET state = 'refused', refused_status = ?, refused_code = ?, last_error = ?,"
            " attempts = attempts + 1, updated = ? WHERE message_id = ?",
            (status, code[:100], reason[:500], time.time(), message_id),
        )

    def retry(self, message_ids: list[str] | None = None) -> list[str]:
        """Put refused messages (all of them, or those named) back to ``pending``; return their ids."""
        with closing(self._connect()) as db:
            if message_ids is None:
                ids = [r[0] for r in db.execute("SELECT message_id FROM messages WHERE state = 'refused'")]
            else:
                ids = []
                for mid in message_ids:
                    row = db.execute("SELECT state FROM messages WHERE message_id = ?", (mid,)).fetchone()
                    if row is None:
                        raise OutboxError(f"no message {mid} in the outbox {self.path}")
                    if row[0] != "refused":
                        raise OutboxError(f"message {mid} is {row[0]}, not refused: nothing to retry")
                    ids.append(mid)
        for mid in ids:
            self._write(
                "UPDATE messages SET state = 'pending', refused_status = NULL, refused_code = NULL, attempts = 0,"
                " updated = ? WHERE message_id = ? AND state = 'refused'",
                (time.time(), mid),
            )
        return ids

    def purge_delivered(self, older_than: float, now: float | None = None) -> int:
        """Delete delivered rows (receipt and diagnosis included) delivered more than ``older_than``
        seconds ago; return how many. An input sent again after its row is gone is sealed anew."""
        cutoff = (time.time() if now is None else now) - older_than
        purged = self._write("DELETE FROM messages WHERE state = 'delivered' AND updated <= ?", (cutoff,))
        if purged:
            try:  # move the overwritten pages into the file now, so the write-ahead log keeps no old copy
                with closing(self._connect()) as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # another process is reading: the next checkpoint does it
        return purged

    def state(self, message_id: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT state FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return row[0] if row else None

    def receipt(self, message_id: str) -> dict | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT receipt FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def sealed(self, message_id: str) -> bytes | None:
        """The sealed bytes kept for a message (None once delivered)."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT sealed FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def rows(self, states: tuple[str, ...] = STATES) -> list[OutboxRow]:
        marks = ",".join("?" * len(states))
        with closing(self._connect()) as db:
            found = db.execute(
                "SELECT message_id, source, state, sealed_bytes, created, updated, attempts, last_error,"
                f" refused_status, refused_code FROM messages WHERE state IN ({marks}) ORDER BY created",
                tuple(states),
            ).fetchall()
        return [OutboxRow(*r) for r in found]

    def counts(self) -> dict[str, int]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: int(n) for state, n in rows})
        return counts
