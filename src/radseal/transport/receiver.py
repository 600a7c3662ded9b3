"""The receiver: an ASGI app that accepts sealed radiographs and stores them.

``POST /v1/messages`` takes one sealed container (``.rsl`` bytes) as the raw
request body. For each message, in this order:

1. verify and open (signature, sender, recipient, AEAD) — nothing is written
   for a message that fails;
2. archive the sealed bytes (``ARCHIVE/<sender key id>/<message id>.rsl``,
   fsync'd; an archived file is never replaced);
3. decode the image;
4. write the derived DICOM object to the store;
5. record the receipt in the index (SQLite);
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

Errors answer ``{"error": CODE, "detail": TEXT}``:

* 400 ``malformed``: not a radseal container, or a broken one;
* 403 ``unknown_sender``: signed by a device key that is not trusted;
* 409 ``conflict``: the message id is taken by another message (another
  sender's, or the same sender's with other sealed bytes);
* 413 ``too_large``: body over the configured limit (checked while reading);
* 421 ``wrong_recipient``: sealed for another receiver key ("misdirected");
* 422 ``not_authentic``: signature or ciphertext does not verify (tampered);
  422 rather than 401, which in HTTP asks for credentials;
* 422 ``undecodable``: authentic, but the image cannot be decoded (the sealed
  bytes stay archived for a later decode);
* 503 ``store_unavailable`` / ``archive_unavailable``: the store is down or
  refusing, the archive cannot be written: the sender retries later.

Log lines name the message id, the sender key id, sizes and the outcome,
never patient data (names, ids, file names live only inside the sealed body).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from radseal.image import Image
from radseal.io.derived import derived_dataset, uncompressed_bytes
from radseal.io.dicom import encode_dicom
from radseal.seal import (
    AuthenticationError,
    FormatError,
    UnknownSenderError,
    WrongRecipientError,
    open_sealed,
)
from radseal.transport.errors import StoreError, TransportError
from radseal.transport.files import durable_write_new, file_sha256, own_private_dir, sweep_partial_files
from radseal.transport.index import OnRecord, ReceiptIndex
from radseal.transport.protocol import DUPLICATE_HEADER, HEALTH_PATH, MESSAGES_PATH
from radseal.transport.stores import Store, StoredObject

log = logging.getLogger("radseal.receiver")

DEFAULT_MAX_BODY = 64 * 1024 * 1024
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
    index: ReceiptIndex
    archive_dir: Path
    codec: Any = None
    diagnose: Diagnose | None = None
    open_image: Callable | None = None  # radseal.pipeline.open_image unless given
    max_decodes: int | None = None  # concurrent decodes (memory and CPU bound); default: CPU count
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
        header = opened.header
        sender_key_id, message_id = header.sender_key_id, header.message_id
        digest = hashlib.sha256(data).hexdigest()
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
                    result = self.open_image(data, self.keys, self.trusted, codec=self.codec)
            except Exception as exc:  # the codec's errors are many; the message stays archived
                raise Rejected(422, "undecodable", f"authentic message could not be decoded ({type(exc).__name__})") from None
            image: Image = result.image
            payload_bytes = len(result.payload)
            model_id = _model_id(result, self.codec)
            source = _source_header(result)
            ds = derived_dataset(image, source, payload_bytes=payload_bytes, model_id=model_id,
                                 uid_seed=uid_seed(sender_key_id, message_id))
            obj = StoredObject(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
            try:
                location = self.store.put(encode_dicom(ds), obj)
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


def uid_seed(sender_key_id: str, message_id: str) -> str:
    """The seed of a derived object's UIDs: the message's identity, (sender key id, message id)."""
    return f"{sender_key_id}/{message_id}"


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
    receiver's default), else the receiver codec's id, else the sender's codec name."""
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


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "malformed", "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    if size == 0:
        raise Rejected(400, "malformed", "empty body: POST the sealed container bytes")
    return b"".join(chunks)


def create_app(
    keys: Any,
    trusted: Any,
    store: Store,
    index_path: str | Path,
    *,
    archive_dir: str | Path | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    codec: Any = None,
    diagnose: Diagnose | None = None,
    open_image: Callable | None = None,
    max_decodes: int | None = None,
) -> FastAPI:
    """The receiver's ASGI app.

    ``keys``: receiver private key(s) (several during rotation); ``trusted``:
    device public keys; ``store``: a :class:`FolderStore` or
    :class:`OrthancStore`; ``index_path``: the SQLite receipt index;
    ``archive_dir``: where sealed bytes are archived (default: ``archive``
    next to the index); ``max_body``: largest accepted body in bytes;
    ``codec``: the codec for decoding (default: the pipeline's);
    ``diagnose``: optional ``Image -> dict`` hook whose result joins the
    receipt and the index (e.g. :func:`default_diagnose`);
    ``max_decodes``: how many images may be decoded at once (default: CPU count).
    """
    index_path = Path(index_path)
    receiver = Receiver(
        keys=list(keys) if isinstance(keys, Iterable) else [keys],
        trusted=list(trusted) if isinstance(trusted, Iterable) else [trusted],
        store=store,
        index=ReceiptIndex(index_path),
        archive_dir=Path(archive_dir) if archive_dir is not None else index_path.parent / "archive",
        codec=codec,
        diagnose=diagnose,
        open_image=open_image,
        max_decodes=max_decodes,
    )
    receiver.recover()
    app = FastAPI(title="radseal receiver", version=_version(), docs_url=None, redoc_url=None)
    app.state.receiver = receiver

    @app.get(HEALTH_PATH)
    async def healthz() -> dict:
        return {"status": "ok", "store": store.kind, "version": _version()}

    @app.post(MESSAGES_PATH)
    async def post_message(request: Request) -> JSONResponse:
        started = time.perf_counter()
        size = request.headers.get("content-length", "?")
        try:
            data = await _read_body(request, max_body)
            size = str(len(data))
            receipt, duplicate = await run_in_threadpool(receiver.accept, data)
        except Rejected as exc:
            log.warning("rejected status=%d error=%s bytes=%s: %s", exc.status, exc.code, size, exc.detail)
            return _error(exc.status, exc.code, exc.detail)
        log.info(
            "%s message=%s sender=%s bytes=%s ratio=%s ms=%.0f",
            "duplicate" if duplicate else "stored",
            receipt["message_id"],
            receipt["sender_key_id"],
            size,
            receipt["ratio"],
            1000 * (time.perf_counter() - started),
        )
        return JSONResponse(receipt, headers={DUPLICATE_HEADER: "true" if duplicate else "false"})

    return app


def _version() -> str:
    from radseal import __version__

    return __version__
