"""The receipt index in PostgreSQL, shared by several receivers behind a load balancer.

Same semantics as the SQLite :class:`radseal.transport.index.ReceiptIndex`:
one row per accepted message, keyed by (sender key id, message id), bound to
the SHA-256 of its sealed bytes, and a second unique constraint on the
message id alone. ``record`` is one ``INSERT ... ON CONFLICT DO NOTHING``
in its own transaction: when two receivers race on the same message, the
database keeps exactly one row and both read back the same receipt; when
they race with different messages under one id, the loser reads the
winner's row and answers a conflict (409).

Connections come from a small pool (psycopg_pool) that checks a connection
before handing it out and reconnects after the server restarts. While the
server is unreachable every call raises :class:`IndexUnavailable`, which
the receiver answers ``503`` (the sender retries); nothing is recorded
twice because the next attempt finds the row that did commit.

The schema is created on first use under an advisory lock (receivers that
start together do not race on ``CREATE TABLE``); ``radseal_schema`` holds
its version.
"""

from __future__ import annotations

import json
import re

from radseal.transport.errors import TransportError
from radseal.transport.index import IndexUnavailable, OnRecord

SCHEMA_VERSION = 2
_LOCK_KEY = 0x7261647365616C  # "radseal": serialises schema creation between receivers

_CREATE = """
CREATE TABLE IF NOT EXISTS radseal_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    sender_key_id    TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    sealed_sha256    TEXT,
    sop_instance_uid TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    sealed_bytes     BIGINT NOT NULL,
    payload_bytes    BIGINT NOT NULL,
    ratio            DOUBLE PRECISION NOT NULL,
    location         TEXT NOT NULL,
    probability      DOUBLE PRECISION,
    label            TEXT,
    receipt          TEXT NOT NULL,
    PRIMARY KEY (sender_key_id, message_id),
    CONSTRAINT messages_message_id UNIQUE (message_id)
)
"""

_COLUMNS = ("sender_key_id, message_id, sealed_sha256, sop_instance_uid, received_at, sealed_bytes, "
            "payload_bytes, ratio, location, probability, label, receipt")


def is_postgres_url(text: str) -> bool:
    return str(text).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password (for logs and error messages)."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@]*@", r"\1:***@", str(url))


class PostgresIndex:
    """(sender key id, message id) -> digest and receipt, in a PostgreSQL database every receiver shares."""

    path = None  # no local file: the receiver has no index folder to keep private

    def __init__(self, url: str, *, timeout: float = 10.0, max_size: int = 8) -> None:
        from radseal.extras import require

        psycopg = require("psycopg", "fleet", "a receipt index on PostgreSQL")
        ConnectionPool = require("psycopg_pool", "fleet", "a receipt index on PostgreSQL").ConnectionPool
        self._psycopg = psycopg
        self.url = url
        self._timeout = timeout
        try:
            # One plain connection first: a wrong URL, a refused password or a server that is down
            # fails here at once with PostgreSQL's own reason (the pool would retry in the background).
            psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                timeout=timeout,
                check=ConnectionPool.check_connection,  # a connection broken by a server restart is replaced
                # Background reconnection backs off exponentially (1, 2, 4 s ...); giving it up after
                # ``timeout`` lets the next request start a fresh attempt, so a receiver is back within
                # seconds of the server rather than after the back-off has grown to minutes.
                reconnect_timeout=timeout,
                kwargs={"connect_timeout": max(1, int(timeout))},
                open=False,
                name="radseal-index",
            )
            self._pool.open(wait=True, timeout=timeout)
        except Exception as exc:  # bad URL, server down, authentication refused
            raise TransportError(f"{redact(url)}: cannot open the receipt index ({_reason(exc)})") from None
        try:
            self._create()
        except IndexUnavailable as exc:
            self._pool.close()
            raise TransportError(f"{redact(url)}: cannot open the receipt index ({exc})") from None
        except TransportError:
            self._pool.close()
            raise

    def _run(self, fn):
        """Run ``fn(connection)`` in one transaction; server trouble becomes :class:`IndexUnavailable`."""
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                with conn.transaction():
                    return fn(conn)
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError, PoolTimeout) as exc:
            raise IndexUnavailable(f"PostgreSQL index {redact(self.url)} unavailable ({_reason(exc)})") from None

    def _create(self) -> None:
        def create(conn) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            for statement in _CREATE.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT version FROM radseal_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO radseal_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise TransportError(
                    f"{redact(self.url)}: receipt index of schema {row[0]}, written by a newer radseal "
                    f"(this one reads up to {SCHEMA_VERSION}); upgrade radseal"
                )

        self._run(create)

    def lookup(self, message_id: str) -> OnRecord | None:
        row = self._run(lambda conn: conn.execute(
            "SELECT sender_key_id, message_id, sealed_sha256, receipt FROM messages WHERE message_id = %s",
            (message_id,),
        ).fetchone())
        return OnRecord(row[0], row[1], row[2], json.loads(row[3])) if row else None

    def get(self, message_id: str) -> dict | None:
        known = self.lookup(message_id)
        return known.receipt if known else None

    def record(self, receipt: dict, location: str) -> OnRecord:
        """Insert the receipt unless its message id is taken (by any key); return what is on record."""
        diagnosis = receipt.get("diagnosis") or {}
        values = (
            receipt["sender_key_id"], receipt["message_id"], receipt["sealed_sha256"], receipt["sop_instance_uid"],
            receipt["received_at"], receipt["sealed_bytes"], receipt["payload_bytes"], receipt["ratio"], location,
            diagnosis.get("probability"), diagnosis.get("name", diagnosis.get("label")),
            json.dumps(receipt, sort_keys=True),
        )

        def insert(conn):
            # No conflict target: either unique constraint (the pair, or the message id alone) makes it a no-op.
            conn.execute(f"INSERT INTO messages ({_COLUMNS}) VALUES ({', '.join(['%s'] * 12)}) ON CONFLICT DO NOTHING",
                         values)
            return conn.execute(
                "SELECT sender_key_id, message_id, sealed_sha256, receipt FROM messages WHERE message_id = %s",
                (receipt["message_id"],),
            ).fetchone()

        row = self._run(insert)
        assert row is not None  # inserted, or skipped because a committed row holds the id
        return OnRecord(row[0], row[1], row[2], json.loads(row[3]))

    def without_digest(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._run(lambda conn: conn.execute(
            "SELECT sender_key_id, message_id FROM messages WHERE sealed_sha256 IS NULL").fetchall())]

    def set_digest(self, sender_key_id: str, message_id: str, sealed_sha256: str) -> None:
        def update(conn) -> None:
            row = conn.execute(
                "SELECT receipt FROM messages WHERE sender_key_id = %s AND message_id = %s AND sealed_sha256 IS NULL"
                " FOR UPDATE", (sender_key_id, message_id)).fetchone()
            if row is None:
                return
            receipt = json.loads(row[0])
            receipt["sealed_sha256"] = sealed_sha256
            conn.execute("UPDATE messages SET sealed_sha256 = %s, receipt = %s WHERE sender_key_id = %s AND message_id = %s",
                         (sealed_sha256, json.dumps(receipt, sort_keys=True), sender_key_id, message_id))

        self._run(update)

    def count(self) -> int:
        return int(self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]))

    def rows(self) -> list[dict]:
        def select(conn):
            cur = conn.execute("SELECT * FROM messages ORDER BY received_at")
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

        return self._run(select)

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresIndex({redact(self.url)!r})"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
