"""The receiver app: order of steps, receipts, duplicates, every kind of refusal."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from radseal.image import Image
from radseal.pipeline import open_image, seal_image
from radseal.seal import DeviceKey, ReceiverKey, parse_header
from radseal.transport.drill import BitDropCodec, drill_images
from radseal.transport.index import ReceiptIndex
from radseal.transport.receiver import Receiver, create_app
from radseal.transport.stores import FolderStore, OrthancStore

PATIENT_NAME = "CompressedSamples"  # RG3's Patient's Name: must never reach a log line


@pytest.fixture(scope="module")
def keys():
    return ReceiverKey.generate(), DeviceKey.generate()


@pytest.fixture(scope="module")
def codec():
    return BitDropCodec()


@pytest.fixture(scope="module")
def images():
    return drill_images(5, size=48, seed=3)  # 4 DICOM crops of RG3, one 8-bit image without DICOM


@pytest.fixture
def setup(tmp_path, keys, codec):
    receiver_key, device_key = keys
    store = FolderStore(tmp_path / "store")

    def make(**kwargs):
        kwargs.setdefault("codec", codec)
        app = create_app(receiver_key, [device_key.public_key()], kwargs.pop("store", store),
                         tmp_path / "state" / "index.sqlite", **kwargs)
        return TestClient(app)

    return make, store, tmp_path


def seal(img, keys, codec, **kwargs):
    receiver_key, device_key = keys
    return seal_image(img, kwargs.pop("recipient", receiver_key.public_key()), kwargs.pop("signer", device_key),
                      codec=codec).data


def nothing_stored(store, tmp_path):
    index = ReceiptIndex(tmp_path / "state" / "index.sqlite")
    archive = list((tmp_path / "state" / "archive").glob("*"))
    return store.count() == 0 and index.count() == 0 and not archive


def test_health(setup):
    make, _, _ = setup
    answer = make().get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_message_is_archived_decoded_stored_indexed_then_receipted(setup, keys, codec, images):
    make, store, tmp_path = setup
    data = seal(images[0], keys, codec)
    answer = make().post("/v1/messages", content=data, headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    message_id = parse_header(data).message_id
    assert receipt["message_id"] == message_id
    assert receipt["sealed_bytes"] == len(data)
    assert receipt["uncompressed_bytes"] == 48 * 48 * 2
    assert receipt["ratio"] == pytest.approx(48 * 48 * 2 / len(data), rel=1e-3)
    assert receipt["model_id"] == codec.model_id
    sender_key_id = keys[1].public_key().key_id
    assert receipt["sender_key_id"] == sender_key_id and receipt["sealed_sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "state" / "archive" / sender_key_id / f"{message_id}.rsl").read_bytes() == data
    assert ReceiptIndex(tmp_path / "state" / "index.sqlite").get(message_id) == receipt
    ds = pydicom.dcmread(io.BytesIO(store.get(receipt["sop_instance_uid"])))
    local = open_image(data, keys[0], keys[1].public_key(), codec=codec)
    assert np.array_equal(ds.pixel_array, local.image.pixels)
    source = images[0].source
    assert ds.PatientName == source.PatientName and ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesInstanceUID == source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.LossyImageCompression == "01" and ds.ImageType[0] == "DERIVED"
    assert store.files()[0].relative_to(store.root).parts[:2] == (source.StudyInstanceUID, source.SeriesInstanceUID)


def test_image_without_dicom_is_stored_as_secondary_capture(setup, keys, codec, images):
    make, store, _ = setup
    answer = make().post("/v1/messages", content=seal(images[4], keys, codec))
    assert answer.status_code == 200, answer.text
    ds = pydicom.dcmread(io.BytesIO(store.get(answer.json()["sop_instance_uid"])))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.LossyImageCompression == "01"


def test_duplicate_gets_the_same_receipt_and_is_stored_once(setup, keys, codec, images):
    make, store, tmp_path = setup
    client = make()
    data = seal(images[1], keys, codec)
    first = client.post("/v1/messages", content=data)
    second = client.post("/v1/messages", content=data)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.headers["Radseal-Duplicate"] == "false" and second.headers["Radseal-Duplicate"] == "true"
    # A receiver restarted on the same state still knows the message.
    third = make().post("/v1/messages", content=data)
    assert third.json() == first.json()
    assert store.count() == 1 and ReceiptIndex(tmp_path / "state" / "index.sqlite").count() == 1


def test_concurrent_duplicates_in_one_and_in_two_receivers(tmp_path, keys, codec, images):
    receiver_key, device_key = keys
    store = FolderStore(tmp_path / "store")
    index = ReceiptIndex(tmp_path / "index.sqlite")
    calls = [0]
    lock = threading.Lock()

    def counting_open(*args, **kwargs):
        with lock:
            calls[0] += 1
        return open_image(*args, **kwargs)

    def receiver():  # two of these stand for two processes sharing index and store
        return Receiver([receiver_key], [device_key.public_key()], store, index, tmp_path / "archive",
                        codec=codec, open_image=counting_open)

    one, two = receiver(), receiver()
    data = seal(images[2], keys, codec)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (one if i % 4 else two).accept(data), range(16)))
    receipts = {r[0]["sop_instance_uid"] for r in results}
    assert len(receipts) == 1 and all(r[0] == results[0][0] for r in results)
    assert store.count() == 1 and index.count() == 1
    assert calls[0] <= 2  # one decode per receiver at most: the per-message lock holds the others back


@pytest.mark.parametrize("case, status, code", [
    ("unknown_sender", 403, "unknown_sender"),
    ("wrong_recipient", 421, "wrong_recipient"),
    ("tampered", 422, "not_authentic"),
    ("garbage", 400, "malformed"),
    ("truncated", 400, "malformed"),
    ("empty", 400, "malformed"),
])
def test_refusals_store_nothing_and_log_no_patient_data(setup, keys, codec, images, caplog, case, status, code):
    make, store, tmp_path = setup
    good = seal(images[0], keys, codec)
    if case == "unknown_sender":
        data = seal(images[0], keys, codec, signer=DeviceKey.generate())
    elif case == "wrong_recipient":
        data = seal(images[0], keys, codec, recipient=ReceiverKey.generate().public_key())
    elif case == "tampered":
        data = bytearray(good)
        data[200] ^= 0x01
        data = bytes(data)
    elif case == "garbage":
        data = b"GET / HTTP/1.0\r\n" * 10
    elif case == "truncated":
        data = good[:-10]
    else:
        data = b""
    with caplog.at_level(logging.INFO, logger="radseal.receiver"):
        answer = make().post("/v1/messages", content=data)
    assert answer.status_code == status
    assert answer.json()["error"] == code and answer.json()["detail"]
    assert nothing_stored(store, tmp_path)
    assert f"error={code}" in caplog.text and PATIENT_NAME not in caplog.text


def test_success_log_has_no_patient_data(setup, keys, codec, images, caplog):
    make, _, _ = setup
    with caplog.at_level(logging.INFO, logger="radseal.receiver"):
        assert make().post("/v1/messages", content=seal(images[0], keys, codec)).status_code == 200
    assert "stored message=" in caplog.text and PATIENT_NAME not in caplog.text
    assert str(images[0].source.PatientID) not in caplog.text


def test_oversized_body_is_refused_while_reading(setup, keys, codec, images):
    make, store, tmp_path = setup
    client = make(max_body=1000)
    data = seal(images[0], keys, codec)
    assert len(data) > 1000
    declared = client.post("/v1/messages", content=data)
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"

    def chunks():  # no Content-Length: the limit is enforced on the stream itself
        for start in range(0, len(data), 500):
            yield data[start:start + 500]

    streamed = client.post("/v1/messages", content=chunks())
    assert streamed.status_code == 413
    assert nothing_stored(store, tmp_path)


def test_undecodable_message_is_refused_but_kept_in_the_archive(setup, keys, codec, images):
    make, store, tmp_path = setup

    class BrokenCodec(BitDropCodec):
        def decompress(self, data):
            raise ValueError("cannot decode")

    client = make(codec=BrokenCodec())
    data = seal(images[0], keys, codec)
    answer = client.post("/v1/messages", content=data)
    assert answer.status_code == 422 and answer.json()["error"] == "undecodable"
    assert store.count() == 0 and ReceiptIndex(tmp_path / "state" / "index.sqlite").count() == 0
    header = parse_header(data)
    assert (tmp_path / "state" / "archive" / header.sender_key_id / f"{header.message_id}.rsl").exists()


def test_store_down_is_a_503_and_the_retry_succeeds(setup, keys, codec, images):
    make, store, tmp_path = setup
    from radseal.transport.drill import free_port

    down = make(store=OrthancStore(f"http://127.0.0.1:{free_port()}", timeout=2))
    data = seal(images[0], keys, codec)
    answer = down.post("/v1/messages", content=data)
    assert answer.status_code == 503 and answer.json()["error"] == "store_unavailable"
    assert ReceiptIndex(tmp_path / "state" / "index.sqlite").count() == 0
    again = make().post("/v1/messages", content=data)
    assert again.status_code == 200 and store.count() == 1


def test_diagnosis_hook_result_joins_receipt_and_index(setup, keys, codec, images):
    make, _, tmp_path = setup
    seen = []

    def diagnose(img: Image) -> dict:
        seen.append(img.shape)
        return {"probability": 0.25, "label": 0, "name": "NORMAL"}

    answer = make(diagnose=diagnose).post("/v1/messages", content=seal(images[3], keys, codec))
    assert answer.json()["diagnosis"] == {"probability": 0.25, "label": 0, "name": "NORMAL"}
    assert seen == [(48, 48)]
    row = ReceiptIndex(tmp_path / "state" / "index.sqlite").rows()[0]
    assert row["probability"] == 0.25 and row["label"] == "NORMAL"


def test_failing_diagnosis_does_not_lose_the_image(setup, keys, codec, images):
    make, store, _ = setup

    def diagnose(img):
        raise RuntimeError("model exploded")

    answer = make(diagnose=diagnose).post("/v1/messages", content=seal(images[3], keys, codec))
    assert answer.status_code == 200 and answer.json()["diagnosis"] is None and store.count() == 1


def test_default_diagnose_uses_the_shipped_classifier(images):
    from radseal.transport.receiver import default_diagnose

    diagnose = default_diagnose()
    if diagnose is None:
        pytest.skip("the shipped pneumonia classifier is not available here")
    result = diagnose(images[0])
    assert 0.0 <= result["probability"] <= 1.0 and result["label"] in (0, 1)
    assert result["name"] in ("NORMAL", "PNEUMONIA")
