"""The sender: seal images into the outbox, then deliver until receipted.

    outbox = Outbox("outbox/")
    sender = Sender("https://pacs-gw.example:8443", outbox)
    enqueue_image(outbox, "chest.dcm", recipient_pub, device_key)   # sealed + committed
    result = sender.flush()                                          # sends, retries, receipts

Delivery is at-least-once on the wire and exactly-once in the store: the
sender retries a message (same sealed bytes, same message id) until a
receipt comes back that names its message id, this device's key id and the
SHA-256 of the sealed bytes it sent, and the receiver stores a message once.
A receipt that names anything else proves nothing about this message (the
message id is readable in the clear header, so another device could have
sealed its own image under it): the message is kept and set aside.

Retries use exponential backoff with full jitter (delay uniformly drawn in
``[0, min(cap, base * 2**attempt)]``), so many devices coming back after an
outage do not hammer the receiver in step. Connection errors, timeouts,
5xx and the 4xx that ask to come back later (408, 425, 429) are retried, and
so are 4xx answers that say nothing about the message (404 for a wrong URL,
401/407 from a proxy): the message stays pending. The answers that refuse
the message itself (400 malformed, 403 unknown sender, 409 conflict, 413 too
large, 421 wrong recipient, 422 not authentic or undecodable) would be the
same on every retry: the message is set aside as ``refused`` in the outbox
with the receiver's status, code and reason, sealed bytes kept, until
``radseal outbox retry`` puts it back after a fix.
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
from radseal.transport.outbox import Outbox, OutboxEntry, source_label
from radseal.transport.protocol import MESSAGE_ID_HEADER, MESSAGES_PATH

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: Answers that refuse the message itself: retrying the same bytes cannot change them.
REFUSED_STATUS = {400, 403, 409, 413, 421, 422}


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
    refused: list[tuple[str, str]] = field(default_factory=list)  # (message id, error)
    pending: list[str] = field(default_factory=list)  # message ids still in the outbox


class _Retry(Exception):
    pass


class _Refused(Exception):
    def __init__(self, status: int | None, code: str, reason: str) -> None:
        super().__init__(f"HTTP {status} {code}: {reason}" if status else f"{code}: {reason}")
        self.status, self.code, self.reason = status, code, reason


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


def check_receipt(response: httpx.Response, entry: OutboxEntry) -> dict:
    """The receipt in a 200 answer if it is for this very message, else :class:`_Refused`.

    "This very message": the receipt names our message id, our device key id
    and the SHA-256 of the sealed bytes we sent. Any other receipt (another
    device's message under our id, older bytes, a receiver that keeps no
    digest) proves nothing about ours; retrying would get the same answer, so
    the message is kept and set aside.
    """
    from radseal.seal.format import FormatError, parse_header

    try:
        receipt = response.json()
    except ValueError:
        raise _Retry("answer 200 without a JSON receipt") from None
    if not isinstance(receipt, dict):
        raise _Retry("answer 200 without a JSON receipt")
    try:
        ours = parse_header(entry.sealed).sender_key_id
    except FormatError:  # not expected: the outbox holds what the sealer made
        ours = None
    digest = hashlib.sha256(entry.sealed).hexdigest()
    for name, want in (("message_id", entry.message_id), ("sender_key_id", ours), ("sealed_sha256", digest)):
        got = receipt.get(name)
        if got != want:
            shown = "nothing" if got is None else repr(str(got)[:64])
            raise _Refused(200, "receipt_mismatch",
                           f"the receipt names {shown} as {name}, not this message's; message kept, not confirmed")
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
            return check_receipt(response, entry)
        if response.status_code in REFUSED_STATUS:
            code, reason = _error_parts(response)
            raise _Refused(response.status_code, code, reason)
        # 5xx, 408/425/429, and any other answer that is not about this message (404 for a wrong URL,
        # 401/407 from a proxy): the message stays pending and is tried again.
        raise _Retry(f"HTTP {response.status_code}: {_error_text(response)}")

    def deliver(self, entry: OutboxEntry, on_retry: Callable[[OutboxEntry, int, str, float], None] | None = None) -> dict:
        """Send one message until it is receipted; raise :class:`DeliveryError` if refused or out of attempts."""
        attempt = 0
        while True:
            try:
                receipt = self.post_once(entry)
            except _Refused as exc:
                self.outbox.mark_refused(entry.message_id, exc.status, exc.code, exc.reason)
                raise DeliveryError(
                    f"message {entry.message_id} refused ({exc}); set aside in the outbox, not sent again "
                    "until 'radseal outbox retry'"
                ) from None
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
                if self.outbox.state(entry.message_id) == "refused":
                    result.refused.append((entry.message_id, str(exc)))
                else:
                    result.pending.append(entry.message_id)
                continue
            result.delivered.append(receipt)
            if on_delivered is not None:
                on_delivered(entry, receipt)
        return result


def _error_parts(response: httpx.Response) -> tuple[str, str]:
    """(error code, reason) of a refusal: the receiver's JSON body, or the HTTP reason."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:100], " ".join(str(body.get("detail") or "").split())[:400]
    except ValueError:
        pass
    return f"http_{response.status_code}", " ".join((response.text[:200] or response.reason_phrase).split())


def _error_text(response: httpx.Response) -> str:
    code, reason = _error_parts(response)
    return f"{code}: {reason}"


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
    outbox.add(message_id, sealed.data, source_label(key), key)
    return Enqueued(message_id, str(path), len(sealed.data), int(sealed.payload_bytes), True, "pending")
