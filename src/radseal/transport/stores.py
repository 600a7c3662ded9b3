"""Where a receiver keeps the DICOM objects it derives: a folder, or Orthanc.

Both stores are idempotent by SOP Instance UID: putting the same object a
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


def open_store(spec: str | Path) -> Store:
    """A store from a command-line spec: a folder path, or ``orthanc+http(s)://host:port``."""
    text = str(spec)
    if text.startswith(("orthanc+http://", "orthanc+https://")):
        url = httpx.URL(text[len("orthanc+") :])
        auth = None
        if url.username:
            auth = (url.username, url.password or "")
            url = url.copy_with(username=None, password=None)
        return OrthancStore(str(url), auth=auth)
    if "://" in text:
        raise StoreError(f"unknown store {text!r}: use a folder path or orthanc+http://host:port")
    return FolderStore(text)
