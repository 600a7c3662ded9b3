"""Getting sealed radiographs from edge devices into a hospital's storage.

* :mod:`~radseal.transport.receiver` – the ASGI receiver (``create_app``);
* :mod:`~radseal.transport.stores` – where objects go (folder, Orthanc);
* :mod:`~radseal.transport.index` – the receiver's SQLite receipt index;
* :mod:`~radseal.transport.outbox`, :mod:`~radseal.transport.sender` – the
  device side: a durable outbox and a retrying sender;
* :mod:`~radseal.transport.drill` – fault drills (flaky proxy, killable receiver).

Deployment notes are in docs/deploy.md.
"""

from radseal.transport.errors import DeliveryError, OutboxError, StoreError, TransportError
from radseal.transport.index import ReceiptIndex
from radseal.transport.outbox import Outbox
from radseal.transport.receiver import create_app, default_diagnose
from radseal.transport.sender import RetryPolicy, Sender, enqueue_image
from radseal.transport.stores import FolderStore, OrthancStore, StoredObject, open_store

__all__ = [
    "DeliveryError",
    "FolderStore",
    "OrthancStore",
    "Outbox",
    "OutboxError",
    "ReceiptIndex",
    "RetryPolicy",
    "Sender",
    "StoreError",
    "StoredObject",
    "TransportError",
    "create_app",
    "default_diagnose",
    "enqueue_image",
    "open_store",
]
