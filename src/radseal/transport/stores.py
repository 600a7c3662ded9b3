"""Where a receiver keeps the DICOM objects it derives: a folder, Orthanc, or any PACS.

* :class:`FolderStore` – a folder tree (``--store DIR``);
* :class:`OrthancStore` – Orthanc's REST API (``--store orthanc+http://host:port``);
* :class:`DicomStore` – any PACS through DICOM C-STORE (``--store dicom://AE@host:port``);
* :class:`DicomWebStore` – any PACS through DICOMweb STOW-RS
  (``--store dicomweb+http://host:port/path``).

The stores are idempotent by SOP Instance UID: putting the same object a
second time (a retried message, a receiver restarted half way) leaves one
object. The receiver makes that UID a function of (sender key id, message
id), so a message is stored once however often it is processed, and no
device can name another device's object.

Folder layout (``FolderStore``)::

    ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

written through a temporary ``.…part`` file, fsync'd and renamed; a UID that
is not a plain dotted-decimal UID (a hostile header) is replaced by a hash.
Folders the store creates are ``0700`` and files ``0600`` (they hold patient
data); a store root that exists already keeps its mode.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from radseal.transport.errors import StoreError
from radseal.transport.files import durable_write, partial_files, private_mkdir, sweep_partial_files

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class StoredObject:
    """Identifiers of one DICOM object to store."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str


class Store(Protocol):
    """The interface the receiver needs from a store."""

    kind: str

    def put(self, dicom: bytes, obj: StoredObject) -> str:
        """Store the encoded DICOM object; return where it went (idempotent by SOP Instance UID)."""

    def count(self) -> int:
        """Number of objects stored."""

    def get(self, sop_instance_uid: str) -> bytes | None:
        """The stored object's bytes, or None."""

    def recover(self) -> list[str]:
        """Clean up after a crash (partial files); return what was removed."""


def _safe_component(uid: str) -> str:
    uid = str(uid).strip()
    if len(uid) <= 64 and _UID_RE.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:32]


class FolderStore:
    """DICOM files in a folder tree (the default store; nothing to install)."""

    kind = "folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            private_mkdir(self.root)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store folder ({exc.strerror or exc})") from None

    def path_for(self, obj: StoredObject) -> Path:
        return (
            self.root
            / _safe_component(obj.study_uid)
            / _safe_component(obj.series_uid)
            / f"{_safe_component(obj.sop_instance_uid)}.dcm"
        )

    def put(self, dicom: bytes, obj: StoredObject) -> str:
        path = self.path_for(obj)
        try:
            durable_write(path, dicom)
        except OSError as exc:
            raise StoreError(f"folder store: cannot write an object ({exc.strerror or exc})") from None
        return str(path.relative_to(self.root))

    def files(self) -> list[Path]:
        return sorted(self.root.glob("*/*/*.dcm"))

    def count(self) -> int:
        return len(self.files())

    def get(self, sop_instance_uid: str) -> bytes | None:
        matches = list(self.root.glob(f"*/*/{_safe_component(sop_instance_uid)}.dcm"))
        return matches[0].read_bytes() if matches else None

    def recover(self) -> list[str]:
        return [str(p) for p in sweep_partial_files(self.root)]

    def partial_files(self) -> list[Path]:
        return partial_files(self.root)

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"


class OrthancStore:
    """An Orthanc PACS through its REST API (``POST /instances``).

    Orthanc names an instance by a hash of its patient, study, series and SOP
    Instance UIDs, so posting the same object twice answers ``AlreadyStored``
    with the same id: storing is idempotent.
    """

    kind = "orthanc"

    def __init__(self, url: str, *, timeout: float = 30.0, auth: tuple[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout, auth=auth)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreError(f"Orthanc at {self.url} is unreachable ({type(exc).__name__}: {exc})") from None
        return response

    def put(self, dicom: bytes, obj: StoredObject) -> str:
        response = self._request("POST", "/instances", content=dicom, headers={"Content-Type": "application/dicom"})
        if response.status_code != 200:
            raise StoreError(f"Orthanc refused the object: HTTP {response.status_code} {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError:
            raise StoreError("Orthanc answered POST /instances with something other than JSON") from None
        if isinstance(answer, list):  # older Orthanc versions answer a list for a single upload too
            answer = answer[0] if answer else {}
        status = answer.get("Status")
        if status not in ("Success", "AlreadyStored") or "ID" not in answer:
            raise StoreError(f"Orthanc did not store the object (status {status!r})")
        return f"orthanc:{answer['ID']}"

    def check(self) -> str:
        """Orthanc's version, or :class:`StoreError` when it does not answer as Orthanc."""
        response = self._request("GET", "/system")
        if response.status_code != 200:
            raise StoreError(f"Orthanc at {self.url}: GET /system answered HTTP {response.status_code}")
        try:
            return str(response.json()["Version"])
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.url} does not answer like Orthanc (GET /system)") from None

    def count(self) -> int:
        response = self._request("GET", "/statistics")
        if response.status_code != 200:
            raise StoreError(f"Orthanc GET /statistics: HTTP {response.status_code}")
        return int(response.json()["CountInstances"])

    def find(self, sop_instance_uid: str) -> list[str]:
        query = {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}
        response = self._request("POST", "/tools/find", json=query)
        if response.status_code != 200:
            raise StoreError(f"Orthanc /tools/find: HTTP {response.status_code}")
        return list(response.json())

    def get(self, sop_instance_uid: str) -> bytes | None:
        ids = self.find(sop_instance_uid)
        if not ids:
            return None
        response = self._request("GET", f"/instances/{ids[0]}/file")
        return response.content if response.status_code == 200 else None

    def recover(self) -> list[str]:
        return []  # Orthanc keeps its own storage consistent

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"OrthancStore({self.url!r})"


#: C-STORE statuses that mean "stored": Success and the Warnings (coercion, elements discarded, mismatch).
_STORED_STATUS = {0x0000, 0xB000, 0xB006, 0xB007}
DEFAULT_CALLING_AE = "RADSEAL"


class DicomStore:
    """Any PACS through DICOM C-STORE (pynetdicom as SCU), one association per object.

    ``dicom://CALLED_AE@host:port`` (``?calling=AE`` sets this receiver's AE
    title, default ``RADSEAL``; the PACS must know it). A PACS keeps one
    object per SOP Instance UID, so storing again is idempotent. A refused
    association, a lost connection or a failure status is a
    :class:`~radseal.transport.errors.StoreError`: the receiver answers 503
    and the sender retries later.
    """

    kind = "dicom"

    def __init__(self, host: str, port: int, called_ae: str, *, calling_ae: str = DEFAULT_CALLING_AE,
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.called_ae, self.calling_ae = host, int(port), called_ae, calling_ae
        self.timeout = timeout

    def _associate(self, contexts: list[tuple[str, str | None]]):
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for abstract, syntax in contexts:
            ae.add_requested_context(abstract, syntax) if syntax else ae.add_requested_context(abstract)
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise StoreError(f"DICOM store {self}: association {why}")
        return assoc

    def put(self, dicom: bytes, obj: StoredObject) -> str:
        import io

        import pydicom

        ds = pydicom.dcmread(io.BytesIO(dicom))
        assoc = self._associate([(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))])
        try:
            status = assoc.send_c_store(ds)
        except Exception as exc:  # noqa: BLE001 - pynetdicom raises several types on a lost connection
            raise StoreError(f"DICOM store {self}: C-STORE failed ({type(exc).__name__}: {exc})") from None
        finally:
            if assoc.is_established:
                assoc.release()
        if not status or "Status" not in status:
            raise StoreError(f"DICOM store {self}: no answer to C-STORE (connection lost or timed out)")
        code = int(status.Status)
        if code not in _STORED_STATUS:
            comment = str(status.get("ErrorComment", "")).strip()
            raise StoreError(f"DICOM store {self}: C-STORE failed with status 0x{code:04X}"
                             + (f" ({comment})" if comment else ""))
        return f"dicom:{self.called_ae}/{obj.sop_instance_uid}"

    def check(self) -> str:
        """C-ECHO; :class:`StoreError` when the PACS does not answer."""
        assoc = self._associate([("1.2.840.10008.1.1", None)])
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        if not status or int(status.get("Status", -1)) != 0:
            raise StoreError(f"DICOM store {self}: C-ECHO failed")
        return "C-ECHO ok"

    def count(self) -> int:
        raise StoreError("a dicom:// store cannot count its objects; ask the PACS")

    def get(self, sop_instance_uid: str) -> bytes | None:
        raise StoreError("a dicom:// store cannot read objects back; ask the PACS")

    def recover(self) -> list[str]:
        return []  # the PACS keeps its own storage consistent

    def __str__(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"DicomStore('dicom://{self}', calling_ae={self.calling_ae!r})"


class DicomWebStore:
    """Any PACS through DICOMweb: STOW-RS to store, QIDO-RS and WADO-RS to read back.

    ``dicomweb+http(s)://host:port/path`` stores with ``POST /path/studies``
    (``multipart/related; type="application/dicom"``, one part). The answer's
    Failed SOP Sequence, a non-2xx status or a connection error is a
    :class:`~radseal.transport.errors.StoreError` (the receiver answers 503).
    """

    kind = "dicomweb"

    def __init__(self, url: str, *, timeout: float = 30.0, auth: tuple[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout, auth=auth)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreError(f"DICOMweb at {self.url} is unreachable ({type(exc).__name__}: {exc})") from None

    def put(self, dicom: bytes, obj: StoredObject) -> str:
        import secrets

        boundary = f"radseal-{secrets.token_hex(16)}"
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + dicom
                + f"\r\n--{boundary}--\r\n".encode())
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}
        response = self._request("POST", "/studies", content=body, headers=headers)
        if response.status_code not in (200, 202):
            raise StoreError(f"DICOMweb STOW-RS refused the object: HTTP {response.status_code} {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, list):
            answer = answer[0] if answer else None
        if not isinstance(answer, dict):
            raise StoreError("DICOMweb STOW-RS answered without a JSON store response")
        if (answer.get("00081198") or {}).get("Value"):  # Failed SOP Sequence
            raise StoreError(f"DICOMweb STOW-RS did not store the object: {str(answer['00081198'])[:200]}")
        stored = [item.get("00081155", {}).get("Value", [None])[0]  # Referenced SOP Instance UID
                  for item in (answer.get("00081199") or {}).get("Value") or []]
        if obj.sop_instance_uid not in stored:
            raise StoreError("DICOMweb STOW-RS answer does not list the object as stored")
        return f"dicomweb:{obj.sop_instance_uid}"

    def _find(self, **query: str) -> list[dict]:
        response = self._request("GET", "/instances", params=query, headers={"Accept": "application/dicom+json"})
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise StoreError(f"DICOMweb QIDO-RS: HTTP {response.status_code}")
        return list(response.json() or [])

    def check(self) -> str:
        """A QIDO-RS query that finds nothing; :class:`StoreError` when the service does not answer."""
        self._find(SOPInstanceUID="1.2.3.4.5.6.7.8.9")
        return "QIDO-RS ok"

    def count(self) -> int:
        return len(self._find())

    def get(self, sop_instance_uid: str) -> bytes | None:
        import email.parser
        import email.policy

        found = self._find(SOPInstanceUID=sop_instance_uid)
        if not found:
            return None
        study, series = (found[0].get(tag, {}).get("Value", [""])[0] for tag in ("0020000D", "0020000E"))
        response = self._request(
            "GET", f"/studies/{study}/series/{series}/instances/{sop_instance_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        if response.status_code != 200:
            return None
        head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
        parts = [part.get_payload(decode=True) for part in message.iter_parts()] if message.is_multipart() else []
        return parts[0] if parts else None

    def recover(self) -> list[str]:
        return []

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"DicomWebStore({self.url!r})"


def _dicom_store(text: str) -> DicomStore:
    """``dicom://CALLED_AE@host:port[?calling=AE]``."""
    from urllib.parse import parse_qs, urlsplit

    usage = f"store {text!r}: use dicom://CALLED_AE@host:port (optionally ?calling=AE)"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise StoreError(usage) from None
    called = parts.username or ""
    calling = (parse_qs(parts.query, keep_blank_values=True).get("calling") or [DEFAULT_CALLING_AE])[0]
    for title in (called, calling):
        if not 1 <= len(title) <= 16 or not all(" " <= c <= "~" and c != "\\" for c in title):
            raise StoreError(f"{usage}; AE titles are 1 to 16 printable ASCII characters")
    if not parts.hostname or port is None:
        raise StoreError(usage)
    return DicomStore(parts.hostname, port, called, calling_ae=calling)


def open_store(spec: str | Path) -> Store:
    """A store from a command-line spec: a folder path, ``orthanc+http(s)://host:port``,
    ``dicom://AE@host:port`` or ``dicomweb+http(s)://host:port/path``."""
    text = str(spec)
    if text.startswith("dicom://"):
        return _dicom_store(text)
    if text.startswith(("dicomweb+http://", "dicomweb+https://")):
        url = httpx.URL(text[len("dicomweb+") :])
        auth = None
        if url.username:
            auth = (url.username, url.password or "")
            url = url.copy_with(username=None, password=None)
        return DicomWebStore(str(url), auth=auth)
    if text.startswith(("orthanc+http://", "orthanc+https://")):
        url = httpx.URL(text[len("orthanc+") :])
        auth = None
        if url.username:
            auth = (url.username, url.password or "")
            url = url.copy_with(username=None, password=None)
        return OrthancStore(str(url), auth=auth)
    if "://" in text:
        raise StoreError(f"unknown store {text!r}: use a folder path, orthanc+http://host:port, "
                         "dicom://AE@host:port or dicomweb+http://host:port/path")
    return FolderStore(text)
