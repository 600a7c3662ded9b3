"""The sender and its outbox: durable before sending, dropped only on a matching receipt."""

from __future__ import annotations

import hashlib
import random

import httpx
import numpy as np
import pytest

from radseal.io import write_png
from radseal.image import Image
from radseal.seal import DeviceKey, ReceiverKey, parse_header
from radseal.transport.drill import BitDropCodec
from radseal.transport.errors import DeliveryError
from radseal.transport.outbox import Outbox
from radseal.transport.sender import RetryPolicy, Sender, enqueue_image, messages_url


@pytest.fixture(scope="module")
def keys():
    return ReceiverKey.generate(), DeviceKey.generate()


@pytest.fixture
def outbox_with_one(tmp_path, keys):
    receiver_key, device_key = keys
    path = tmp_path / "scan.png"
    write_png(Image(np.tile(np.arange(32, dtype=np.uint8), (32, 1))), path)
    outbox = Outbox(tmp_path / "outbox")
    queued = enqueue_image(outbox, path, receiver_key.public_key(), device_key, codec=BitDropCodec())
    return outbox, queued, path


def receipt_for(message_id: str, sealed: bytes | None = None, **changes) -> dict:
    """A receipt as the receiver writes it for ``sealed`` (sender key id and digest from the bytes)."""
    receipt = {"message_id": message_id, "sop_instance_uid": "2.25.1", "sealed_bytes": 1, "ratio": 1.0}
    if sealed is not None:
        receipt["sender_key_id"] = parse_header(sealed).sender_key_id
        receipt["sealed_sha256"] = hashlib.sha256(sealed).hexdigest()
    receipt.update(changes)
    return receipt


def scripted_sender(outbox, answers, sleeps, max_attempts=10):
    """A sender whose HTTP answers come from ``answers`` (callables of the request)."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return answers.pop(0)(request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    sender = Sender("http://receiver.test", outbox, client=client, sleep=sleeps.append,
                    retry=RetryPolicy(base=0.5, cap=4.0, max_attempts=max_attempts), rng=random.Random(1))
    return sender, seen


def test_enqueued_message_is_durable_and_survives_a_restart(outbox_with_one, tmp_path):
    outbox, queued, _ = outbox_with_one
    assert queued.new and queued.state == "pending"
    reopened = Outbox(tmp_path / "outbox")  # a new process after a crash
    [entry] = reopened.pending()
    assert entry.message_id == queued.message_id and len(entry.sealed) == queued.sealed_bytes


def test_same_input_is_not_sealed_twice(outbox_with_one, keys):
    outbox, queued, path = outbox_with_one
    again = enqueue_image(outbox, path, keys[0].public_key(), keys[1], codec=BitDropCodec())
    assert not again.new and again.message_id == queued.message_id
    forced = enqueue_image(outbox, path, keys[0].public_key(), keys[1], codec=BitDropCodec(), again=True)
    assert forced.new and forced.message_id != queued.message_id
    assert len(outbox.pending()) == 2


def test_retries_with_jittered_backoff_then_drops_on_receipt(outbox_with_one):
    outbox, queued, _ = outbox_with_one
    sleeps = []
    answers = [
        lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)),
        lambda r: httpx.Response(503, json={"error": "store_unavailable", "detail": "down"}),
        lambda r: httpx.Response(200, json=receipt_for(queued.message_id, r.content)),
    ]
    sender, seen = scripted_sender(outbox, answers, sleeps)
    result = sender.flush()
    assert [r["message_id"] for r in result.delivered] == [queued.message_id]
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2]  # the very same sealed bytes each time
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0
    assert outbox.pending() == [] and outbox.counts()["delivered"] == 1
    assert outbox.receipt(queued.message_id)["sop_instance_uid"] == "2.25.1"


def test_a_receipt_for_another_message_is_not_accepted(outbox_with_one):
    outbox, queued, _ = outbox_with_one
    answers = [lambda r: httpx.Response(200, json=receipt_for("0" * 32, r.content))] * 3
    sender, seen = scripted_sender(outbox, answers, [], max_attempts=3)
    result = sender.flush()
    assert [mid for mid, _ in result.refused] == [queued.message_id] and not result.delivered
    assert len(seen) == 1  # the same answer would come back: set aside, not retried
    assert outbox.state(queued.message_id) == "refused" and outbox.sealed(queued.message_id) == seen[0]


def test_refusal_sets_the_message_aside_without_losing_it(outbox_with_one):
    outbox, queued, _ = outbox_with_one
    answers = [lambda r: httpx.Response(403, json={"error": "unknown_sender", "detail": "not trusted"})]
    sender, seen = scripted_sender(outbox, answers, [])
    with pytest.raises(DeliveryError, match="unknown_sender"):
        sender.deliver(outbox.pending()[0])
    assert len(seen) == 1 and outbox.pending() == []
    assert outbox.counts()["refused"] == 1 and outbox.state(queued.message_id) == "refused"


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(0)
    for attempt in range(12):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        bound = min(4.0, 0.5 * 2**attempt)
        assert max(delays) <= bound and max(delays) > 0.8 * bound  # full jitter spans [0, bound]


def test_messages_url():
    assert messages_url("http://h:8700") == "http://h:8700/v1/messages"
    assert messages_url("https://h/") == "https://h/v1/messages"
    assert messages_url("https://h/custom/path") == "https://h/custom/path"
    with pytest.raises(DeliveryError):
        messages_url("ftp://h")
