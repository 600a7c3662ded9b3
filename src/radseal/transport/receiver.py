"""The receiver: an ASGI app that accepts sealed radiographs and stores them.

``POST /v1/messages`` takes one sealed container (``.rsl`` bytes) as the raw
request body. For each message, in this order:

1. verify and open (signature, sender, recipient, AEAD) — nothing is written
   for a message that fails;
2. archive the sealed bytes (``ARCHIVE/<sender key id>/<message id>.rsl``,
   fsync'd; an archived file is never replaced);
3. decode the image;
4. write the derived DICOM object to the store;
5. record the receipt in the index (SQLite, or PostgreSQL shared by a fleet of receivers);
6. only then answer ``200`` with the JSON receipt.

A message is identified by (sender key id, message id) and bound to the
SHA-256 of its sealed bytes. The same sender sending the same bytes again
gets the receipt on record and nothing is stored again; a message id already
taken by another device's message, or by other bytes, is refused with 409
``conflict`` and stores nothing (the id is readable in the clear header, so
without this one device could claim another's pending message id and make
the victim drop its image on the strength of a receipt for the impostor's).
The derived object's UIDs are a function of (sender key id, message id), so
a message processed twice (a crash between steps 4 and 5, two receivers
racing) still ends as one object, and no device can aim at another's.

Before step 1 the body is received into a private temporary file, its clear
header checked on the first 72 bytes, under time limits (:class:`Limits`).

Errors answer ``{"error": CODE, "detail": TEXT}``; no request ends in a 500:

* 400 ``malformed``: not a radseal container, or a broken one (checked as the
  first bytes arrive);
* 403 ``unknown_sender``: signed by a device key that is not trusted;
* 408 ``body_timeout``: the body came too slowly;
* 409 ``conflict``: the message id is taken by another message (another
  sender's, or the same sender's with other sealed bytes);
* 413 ``too_large``: body over the configured limit (checked before reading);
* 421 ``wrong_recipient``: sealed for another receiver key ("misdirected");
* 422 ``not_authentic``: signature or ciphertext does not verify (tampered);
  422 rather than 401, which in HTTP asks for credentials;
* 422 ``future_dated``: authentic, but created more than a day ahead of our clock;
* 422 ``image_too_large``: authentic, but the image is over ``max_pixels``
  (checked before decoding);
* 422 ``undecodable``: authentic, but the image cannot be decoded (the sealed
  bytes stay archived for a later decode);
* 422 ``unstorable``: authentic, but it cannot become a stored object (an
  unexpected error that will recur for this message);
* 503 ``store_unavailable`` / ``archive_unavailable`` / ``unavailable``: the
  store is down or refusing, the archive or index cannot be written;
  ``busy``: too many uploads in flight; ``internal``: a receiver fault: the
  sender retries later.

Log lines name the message id, the sender key id, sizes and the outcome,
never patient data (names, ids, file names live only inside the sealed body).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from radseal.extras import MissingExtraError
from radseal.image import Image
from radseal.io.derived import derived_dataset, message_uid_seed, uncompressed_bytes
from radseal.io.dicom import encode_dicom
from radseal.io.files import HOST_TAG
from radseal.pipeline import DEFAULT_MAX_PIXELS
from radseal.seal import (
    HEADER_BYTES,
    MAGIC,
    AuthenticationError,
    FormatError,
    UnknownSenderError,
    WrongRecipientError,
    open_sealed,
)
from radseal.seal.format import container_bytes, parse_clear_header
from radseal.transport.errors import StoreError, TransportError
from radseal.transport.files import _pid_alive, durable_write_new, file_sha256, own_private_dir, sweep_partial_files
from radseal.transport.index import Index, IndexUnavailable, OnRecord, open_index
from radseal.transport.metrics import ReceiverMetrics
from radseal.transport.protocol import DUPLICATE_HEADER, HEALTH_PATH, MESSAGES_PATH, METRICS_PATH
from radseal.transport.stores import Store, StoredObject

log = logging.getLogger("radseal.receiver")

DEFAULT_MAX_BODY = 64 * 1024 * 1024
DEFAULT_MAX_UPLOADS = 256  # requests in flight; each costs a socket buffer (at most 64 KiB) and a file
DEFAULT_BODY_GRACE = 30.0  # seconds before the minimum rate applies
DEFAULT_MIN_RATE = 8 * 1024  # bytes/s on average after the grace period (64 kbit/s)
DEFAULT_MAX_CLOCK_SKEW = 24 * 3600.0  # a container may be dated at most a day ahead of the receiver
Diagnose = Callable[[Image], dict]


class Rejected(Exception):
    """A message refused with an HTTP status and a JSON error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class _KeyedLocks:
    """One lock per message id, so concurrent duplicates are processed one at a time."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # id -> [lock, users]

    @contextmanager
    def hold(self, key: str):
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


@dataclass
class Receiver:
    """Everything one message needs; the ASGI app is a thin layer over :meth:`accept`."""

    keys: Any
    trusted: Any
    store: Store
    index: Index
    archive_dir: Path
    codec: Any = None
    diagnose: Diagnose | None = None
    open_image: Callable | None = None  # radseal.pipeline.open_image unless given
    max_decodes: int | None = None  # concurrent decodes (memory and CPU bound); default: CPU count
    metrics: Any = None  # a ReceiverMetrics for decode and store latencies, or None
    _locks: _KeyedLocks = field(default_factory=_KeyedLocks)

    def __post_init__(self) -> None:
        self._decode_slots = threading.BoundedSemaphore(self.max_decodes or os.cpu_count() or 2)
        if self.open_image is None:
            from radseal.pipeline import open_image

            self.open_image = open_image
        self.archive_dir = Path(self.archive_dir)
        try:
            # The state folder (the index's) and the archive are the receiver's own: private, even if
            # they were made by an earlier version or by the command line before the receiver started.
            own_private_dir(self.archive_dir)
            if getattr(self.index, "path", None) is not None:
                own_private_dir(Path(self.index.path).parent)
        except OSError as exc:
            raise TransportError(f"{self.archive_dir}: cannot create the archive folder ({exc.strerror or exc})") from None

    def recover(self) -> None:
        """Remove partial files that a killed predecessor left in the archive and the store."""
        removed = sweep_partial_files(self.archive_dir) + [Path(p) for p in self.store.recover()]
        if removed:
            log.info("recovered: removed %d partial file(s) left by a stopped receiver", len(removed))
        self._migrate_archive()

    def archive_path(self, sender_key_id: str, message_id: str) -> Path:
        """Where the sealed bytes of a message are archived (key ids and message ids are hex)."""
        return self.archive_dir / sender_key_id / f"{message_id}.rsl"

    def _migrate_archive(self) -> None:
        """Move an archive of the flat layout (``ARCHIVE/<message id>.rsl``) into per-sender folders and
        fill in the digests of index rows recorded before digests were kept."""
        from radseal.seal import FormatError, parse_header

        moved = 0
        for old in sorted(self.archive_dir.glob("*.rsl")):
            try:
                data = old.read_bytes()
                header = parse_header(data)
            except (OSError, FormatError):
                continue  # not ours to judge; left where it is
            new = self.archive_path(header.sender_key_id, header.message_id)
            if durable_write_new(new, data) or file_sha256(new) == hashlib.sha256(data).hexdigest():
                old.unlink()
                moved += 1
        missing = 0
        for sender_key_id, message_id in self.index.without_digest():
            path = self.archive_path(sender_key_id, message_id)
            if path.is_file():
                self.index.set_digest(sender_key_id, message_id, file_sha256(path))
            else:
                missing += 1
        if moved or missing:
            log.info("archive migrated: %d file(s) moved to per-sender folders; %d older receipt(s) without "
                     "archived bytes keep no digest", moved, missing)

    def accept(self, data: bytes) -> tuple[dict, bool]:
        """Process one sealed message; return (receipt, duplicate). Raises :class:`Rejected`."""
        try:
            opened = open_sealed(data, self.keys, self.trusted)
        except UnknownSenderError as exc:
            raise Rejected(403, "unknown_sender", str(exc)) from None
        except WrongRecipientError as exc:
            raise Rejected(421, "wrong_recipient", str(exc)) from None
        except AuthenticationError as exc:
            raise Rejected(422, "not_authentic", str(exc)) from None
        except FormatError as exc:
            raise Rejected(400, "malformed", str(exc)) from None
        digest = hashlib.sha256(data).hexdigest()
        try:
            return self._accept_opened(data, opened, digest)
        except IndexUnavailable:  # a database server restarting: the sender retries; a row that did commit is found then
            raise Rejected(503, "index_unavailable", "the receipt index is unavailable; retry later") from None

    def _accept_opened(self, data: bytes, opened: Any, digest: str) -> tuple[dict, bool]:
        header = opened.header
        sender_key_id, message_id = header.sender_key_id, header.message_id
        with self._locks.hold(message_id):
            known = self.index.lookup(message_id)
            if known is not None:
                return _same_or_conflict(known, sender_key_id, message_id, digest), True
            archive_path = self.archive_path(sender_key_id, message_id)
            try:
                if not durable_write_new(archive_path, data) and file_sha256(archive_path) != digest:
                    # Archived earlier (left undecodable, or a crash before the index) with other bytes:
                    # the first bytes under a name are kept, these are refused.
                    raise _conflict(message_id, sender_key_id, "other sealed bytes from the same device")
            except OSError as exc:
                raise Rejected(503, "archive_unavailable", f"cannot archive the message ({exc.strerror or exc})") from None
            try:
                with self._decode_slots:
                    decode_started = time.perf_counter()
                    result = self.open_image(data, self.keys, self.trusted, codec=self.codec)
                    if self.metrics is not None:
                        self.metrics.decode_seconds.observe(time.perf_counter() - decode_started)
            except MissingExtraError as exc:  # our own message: names the extra, nothing from the body
                raise Rejected(422, "undecodable", f"authentic message could not be decoded here: {exc}") from None
            except Exception as exc:  # the codec's errors are many; the message stays archived
                raise Rejected(422, "undecodable", f"authentic message could not be decoded ({type(exc).__name__})") from None
            image: Image = result.image
            payload_bytes = len(result.payload)
            model_id = _model_id(result, self.codec)
            source = _source_header(result)
            ds = derived_dataset(image, source, payload_bytes=payload_bytes, model_id=model_id,
                                 uid_seed=message_uid_seed(sender_key_id, message_id))
            obj = StoredObject(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
            try:
                store_started = time.perf_counter()
                location = self.store.put(encode_dicom(ds), obj)
                if self.metrics is not None:
                    self.metrics.store_seconds.observe(time.perf_counter() - store_started)
            except StoreError as exc:
                raise Rejected(503, "store_unavailable", str(exc)) from None
            diagnosis = None
            if self.diagnose is not None:
                try:
                    diagnosis = self.diagnose(image)
                except Exception as exc:  # a classifier failure must not lose the image
                    log.warning("diagnosis failed for message %s: %s", message_id, type(exc).__name__)
            raw = uncompressed_bytes(image)
            receipt = {
                "message_id": message_id,
                "sop_instance_uid": obj.sop_instance_uid,
                "sender_key_id": sender_key_id,
                "sealed_sha256": digest,
                "received_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "sealed_bytes": len(data),
                "payload_bytes": payload_bytes,
                "uncompressed_bytes": raw,
                "ratio": round(raw / len(data), 3),
                "rows": image.height,
                "columns": image.width,
                "bits_stored": image.bits_stored,
                "model_id": model_id,
                "store": self.store.kind,
                "diagnosis": diagnosis,
            }
            # Another receiver sharing the index may have recorded this id meanwhile: what is on record wins.
            return _same_or_conflict(self.index.record(receipt, location), sender_key_id, message_id, digest), False


def _conflict(message_id: str, sender_key_id: str, why: str) -> Rejected:
    return Rejected(
        409,
        "conflict",
        f"message id {message_id} (sender {sender_key_id}) is already taken at this receiver by {why}; "
        "this message was not stored",
    )


def _same_or_conflict(known: OnRecord, sender_key_id: str, message_id: str, digest: str) -> dict:
    """The receipt on record if it is this very message (same sender, same bytes); else a 409."""
    if known.sender_key_id != sender_key_id:
        raise _conflict(message_id, sender_key_id, "another device's message")
    if known.sealed_sha256 is not None and known.sealed_sha256 != digest:
        raise _conflict(message_id, sender_key_id, "other sealed bytes from the same device")
    # sealed_sha256 None: recorded before digests were kept and not archived; the receipt names no
    # digest, so a sender that checks it keeps its copy.
    return known.receipt


def _model_id(result: Any, codec: Any) -> str:
    """The model that decoded the image (a stream names its own model, which may not be the
    receiver's default: a lossless stream is the native-depth coder's), else the receiver
    codec's id, else the sender's codec name."""
    from radseal.pipeline import describe_payload

    try:
        named_by_stream = describe_payload(getattr(result, "payload", b"") or b"").get("model")
    except Exception:  # noqa: BLE001 - a stream that decoded has a readable header; be safe anyway
        named_by_stream = None
    if isinstance(named_by_stream, str) and named_by_stream:
        return named_by_stream
    decoded_by = (getattr(getattr(result, "image", None), "metadata", None) or {}).get("codec")
    if isinstance(decoded_by, str) and decoded_by:
        return decoded_by
    if getattr(codec, "model_id", None):
        return str(codec.model_id)
    named = ((getattr(result, "metadata", None) or {}).get("codec") or {}).get("name")
    return str(named) if named else "unknown"


def _source_header(result: Any):
    """The source DICOM header carried in the message, or None for a non-DICOM input."""
    from pydicom.dataset import Dataset

    header = getattr(result, "dicom_header", None)
    if isinstance(header, Dataset):
        return header
    if isinstance(header, (bytes, bytearray)) and header:
        import io

        import pydicom

        return pydicom.dcmread(io.BytesIO(bytes(header)), force=True)
    source = getattr(result.image, "source", None)
    return source if isinstance(source, Dataset) else None


def default_diagnose() -> Diagnose | None:
    """The shipped pneumonia classifier as a diagnose hook, or None where it is not available."""
    try:
        from radseal.diagnosis.classifier import Classifier

        classifier = Classifier.pretrained()
    except Exception as exc:  # not built yet, weights missing: run without diagnosis
        log.info("diagnosis off: classifier not available (%s)", type(exc).__name__)
        return None
    return lambda img: classifier.predict(img).to_dict()


def _error(status: int, code: str, detail: str, *, close: bool = False, retry_after: int | None = None) -> JSONResponse:
    headers = {}
    if close:  # the rest of the body is not read: the connection cannot carry another request
        headers["Connection"] = "close"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class _ClientGone(Exception):
    """The client closed the connection before its body was complete (its own doing: logged, not answered)."""


@dataclass(frozen=True)
class Limits:
    """What one client may cost the receiver (docs/deploy.md, "Limits").

    ``max_body``: largest container in bytes; ``max_uploads``: requests in
    flight at once (receiving or being processed; more get 503 and retry);
    ``body_grace`` and ``min_rate``: a body must arrive at ``min_rate`` bytes/s
    on average once ``body_grace`` seconds have passed (so a stalled or
    trickling client is cut off after about ``body_grace`` seconds, and a
    whole body of n bytes has ``body_grace + n / min_rate`` seconds);
    ``max_pixels``: largest image decoded; ``max_clock_skew``: how far in the
    future (seconds) a container's creation time may lie.
    """

    max_body: int = DEFAULT_MAX_BODY
    max_uploads: int = DEFAULT_MAX_UPLOADS
    body_grace: float = DEFAULT_BODY_GRACE
    min_rate: float = DEFAULT_MIN_RATE
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW

    def __post_init__(self) -> None:
        for name in ("max_body", "max_uploads", "max_pixels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("body_grace", "min_rate", "max_clock_skew"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")


class _Spool:
    """A request body on its way into a private temporary file (never whole in memory).

    The clear header is checked as soon as its 72 bytes are in: a body that is
    not a radseal container, announces more than the limit, does not match its
    Content-Length, is signed by an unknown device or sealed for another
    receiver is refused before the rest is read.
    """

    def __init__(self, folder: Path, limits: Limits, sender_ids: set[str], receiver_ids: set[str]) -> None:
        self.folder, self.limits = folder, limits
        self.sender_ids, self.receiver_ids = sender_ids, receiver_ids
        self.path: Path | None = None
        self.header = None
        self.size = 0
        self.expected: int | None = None  # from the clear header
        self.declared: int | None = None  # from Content-Length
        self._head = bytearray()
        self._fh = None

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.expected is None:
            self._head += chunk
            prefix = bytes(self._head[: len(MAGIC)])
            if prefix != MAGIC[: len(prefix)]:
                raise Rejected(400, "malformed", "not a radseal container (bad magic; expected a .rsl file)")
            if len(self._head) < HEADER_BYTES:
                return
            self._check_header(bytes(self._head[:HEADER_BYTES]))
            # mode 0600; named after this host and process, so that a receiver starting in a spool
            # folder it shares with live ones removes only the uploads of dead processes
            fd, name = tempfile.mkstemp(prefix=f".upload-{HOST_TAG}-{os.getpid()}-", suffix=".rsl", dir=self.folder)
            self.path = Path(name)
            self._fh = os.fdopen(fd, "wb", buffering=0)  # unbuffered: bytes received are on disk, not in memory
            chunk, self._head = bytes(self._head), bytearray()
        if self.size > self.expected:
            raise Rejected(400, "malformed", f"body is longer than the {self.expected} bytes its header announces")
        view = memoryview(chunk)
        while view:
            view = view[self._fh.write(view):]

    def _check_header(self, head: bytes) -> None:
        try:
            header = parse_clear_header(head)
        except FormatError as exc:
            raise Rejected(400, "malformed", str(exc)) from None
        expected = container_bytes(header)
        if expected > self.limits.max_body:
            raise Rejected(413, "too_large", f"container of {expected} bytes exceeds the limit of {self.limits.max_body} bytes")
        if self.declared is not None and self.declared != expected:
            raise Rejected(400, "malformed", f"Content-Length {self.declared} differs from the {expected} bytes the header announces")
        if header.sender_key_id not in self.sender_ids:
            raise Rejected(403, "unknown_sender", f"sender key {header.sender_key_id} is not trusted by this receiver")
        if header.recipient_key_id not in self.receiver_ids:
            raise Rejected(421, "wrong_recipient", f"sealed for receiver key {header.recipient_key_id}, which this receiver does not hold")
        self.header, self.expected = header, expected

    def finish(self) -> Path:
        if self.size == 0:
            raise Rejected(400, "malformed", "empty body: POST the sealed container bytes")
        if self.expected is None:
            raise Rejected(400, "malformed", f"truncated container: {self.size} bytes, the header alone is {HEADER_BYTES}")
        if self.size < self.expected:
            raise Rejected(400, "malformed", f"truncated container: {self.size} bytes, the header announces {self.expected}")
        self._fh.close()
        self._fh = None
        return self.path


async def _spool_body(request: Request, spool: _Spool, limits: Limits) -> Path:
    """Receive the body into ``spool`` under the time limits; the path of the complete file.

    Raises :class:`Rejected` (408 when the client is too slow) or
    :class:`_ClientGone`.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "malformed", "Content-Length is not a number")
        if int(declared) > limits.max_body:
            raise Rejected(413, "too_large", f"body of {declared} bytes exceeds the limit of {limits.max_body} bytes")
        spool.declared = int(declared)
    loop = asyncio.get_running_loop()
    started = loop.time()
    receive = request.receive
    while True:
        # The next bytes are due when the average rate since the grace period would drop below min_rate.
        due = started + limits.body_grace + spool.size / limits.min_rate
        remaining = due - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                message = await receive()
        except TimeoutError:
            raise Rejected(
                408, "body_timeout",
                f"body too slow: {spool.size} bytes in {loop.time() - started:.0f} s (at least {limits.min_rate:g} bytes/s "
                f"after the first {limits.body_grace:g} s)",
            ) from None
        if message["type"] == "http.disconnect":
            raise _ClientGone(spool.size)
        chunk = message.get("body", b"")
        if chunk:
            spool.feed(chunk)
        if not message.get("more_body", False):
            return spool.finish()


def _admit(data: bytes, receiver: Receiver, limits: Limits) -> None:
    """Refusals that need the opened container, checked before :meth:`Receiver.accept` stores anything.

    A container dated more than ``max_clock_skew`` ahead of this receiver's
    clock (``future_dated``) and an image over ``max_pixels`` (``image_too_large``)
    are refused here, after the signature is verified, so that the refusal is
    authentic. Everything else (including any error of opening) is left to
    ``accept``, which reports it in its own words.
    """
    from radseal.container import unpack_body
    from radseal.pipeline import ImageTooLargeError, check_image_size

    try:
        opened = open_sealed(data, receiver.keys, receiver.trusted)
    except Exception:  # noqa: BLE001 - accept reports it
        return
    header = opened.header
    now = time.time()
    if header.created > now + limits.max_clock_skew:
        created = datetime.fromtimestamp(min(header.created, 253402300799), timezone.utc).isoformat(timespec="seconds")
        raise Rejected(
            422, "future_dated",
            f"container created {created}, {(header.created - now) / 3600:.1f} h ahead of this receiver's clock "
            f"(at most {limits.max_clock_skew / 3600:g} h is accepted): check the device's clock, then send again",
        )
    try:
        body = unpack_body(opened.body)
    except Exception:  # noqa: BLE001 - accept reports a broken body as undecodable
        return
    try:
        check_image_size(body, limits.max_pixels)
    except ImageTooLargeError as exc:
        raise Rejected(422, "image_too_large", str(exc)) from None
    except Exception:  # noqa: BLE001 - a body without a usable description: accept reports it
        return


# Exceptions that say the receiver's own environment failed (disk, database, memory): worth a retry.
_TRANSIENT = (StoreError, OSError, sqlite3.OperationalError, sqlite3.DatabaseError, MemoryError)


def _where(exc: BaseException) -> str:
    """The innermost radseal function an exception passed through (code names only, never data)."""
    where = "receiver"
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("radseal."):
            where = f"{module}.{tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return where


def _classify(exc: Exception) -> Rejected:
    """An unexpected exception from processing as a precise refusal (never a 500).

    The receiver's environment failing (disk, database, store, memory) is
    transient: 503, the sender retries. Anything else comes from the message
    itself (an authentic message whose content cannot become a stored object)
    and will fail the same way every time: 422 ``unstorable``, the sender sets
    it aside with the reason. The reason names the exception type and the
    function, never the exception's text, which may quote values from inside
    the sealed body.
    """
    where = _where(exc)
    if isinstance(exc, _TRANSIENT):
        return Rejected(503, "unavailable", f"the receiver could not finish storing the message ({type(exc).__name__} in {where}); retry later")
    return Rejected(
        422, "unstorable",
        f"authentic message could not be stored: {type(exc).__name__} in {where}; sending it again will not help",
    )


class _NoServerErrors:
    """ASGI middleware: the last guard, so that no request ends in a 500 with a traceback.

    An exception that escapes the app is logged as one line and answered
    ``503 internal`` (retryable: a receiver fault must not make a sender give
    an image up); after the response has started, the connection is closed.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:  # noqa: BLE001 - the point of this class
            log.error("internal error %s in %s on %s %s", type(exc).__name__, _where(exc), scope.get("method"), scope.get("path"))
            if not started:
                response = _error(503, "internal", f"internal error ({type(exc).__name__}); retry later", close=True)
                await response(scope, receive, send)


def _sweep_spool(folder: Path) -> None:
    """Remove upload files that stopped receivers left behind (never answered, so never acknowledged).

    Uploads of live receivers on this host, and of other hosts, sharing the folder are left alone.
    """
    removed = 0
    for part in folder.glob(".upload-*.rsl"):
        owner = part.name[len(".upload-") :].split("-")
        if len(owner) >= 3 and owner[1].isdigit():  # .upload-<host>-<pid>-<random>.rsl
            if owner[0] != HOST_TAG or (int(owner[1]) != os.getpid() and _pid_alive(int(owner[1]))):
                continue
        try:
            part.unlink()
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("recovered: removed %d unfinished upload(s) left by a stopped receiver", removed)


def create_app(
    keys: Any,
    trusted: Any,
    store: Store,
    index_path: str | Path | Index,
    *,
    archive_dir: str | Path | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    codec: Any = None,
    diagnose: Diagnose | None = None,
    open_image: Callable | None = None,
    max_decodes: int | None = None,
    limits: Limits | None = None,
    spool_dir: str | Path | None = None,
    metrics: bool = False,
) -> FastAPI:
    """The receiver's ASGI app.

    ``keys``: receiver private key(s) (several during rotation); ``trusted``:
    device public keys; ``store``: a :class:`FolderStore` or
    :class:`OrthancStore`; ``index_path``: the receipt index, a SQLite
    file path, a ``postgresql://`` URL (see :func:`open_index`) or an index
    object; ``archive_dir``: where sealed bytes are archived (default:
    ``archive`` next to a SQLite index; required with a database server);
    ``max_body``: largest accepted body in bytes (or ``limits.max_body``); ``codec``: the codec for decoding (default: the
    pipeline's); ``diagnose``: optional ``Image -> dict`` hook whose result
    joins the receipt and the index (e.g. :func:`default_diagnose`);
    ``max_decodes``: how many messages may be opened and decoded at once
    (default: CPU count); ``limits``: see :class:`Limits`; ``spool_dir``:
    where bodies are received (private files, default ``incoming`` next to
    the index, or next to the archive with a database server); ``metrics``:
    serve ``GET /metrics`` (Prometheus; off by default, since it tells any
    client how busy the receiver is).
    """
    index = index_path if hasattr(index_path, "record") else open_index(index_path)
    if index.path is not None:
        state_dir = Path(index.path).parent
    elif archive_dir is not None:
        state_dir = Path(archive_dir).parent
    else:
        raise TransportError("a receipt index on a database server needs an archive folder (archive_dir)")
    if limits is None:
        limits = Limits(max_body=max_body)
    if open_image is None:
        from radseal.pipeline import open_image as pipeline_open_image

        open_image = functools.partial(pipeline_open_image, max_pixels=limits.max_pixels)
    receiver = Receiver(
        keys=list(keys) if isinstance(keys, Iterable) else [keys],
        trusted=list(trusted) if isinstance(trusted, Iterable) else [trusted],
        store=store,
        index=index,
        archive_dir=Path(archive_dir) if archive_dir is not None else state_dir / "archive",
        codec=codec,
        diagnose=diagnose,
        open_image=open_image,
        max_decodes=max_decodes,
        metrics=ReceiverMetrics() if metrics else None,
    )
    receiver.recover()
    spool_dir = Path(spool_dir) if spool_dir is not None else state_dir / "incoming"
    try:
        spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TransportError(f"{spool_dir}: cannot create the folder for incoming uploads ({exc.strerror or exc})") from None
    _sweep_spool(spool_dir)
    sender_ids = {k.key_id for k in receiver.trusted}
    receiver_ids = {k.key_id for k in receiver.keys}
    processing = asyncio.Semaphore(max_decodes or os.cpu_count() or 2)
    in_flight = [0]

    # Only what devices use is served: no /docs, /redoc or /openapi.json.
    app = FastAPI(title="radseal receiver", version=_version(), docs_url=None, redoc_url=None, openapi_url=None)
    app.state.receiver = receiver
    app.state.limits = limits
    app.add_middleware(_NoServerErrors)

    @app.get(HEALTH_PATH)
    async def healthz() -> dict:
        return {"status": "ok", "store": store.kind, "version": _version()}

    counters = receiver.metrics
    if counters is not None:

        @app.get(METRICS_PATH)
        async def metrics_endpoint() -> Response:
            return Response(counters.render(), media_type=counters.content_type)

    def refused(response: JSONResponse, status: int, code: str) -> JSONResponse:
        if counters is not None:
            counters.refusal(status, code)
        return response

    def process(path: Path) -> tuple[dict, bool] | Rejected:
        """Open, check and store one received body; a refusal is returned, not raised.

        Returned, because an exception crossing the thread pool keeps its traceback's
        frames (and with them the message bytes) alive until the garbage collector
        runs: 20 refused 48 MiB bodies held 2 GB that way.
        """
        data = path.read_bytes()
        try:
            _admit(data, receiver, limits)
            return receiver.accept(data)
        except Rejected as exc:
            refusal = (exc.status, exc.code, exc.detail)
        except Exception as exc:  # noqa: BLE001 - mapped to a precise refusal, never a 500
            refusal = _classify(exc)
            refusal = (refusal.status, refusal.code, refusal.detail)
        del data
        return Rejected(*refusal)

    @app.post(MESSAGES_PATH)
    async def post_message(request: Request) -> JSONResponse:
        started = time.perf_counter()
        if in_flight[0] >= limits.max_uploads:
            log.warning("busy status=503 error=busy: %d uploads in flight (--max-uploads)", in_flight[0])
            return refused(_error(503, "busy", f"{limits.max_uploads} uploads in flight; retry later", close=True,
                                  retry_after=5), 503, "busy")
        in_flight[0] += 1
        spool = _Spool(spool_dir, limits, sender_ids, receiver_ids)
        try:
            try:
                path = await _spool_body(request, spool, limits)
            except Rejected as exc:
                log.warning("rejected status=%d error=%s bytes=%d: %s", exc.status, exc.code, spool.size, exc.detail)
                return refused(_error(exc.status, exc.code, exc.detail, close=True), exc.status, exc.code)
            except _ClientGone:
                log.info("aborted: the client closed the connection after %d of %s bytes", spool.size,
                         spool.expected if spool.expected is not None else request.headers.get("content-length", "?"))
                return refused(_error(400, "aborted", "the client closed the connection before the body was complete",
                                      close=True), 400, "aborted")
            async with processing:
                outcome = await run_in_threadpool(process, path)
            if isinstance(outcome, Rejected):
                exc = outcome
                log.warning("rejected status=%d error=%s bytes=%d message=%s sender=%s: %s", exc.status, exc.code, spool.size,
                            spool.header.message_id, spool.header.sender_key_id, exc.detail)
                return refused(_error(exc.status, exc.code, exc.detail), exc.status, exc.code)
            receipt, duplicate = outcome
        finally:
            if counters is not None:
                counters.bytes_in.inc(spool.size)
            spool.discard()
            in_flight[0] -= 1
        if counters is not None:
            (counters.duplicates if duplicate else counters.stored).inc()
        log.info(
            "%s message=%s sender=%s bytes=%d ratio=%s ms=%.0f",
            "duplicate" if duplicate else "stored",
            receipt["message_id"],
            receipt["sender_key_id"],
            spool.size,
            receipt["ratio"],
            1000 * (time.perf_counter() - started),
        )
        return JSONResponse(receipt, headers={DUPLICATE_HEADER: "true" if duplicate else "false"})

    return app


def _version() -> str:
    from radseal import __version__

    return __version__
