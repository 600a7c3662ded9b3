"""The sender: seal images into the outbox, then deliver until receipted.

    outbox = Outbox("outbox/")
    sender = Sender("https://pacs-gw.example:8443", outbox)
    enqueue_image(outbox, "chest.dcm", recipient_pub, device_key)   # sealed + committed
    result = sender.flush()                                          # sends, retries, receipts

Delivery is at-least-once on the wire and exactly-once in the store: the
sender retries a message (same sealed bytes, same message id) until a
receipt naming that id comes back, and the receiver stores a message id once.

Retries use exponential backoff with full jitter (delay uniformly drawn in
``[0, min(cap, base * 2**attempt)]``), so many devices coming back after an
outage do not hammer the receiver in step. Connection errors, timeouts,
408, 425, 429 and 5xx are retried; other 4xx answers mean the receiver will
never take this message (unknown sender, tampered, ...) and it is set aside
as ``rejected`` in the outbox, sealed bytes kept.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from radseal.transport.errors import DeliveryError
from radseal.transport.outbox import Outbox, OutboxEntry
from radseal.transport.protocol import MESSAGE_ID_HEADER, MESSAGES_PATH

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter. ``max_attempts=None`` retries for ever."""

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = 10

    def delay(self, attempt: int, rng: random.Random = random._inst) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * (2.0**attempt)))


@dataclass
class FlushResult:
    delivered: list[dict] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (message id, error)
    pending: list[str] = field(default_factory=list)  # message ids still in the outbox


class _Retry(Exception):
    pass


class _Refused(Exception):
    pass


def messages_url(url: str) -> str:
    """The POST endpoint for a receiver URL given with or without its path."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DeliveryError(f"receiver URL {url!r} is malformed ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise DeliveryError(f"receiver URL {url!r} must start with http:// or https://")
    if not parsed.host:
        raise DeliveryError(f"receiver URL {url!r} names no host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise DeliveryError(f"receiver URL {url!r}: port must be in 1..65535")
    if parsed.path in ("", "/"):
        return str(parsed.copy_with(path=MESSAGES_PATH))
    return str(parsed)


def check_receipt(response: httpx.Response, message_id: str) -> dict:
    """The receipt in a 200 answer, if it names our message; else raise to retry."""
    try:
        receipt = response.json()
    except ValueError:
        raise _Retry("answer 200 without a JSON receipt") from None
    if not isinstance(receipt, dict) or receipt.get("message_id") != message_id:
        raise _Retry("receipt names another message")
    if not receipt.get("sop_instance_uid"):
        raise _Retry("receipt without a stored SOP Instance UID")
    return receipt


class Sender:
    """Delivers the outbox's pending messages to one receiver."""

    def __init__(
        self,
        url: str,
        outbox: Outbox,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        verify: bool | str = True,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.url = messages_url(url)
        self.outbox = outbox
        self.retry = retry
        self._client = client or httpx.Client(timeout=timeout, verify=verify)
        self._sleep = sleep
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def post_once(self, entry: OutboxEntry) -> dict:
        """One POST; the receipt, or :class:`_Retry` / :class:`_Refused`."""
        try:
            response = self._client.post(
                self.url,
                content=entry.sealed,
                # The id is also inside the container; in a header, a load balancer can route on it.
                headers={"Content-Type": "application/octet-stream", MESSAGE_ID_HEADER: entry.message_id},
            )
        except httpx.HTTPError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        if response.status_code == 200:
            return check_receipt(response, entry.message_id)
        detail = _error_text(response)
        if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}: {detail}")
        raise _Refused(f"HTTP {response.status_code}: {detail}")

    def deliver(self, entry: OutboxEntry, on_retry: Callable[[OutboxEntry, int, str, float], None] | None = None) -> dict:
        """Send one message until it is receipted; raise :class:`DeliveryError` if refused or out of attempts."""
        attempt = 0
        while True:
            try:
                receipt = self.post_once(entry)
            except _Refused as exc:
                self.outbox.mark_rejected(entry.message_id, str(exc))
                raise DeliveryError(f"message {entry.message_id} refused by the receiver: {exc}") from None
            except _Retry as exc:
                self.outbox.record_attempt(entry.message_id, str(exc))
                attempt += 1
                if self.retry.max_attempts is not None and attempt >= self.retry.max_attempts:
                    raise DeliveryError(
                        f"message {entry.message_id} not delivered after {attempt} attempts ({exc}); "
                        "it stays in the outbox"
                    ) from None
                delay = self.retry.delay(attempt - 1, self._rng)
                if on_retry is not None:
                    on_retry(entry, attempt, str(exc), delay)
                self._sleep(delay)
                continue
            self.outbox.mark_delivered(entry.message_id, receipt)
            return receipt

    def flush(
        self,
        on_delivered: Callable[[OutboxEntry, dict], None] | None = None,
        on_retry: Callable[[OutboxEntry, int, str, float], None] | None = None,
        on_failed: Callable[[OutboxEntry, str], None] | None = None,
    ) -> FlushResult:
        """Deliver every pending message, oldest first."""
        result = FlushResult()
        for entry in self.outbox.pending():
            try:
                receipt = self.deliver(entry, on_retry)
            except DeliveryError as exc:
                if on_failed is not None:
                    on_failed(entry, str(exc))
                if self.outbox.state(entry.message_id) == "rejected":
                    result.rejected.append((entry.message_id, str(exc)))
                else:
                    result.pending.append(entry.message_id)
                continue
            result.delivered.append(receipt)
            if on_delivered is not None:
                on_delivered(entry, receipt)
        return result


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{body.get('error')}: {body.get('detail')}"
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason_phrase


def source_key(data: bytes, recipient_key_id: str) -> str:
    """What identifies "this input for this receiver": the file's SHA-256 and the recipient key id."""
    return f"{hashlib.sha256(data).hexdigest()}:{recipient_key_id}"


@dataclass(frozen=True)
class Enqueued:
    message_id: str
    source: str
    sealed_bytes: int
    payload_bytes: int
    new: bool  # False: this input was already in the outbox (pending or delivered)
    state: str


def enqueue_image(
    outbox: Outbox,
    path: str | Path,
    recipient: Any,
    signer: Any,
    *,
    codec: Any = None,
    quality: float | None = None,
    again: bool = False,
    seal_image: Callable | None = None,
) -> Enqueued:
    """Read, compress and seal one image file and commit it to the outbox.

    An input already in the outbox for this recipient (same bytes) is not
    sealed again unless ``again``: a rerun after a crash resumes instead of
    sending duplicates.
    """
    from radseal.io import read_image
    from radseal.seal.format import parse_header

    if seal_image is None:
        from radseal.pipeline import seal_image
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        from radseal.errors import ImageReadError

        raise ImageReadError(f"{path}: {exc.strerror or exc}") from None
    key = source_key(data, recipient.key_id)
    if not again:
        known = outbox.find_source(key)
        if known is not None:
            return Enqueued(known[0], str(path), 0, 0, False, known[1])
    img = read_image(path)
    kwargs = {"codec": codec} if codec is not None else {}
    if quality is not None:
        kwargs["quality"] = quality
    sealed = seal_image(img, recipient, signer, **kwargs)
    message_id = parse_header(sealed.data).message_id
    outbox.add(message_id, sealed.data, str(path), key)
    return Enqueued(message_id, str(path), len(sealed.data), int(sealed.payload_bytes), True, "pending")
