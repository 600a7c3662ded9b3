"""The receiver's index: one row per accepted message, in SQLite (or PostgreSQL, :mod:`.index_pg`).

A message is identified by the sender's key id and its message id, and
bound to the SHA-256 of its sealed bytes (``sealed_sha256``). A message id
names one message at a receiver: the table's key is (sender key id, message
id) and a second unique index on the message id alone makes the database
itself refuse a second message under an id already taken, by another device
or with other bytes, even when two receivers race. The receiver compares the
row on record with what it received and answers a conflict (409) when they
differ.

WAL mode with ``synchronous=FULL`` makes a committed row survive a crash; a
connection per call keeps it safe to use from the receiver's worker threads.
The file is created readable by its owner only.

Schema versions (``PRAGMA user_version``): 2 is this one. An index written
before it (version 0, ``message_id`` as the only key, no
digest) is migrated in place when it is opened: the rows are kept, their
``sealed_sha256`` is empty until the receiver fills it in from its archive
(:meth:`radseal.transport.receiver.Receiver.recover`).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from radseal.transport.errors import TransportError
from radseal.transport.files import private_file, private_mkdir

SCHEMA_VERSION = 2

_COLUMNS = """
    sender_key_id    TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    sealed_sha256    TEXT,
    sop_instance_uid TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    sealed_bytes     INTEGER NOT NULL,
    payload_bytes    INTEGER NOT NULL,
    ratio            REAL NOT NULL,
    location         TEXT NOT NULL,
    probability      REAL,
    label            TEXT,
    receipt          TEXT NOT NULL,
    PRIMARY KEY (sender_key_id, message_id)
"""
_CREATE = f"""
CREATE TABLE messages ({_COLUMNS});
CREATE UNIQUE INDEX messages_message_id ON messages (message_id);
"""
_MIGRATE_FROM_V0 = f"""
ALTER TABLE messages RENAME TO messages_v0;
CREATE TABLE messages ({_COLUMNS});
INSERT INTO messages (sender_key_id, message_id, sealed_sha256, sop_instance_uid, received_at, sealed_bytes,
                      payload_bytes, ratio, location, probability, label, receipt)
    SELECT sender_key_id, message_id, NULL, sop_instance_uid, received_at, sealed_bytes,
           payload_bytes, ratio, location, probability, label, receipt FROM messages_v0;
DROP TABLE messages_v0;
CREATE UNIQUE INDEX messages_message_id ON messages (message_id);
"""


@dataclass(frozen=True)
class OnRecord:
    """What the index holds for a message id: who sent it, the digest of its bytes, its receipt."""

    sender_key_id: str
    message_id: str
    sealed_sha256: str | None  # None: recorded before digests were kept, archive not found
    receipt: dict

    def same_message(self, sender_key_id: str, sealed_sha256: str) -> bool:
        return self.sender_key_id == sender_key_id and self.sealed_sha256 == sealed_sha256


class IndexUnavailable(TransportError):
    """The index cannot be reached right now (a database server restarting): the receiver answers 503."""


class Index(Protocol):
    """What the receiver needs of a receipt index; :class:`ReceiptIndex` (SQLite) and
    :class:`radseal.transport.index_pg.PostgresIndex` both provide it."""

    path: Path | None  # the SQLite file, or None for a database server

    def lookup(self, message_id: str) -> OnRecord | None: ...
    def get(self, message_id: str) -> dict | None: ...
    def record(self, receipt: dict, location: str) -> OnRecord: ...
    def without_digest(self) -> list[tuple[str, str]]: ...
    def set_digest(self, sender_key_id: str, message_id: str, sealed_sha256: str) -> None: ...
    def count(self) -> int: ...
    def rows(self) -> list[dict]: ...
    def close(self) -> None: ...


def open_index(spec: str | Path) -> Index:
    """The receipt index named by ``spec``: ``postgresql://user@host:port/db`` (shared by a fleet of
    receivers), or the path of a SQLite file (one receiver; the default)."""
    from radseal.transport.index_pg import PostgresIndex, is_postgres_url

    if is_postgres_url(str(spec)):
        return PostgresIndex(str(spec))
    if "://" in str(spec):
        raise TransportError(f"{spec}: not a receipt index (a postgresql:// URL or a SQLite file path)")
    return ReceiptIndex(spec)


class ReceiptIndex:
    """SQLite file mapping (sender key id, message id) -> digest and receipt (and where the object went)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            private_mkdir(self.path.parent)
            private_file(self.path)
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                self._create_or_migrate(db)
        except OSError as exc:
            raise TransportError(f"{self.path}: cannot open the receipt index ({exc.strerror or exc})") from None
        except sqlite3.Error as exc:
            raise TransportError(f"{self.path}: cannot open the receipt index ({exc})") from None

    def _create_or_migrate(self, db: sqlite3.Connection) -> None:
        db.isolation_level = None  # explicit transactions: schema changes are all or nothing
        db.execute("BEGIN IMMEDIATE")  # one receiver at a time creates or migrates
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            columns = {r[1] for r in db.execute("PRAGMA table_info(messages)")}
            if version > SCHEMA_VERSION:
                raise TransportError(
                    f"{self.path}: receipt index of schema {version}, written by a newer radseal "
                    f"(this one reads up to {SCHEMA_VERSION}); upgrade radseal"
                )
            if not columns:
                for statement in _CREATE.split(";"):
                    if statement.strip():
                        db.execute(statement)
            elif version < SCHEMA_VERSION:
                if "sealed_sha256" in columns or "message_id" not in columns:
                    raise TransportError(f"{self.path}: not a radseal receipt index (unexpected columns)")
                for statement in _MIGRATE_FROM_V0.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def lookup(self, message_id: str) -> OnRecord | None:
        """The message on record under ``message_id``, whoever sent it, or None."""
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT sender_key_id, message_id, sealed_sha256, receipt FROM messages WHERE message_id = ?",
                (message_id,),
            ).fetchone()
        return OnRecord(row[0], row[1], row[2], json.loads(row[3])) if row else None

    def get(self, message_id: str) -> dict | None:
        """The receipt on record under ``message_id``, or None."""
        known = self.lookup(message_id)
        return known.receipt if known else None

    def record(self, receipt: dict, location: str) -> OnRecord:
        """Insert the receipt unless its message id is taken; return what is on record under that id.

        The caller compares the answer with its own message: another sender or
        other bytes on record mean this message was not recorded.
        """
        diagnosis = receipt.get("diagnosis") or {}
        with closing(self._connect()) as db:
            with db:
                db.execute(
                    "INSERT OR IGNORE INTO messages (sender_key_id, message_id, sealed_sha256, sop_instance_uid,"
                    " received_at, sealed_bytes, payload_bytes, ratio, location, probability, label, receipt)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        receipt["sender_key_id"],
                        receipt["message_id"],
                        receipt["sealed_sha256"],
                        receipt["sop_instance_uid"],
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
        known = self.lookup(receipt["message_id"])
        assert known is not None  # inserted, or ignored because a row holds the id
        return known

    def without_digest(self) -> list[tuple[str, str]]:
        """(sender key id, message id) of rows migrated from schema 0 whose digest is not known yet."""
        with closing(self._connect()) as db:
            return [tuple(r) for r in db.execute("SELECT sender_key_id, message_id FROM messages WHERE sealed_sha256 IS NULL")]

    def set_digest(self, sender_key_id: str, message_id: str, sealed_sha256: str) -> None:
        """Fill in the digest of a migrated row (and add it to its receipt)."""
        with closing(self._connect()) as db:
            with db:
                row = db.execute(
                    "SELECT receipt FROM messages WHERE sender_key_id = ? AND message_id = ? AND sealed_sha256 IS NULL",
                    (sender_key_id, message_id),
                ).fetchone()
                if row is None:
                    return
                receipt = json.loads(row[0])
                receipt["sealed_sha256"] = sealed_sha256
                db.execute(
                    "UPDATE messages SET sealed_sha256 = ?, receipt = ? WHERE sender_key_id = ? AND message_id = ?",
                    (sealed_sha256, json.dumps(receipt, sort_keys=True), sender_key_id, message_id),
                )

    def count(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def rows(self) -> list[dict]:
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM messages ORDER BY received_at")]

    def close(self) -> None:
        pass  # a connection per call: nothing held open

    def __repr__(self) -> str:
        return f"ReceiptIndex({str(self.path)!r})"
