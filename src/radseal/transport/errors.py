"""Errors of the transport layer (receiver, stores, sender, outbox)."""

from __future__ import annotations

from radseal.errors import RadsealError


class TransportError(RadsealError):
    """Base class of transport errors."""


class StoreError(TransportError):
    """A store could not take or report an object (disk full, PACS down or refusing)."""


class OutboxError(TransportError):
    """The sender's outbox cannot be opened or written."""


class DeliveryError(TransportError):
    """A message could not be delivered: refused by the receiver, or retries exhausted."""
