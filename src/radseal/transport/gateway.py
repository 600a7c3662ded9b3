"""The edge gateway: a DICOM Storage SCP in front of the outbox.

A modality (an X-ray unit, a CR reader) pushes each image with C-STORE. For
each instance the gateway reads it (:func:`radseal.io.dicom.read_dicom`, from
the bytes received, no temporary file), compresses and seals it for the
receiver and commits it to the durable outbox (SQLite, ``synchronous=FULL``:
the commit is fsync'd). Only then does it answer Success (0x0000): "Success"
means "committed to the outbox", and a gateway killed right after still
delivers the message once it is restarted. Delivery runs beside the SCP,
exactly as ``radseal send`` does it (the same :class:`~radseal.transport.sender.Sender`:
retries with backoff, refusals set aside in the outbox).

An instance that is sent again (a modality that lost the answer to a crash
resends its batch) is recognised by the SHA-256 of the bytes received and
answered Success without a second message: the receiver stores it once.

An instance that cannot be taken is answered with a DICOM failure status and
an Error Comment, never dropped silently:

* 0xA900 (data set does not match SOP class): the data set's SOP Class or
  SOP Instance UID differs from the C-STORE request's;
* 0xC000 (cannot understand): not a readable image, or one radseal does not
  handle (colour, multi-frame, pixel data that does not decode, more pixels
  than ``max_pixels``, checked before the pixel data is decoded);
* 0xA700 (out of resources): the outbox cannot be written (disk full).

Calling AE titles outside ``allow_ae`` are rejected at association
(pynetdicom's ``require_calling_aet``), and so is a called AE title other
than the gateway's own.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radseal.errors import RadsealError
from radseal.transport.errors import OutboxError
from radseal.transport.outbox import Outbox, source_label
from radseal.transport.sender import RetryPolicy, Sender, source_key

log = logging.getLogger("radseal.gateway")

#: Storage SOP classes of projection radiography (and Secondary Capture) the gateway accepts.
STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.3": "Digital Intra-Oral X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "Digital Intra-Oral X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
}

#: Transfer syntaxes radseal reads (pydicom with the pylibjpeg decoders of the core install).
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old units)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (12 bit)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
_COMMENT_CHARS = 64  # Error Comment is LO: at most 64 characters


@dataclass(frozen=True)
class Accepted:
    """What the gateway did with one C-STORE."""

    status: int
    comment: str = ""
    message_id: str | None = None
    new: bool = False
    sealed_bytes: int = 0


class Gateway:
    """Seal what arrives over DICOM into the outbox; deliver the outbox to one receiver."""

    def __init__(
        self,
        outbox: Outbox,
        recipient: Any,
        signer: Any,
        *,
        to: str,
        ae_title: str = "RADSEAL",
        allow_ae: Iterable[str] | None = None,
        codec: Any = None,
        quality: int | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        verify: bool | Any = True,
        idle_poll: float = 30.0,
        max_pixels: int | None = None,
        retain_delivered: float = 7 * 86400.0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        from pynetdicom import AE, evt

        if codec is None:
            from radseal.pipeline import default_codec

            codec = default_codec()
        self.outbox = outbox
        self.recipient = recipient
        self.signer = signer
        self.codec = codec
        self.quality = quality
        self.retry = retry
        self.idle_poll = idle_poll
        if max_pixels is None:
            from radseal.image import DEFAULT_MAX_PIXELS

            max_pixels = DEFAULT_MAX_PIXELS
        self.max_pixels = int(max_pixels)
        self.retain_delivered = float(retain_delivered)
        self._report = report or (lambda line: log.info("%s", line))
        # One attempt per message per pass: a message that fails waits for the next pass,
        # so one unreachable receiver does not hold up the SCP or the other messages.
        self.sender = Sender(to, outbox, retry=RetryPolicy(retry.base, retry.cap, 1), timeout=timeout, verify=verify)
        self._seal_lock = threading.Lock()  # one instance at a time: find, seal and commit
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._server = None

        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        allowed = [a.strip() for a in (allow_ae or []) if a.strip()]
        if allowed:
            ae.require_calling_aet = allowed
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO)
        self.ae = ae
        self._handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_REJECTED, self._on_rejected),
        ]

    # ------------------------------------------------------------------ SCP

    def start(self, host: str = "127.0.0.1", port: int = 11112) -> int:
        """Start listening (in pynetdicom's threads); return the port."""
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=self._handlers)
        return int(self._server.socket.getsockname()[1])

    def _on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.ae_title).strip()
        allowed = self.ae.require_calling_aet
        why = (f"calling AE {calling!r} is not in --allow-ae" if allowed and calling not in allowed
               else f"called AE title is not {str(self.ae.ae_title).strip()!r}")
        self._report(f"refused association from {requestor.address}: {why}")

    def _on_store(self, event) -> Any:
        from pydicom.dataset import Dataset

        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            result = self.accept(
                event.encoded_dataset(include_meta=True),
                sop_class=str(event.request.AffectedSOPClassUID),
                sop_instance=str(event.request.AffectedSOPInstanceUID),
                calling_ae=calling,
            )
        except Exception as exc:  # noqa: BLE001 - a bug must still answer a failure, not drop the instance
            result = Accepted(CANNOT_UNDERSTAND, f"internal error: {type(exc).__name__}")
            self._report(f"failed  C-STORE from {calling}: {type(exc).__name__}: {exc} (this is a bug in radseal)")
        answer = Dataset()
        answer.Status = result.status
        if result.status != SUCCESS:
            answer.ErrorComment = result.comment[:_COMMENT_CHARS]
            self._report(f"failed  C-STORE from {calling}: 0x{result.status:04X} {result.comment}")
        elif result.new:
            self._report(f"sealed  C-STORE from {calling}: message {result.message_id}, {result.sealed_bytes} bytes")
            self._wake.set()
        else:
            self._report(f"known   C-STORE from {calling}: already in the outbox as message {result.message_id}")
        return answer

    def accept(self, data: bytes, *, sop_class: str, sop_instance: str, calling_ae: str = "") -> Accepted:
        """Read, seal and commit one received instance (Part 10 bytes); the status to answer."""
        from radseal.io.dicom import read_dicom
        from radseal.pipeline import seal_image
        from radseal.seal.format import parse_header

        key = source_key(data, self.recipient.key_id)
        with self._seal_lock:
            try:
                known = self.outbox.find_source(key)
            except (OutboxError, sqlite3.Error) as exc:
                self._report(f"error   the outbox cannot be read: {exc}")
                return Accepted(OUT_OF_RESOURCES, "cannot read the outbox")
            if known is not None:
                return Accepted(SUCCESS, message_id=known[0])
            name = Path(f"{sop_instance or 'instance'}.dcm")
            too_large = self._too_large(data)
            if too_large:
                return Accepted(CANNOT_UNDERSTAND, too_large)
            try:
                img = read_dicom(name, data)
            except RadsealError as exc:
                return Accepted(CANNOT_UNDERSTAND, _reason(str(exc), name))
            ds = img.source
            got_class, got_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
            if got_class != sop_class:
                return Accepted(DATASET_MISMATCH, f"SOP Class UID {got_class or 'missing'} is not the request's")
            if got_instance != sop_instance:
                return Accepted(DATASET_MISMATCH, "SOP Instance UID differs from the request's")
            try:
                kwargs = {"quality": self.quality} if self.quality is not None else {}
                sealed = seal_image(img, self.recipient, self.signer, codec=self.codec, **kwargs)
            except (RadsealError, ValueError) as exc:
                return Accepted(CANNOT_UNDERSTAND, _reason(f"cannot compress: {exc}", name))
            message_id = parse_header(sealed.data).message_id
            try:
                self.outbox.add(message_id, sealed.data, source_label(key), key)
            except OutboxError as exc:
                self._report(f"error   {exc}")
                return Accepted(OUT_OF_RESOURCES, "cannot commit to the outbox")
        return Accepted(SUCCESS, message_id=message_id, new=True, sealed_bytes=len(sealed.data))

    def _too_large(self, data: bytes) -> str | None:
        """Why the image is too large to decode (Rows x Columns over ``max_pixels``), read before its pixels."""
        import io

        import pydicom

        try:
            head = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            rows, columns = int(head.get("Rows", 0) or 0), int(head.get("Columns", 0) or 0)
        except Exception:  # noqa: BLE001 - read_dicom says what is wrong with an unreadable header
            return None
        if rows * columns > self.max_pixels:
            return f"image {columns}x{rows} is larger than {self.max_pixels} pixels"
        return None

    # ------------------------------------------------------------------ delivery

    def deliver_forever(self) -> None:
        """Deliver the outbox until :meth:`stop`: at once when an instance arrives, with
        backoff while the receiver does not answer, and every ``idle_poll`` seconds."""
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            result = self.sender.flush(
                on_delivered=lambda e, r: self._report(
                    f"stored  message {e.message_id} as {r['sop_instance_uid']} ({len(e.sealed)} bytes sent, "
                    f"{float(r.get('ratio') or 0):.1f}:1)"),
                on_failed=self._on_failed,
            )
            if result.pending:
                failures += 1
                self._stop.wait(self.retry.delay(min(failures - 1, 30)))
            else:
                failures = 0
                # Delivered records let a resent instance be recognised; past retention they go.
                self.outbox.purge_delivered(self.retain_delivered)
                self._wake.wait(self.idle_poll)

    def _on_failed(self, entry, error: str) -> None:
        refused = self.outbox.state(entry.message_id) == "refused"
        self._report(f"{'refused' if refused else 'retry  '} message {entry.message_id}: {error}")

    def stop(self) -> None:
        """Stop listening and delivering (messages committed stay in the outbox)."""
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.sender.close()


def _reason(text: str, name: Path) -> str:
    """An Error Comment: the reason without the stand-in file name."""
    text = " ".join(text.split())
    prefix = f"{name}: "
    return text[len(prefix):] if text.startswith(prefix) else text
