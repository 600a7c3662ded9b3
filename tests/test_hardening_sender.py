"""Hardening of the transport: message-id squatting, refused messages set aside, one bad file
in a batch, private outbox and receiver files (issue 10, items 1, 3, 4 and 13)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import sqlite3
import stat
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from radseal.cli import main
from radseal.image import Image
from radseal.io import write_png
from radseal.pipeline import open_image, seal_image
from radseal.seal import DeviceKey, ReceiverKey, parse_header, save_private_key, save_public_key
from radseal.transport.drill import BitDropCodec, ReceiverProcess, drill_images, free_port
from radseal.transport.errors import OutboxError, TransportError
from radseal.transport.files import durable_write_new
from radseal.transport.index import ReceiptIndex
from radseal.transport.outbox import Outbox
from radseal.transport.receiver import create_app
from radseal.transport.sender import RetryPolicy, Sender, enqueue_image
from radseal.transport.stores import FolderStore

PATIENT_NAME = "CompressedSamples"  # RG3's Patient's Name: never in a log line


@pytest.fixture(scope="module")
def codec():
    return BitDropCodec()


@pytest.fixture(scope="module")
def images():
    return drill_images(5, size=48, seed=5)  # four DICOM crops of RG3 (same study and series), one 8-bit image


@pytest.fixture(scope="module")
def parties():
    """The receiver key and two trusted devices, A (the victim) and B."""
    return ReceiverKey.generate(), DeviceKey.generate(), DeviceKey.generate()


def png(path, seed: int):
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40), dtype=np.uint8)
    write_png(Image(pixels), path)
    return str(path)


def app_client(tmp_path, parties, codec, state="state", store=None, **kwargs):
    receiver_key, a, b = parties
    store = store or FolderStore(tmp_path / "store")
    app = create_app(receiver_key, [a.public_key(), b.public_key()], store, tmp_path / state / "index.sqlite",
                     codec=codec, **kwargs)
    return TestClient(app), store


def sealed(img, parties, codec, signer, message_id: str | None = None) -> bytes:
    return seal_image(img, parties[0].public_key(), signer, codec=codec,
                      message_id=bytes.fromhex(message_id) if message_id else None).data


# ---------------------------------------------------------------- a live receiver (child process)


@pytest.fixture(scope="module")
def live(tmp_path_factory, parties):
    """`python -m radseal.transport.drill serve` trusting A and B, with the stand-in codec."""
    receiver_key, a, b = parties
    work = tmp_path_factory.mktemp("live")
    save_private_key(receiver_key, work / "receiver.key")
    save_public_key(receiver_key.public_key(), work / "receiver.pub")
    (work / "trusted").mkdir()
    for name, key in (("a", a), ("b", b)):
        save_public_key(key.public_key(), work / "trusted" / f"{name}.pub")
        save_private_key(key, work / f"{name}.key")
    proc = ReceiverProcess(["--key", str(work / "receiver.key"), "--trust", str(work / "trusted"),
                            "--store", str(work / "store"), "--index", str(work / "state" / "index.sqlite")],
                           free_port(), work / "receiver.log")
    proc.start(timeout=60)
    yield proc, work
    proc.stop()


# ---------------------------------------------------------------- item 1: message-id squatting


def test_squatted_message_id_gets_409_and_the_victim_keeps_its_image(live, parties, codec, tmp_path, capsys):
    """Device B seals its own image under device A's pending message id and gets it stored first.
    A's send then must not exit 0 nor drop its copy: it gets 409 and A's image is kept."""
    proc, work = live
    receiver_key, a, b = parties
    outbox = Outbox(tmp_path / "outbox-a")
    queued = enqueue_image(outbox, png(tmp_path / "a.png", 1), receiver_key.public_key(), a, codec=codec)
    victim_id = queued.message_id
    a_sealed = outbox.sealed(victim_id)

    squat = sealed(Image(np.full((40, 40), 7, np.uint8)), parties, codec, b, message_id=victim_id)
    answer = httpx.post(proc.url + "/v1/messages", content=squat)
    assert answer.status_code == 200 and answer.json()["message_id"] == victim_id  # B's image stored under A's id

    code = main(["send", "--flush", "--to", proc.url, "--outbox", str(tmp_path / "outbox-a"),
                 "--retries", "3", "--backoff", "0", "-q"])
    out, err = capsys.readouterr()
    assert code != 0, out
    assert "409" in out and "conflict" in out and err.startswith("radseal: error:") and err.count("\n") == 1
    [row] = outbox.rows(("refused",))
    assert (row.message_id, row.refused_status, row.refused_code) == (victim_id, 409, "conflict")
    assert outbox.counts() == {"pending": 0, "delivered": 0, "refused": 1}
    assert outbox.sealed(victim_id) == a_sealed  # A's sealed copy is still there...
    mine = open_image(a_sealed, receiver_key, a.public_key(), codec=codec).image.pixels
    local = codec.decompress(codec.compress(Image(np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8))))
    assert np.array_equal(mine, local.pixels)  # ...and it is A's image, intact
    on_record = ReceiptIndex(work / "state" / "index.sqlite").lookup(victim_id)
    assert on_record.sender_key_id == b.public_key().key_id  # B's message was not replaced by A's either
    log = (work / "receiver.log").read_text()
    conflicts = [line for line in log.splitlines() if "error=conflict" in line and victim_id in line]
    assert len(conflicts) == 1  # one attempt, one line: a 409 is not retried


def test_same_sender_same_bytes_gets_the_receipt_on_record(tmp_path, parties, codec, images):
    client, store = app_client(tmp_path, parties, codec)
    data = sealed(images[0], parties, codec, parties[1])
    first, again = (client.post("/v1/messages", content=data) for _ in range(2))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again.headers["Radseal-Duplicate"] == "true"
    receipt = first.json()
    assert receipt["sender_key_id"] == parties[1].public_key().key_id
    assert receipt["sealed_sha256"] == hashlib.sha256(data).hexdigest()
    assert store.count() == 1


def test_same_id_other_bytes_same_sender_is_a_conflict(tmp_path, parties, codec, images, caplog):
    client, store = app_client(tmp_path, parties, codec)
    a = parties[1]
    first = sealed(images[0], parties, codec, a)
    message_id = parse_header(first).message_id
    receipt = client.post("/v1/messages", content=first).json()
    before = store.get(receipt["sop_instance_uid"])
    other = sealed(images[1], parties, codec, a, message_id=message_id)
    with caplog.at_level(logging.INFO, logger="radseal.receiver"):
        answer = client.post("/v1/messages", content=other)
    assert answer.status_code == 409 and answer.json()["error"] == "conflict"
    assert store.count() == 1 and store.get(receipt["sop_instance_uid"]) == before
    archived = tmp_path / "state" / "archive" / a.public_key().key_id / f"{message_id}.rsl"
    assert archived.read_bytes() == first
    lines = [r.getMessage() for r in caplog.records if "conflict" in r.getMessage()]
    assert len(lines) == 1 and message_id in lines[0] and PATIENT_NAME not in caplog.text


def test_same_id_from_another_sender_is_a_conflict_and_the_first_stays(tmp_path, parties, codec, images):
    client, store = app_client(tmp_path, parties, codec)
    _, a, b = parties
    first = sealed(images[0], parties, codec, a)
    message_id = parse_header(first).message_id
    receipt = client.post("/v1/messages", content=first).json()
    before = store.get(receipt["sop_instance_uid"])
    answer = client.post("/v1/messages", content=sealed(images[1], parties, codec, b, message_id=message_id))
    assert answer.status_code == 409 and answer.json()["error"] == "conflict"
    assert "another device" in answer.json()["detail"]
    assert store.count() == 1 and store.get(receipt["sop_instance_uid"]) == before
    assert ReceiptIndex(tmp_path / "state" / "index.sqlite").lookup(message_id).sender_key_id == a.public_key().key_id
    assert not (tmp_path / "state" / "archive" / b.public_key().key_id).exists()
    # A retrying its own message still gets its own receipt.
    assert client.post("/v1/messages", content=first).json() == receipt


def test_another_sender_cannot_overwrite_the_victims_object_even_with_separate_indexes(tmp_path, parties, codec, images):
    """Two receivers with their own index (load balancer, per-receiver SQLite) and one store: the
    derived UIDs come from (sender key id, message id), so B's message under A's id is another object."""
    _, a, b = parties
    store = FolderStore(tmp_path / "store")
    one, _ = app_client(tmp_path, parties, codec, state="state1", store=store)
    two, _ = app_client(tmp_path, parties, codec, state="state2", store=store)
    first = sealed(images[0], parties, codec, a)
    message_id = parse_header(first).message_id
    mine = one.post("/v1/messages", content=first).json()
    before = store.get(mine["sop_instance_uid"])
    theirs = two.post("/v1/messages", content=sealed(images[1], parties, codec, b, message_id=message_id)).json()
    assert theirs["sop_instance_uid"] != mine["sop_instance_uid"]
    assert store.count() == 2 and store.get(mine["sop_instance_uid"]) == before
    ds = pydicom.dcmread(io.BytesIO(before))
    assert np.array_equal(ds.pixel_array, open_image(first, parties[0], a.public_key(), codec=codec).image.pixels)


def test_an_archived_message_is_never_replaced(tmp_path, parties, codec, images):
    class Broken(BitDropCodec):
        def decompress(self, data):
            raise ValueError("cannot decode")

    a = parties[1]
    first = sealed(images[0], parties, codec, a)
    message_id = parse_header(first).message_id
    broken, _ = app_client(tmp_path, parties, Broken())
    assert broken.post("/v1/messages", content=first).json()["error"] == "undecodable"  # archived, not indexed
    client, store = app_client(tmp_path, parties, codec)
    other = sealed(images[1], parties, codec, a, message_id=message_id)
    assert client.post("/v1/messages", content=other).status_code == 409
    assert (tmp_path / "state" / "archive" / a.public_key().key_id / f"{message_id}.rsl").read_bytes() == first
    assert store.count() == 0
    assert client.post("/v1/messages", content=first).status_code == 200  # the archived message itself goes through
    path = tmp_path / "x" / "y.rsl"
    assert durable_write_new(path, b"one") and not durable_write_new(path, b"two") and path.read_bytes() == b"one"


_V0_SCHEMA = """CREATE TABLE messages (message_id TEXT PRIMARY KEY, sop_instance_uid TEXT NOT NULL,
    sender_key_id TEXT NOT NULL, received_at TEXT NOT NULL, sealed_bytes INTEGER NOT NULL,
    payload_bytes INTEGER NOT NULL, ratio REAL NOT NULL, location TEXT NOT NULL, probability REAL,
    label TEXT, receipt TEXT NOT NULL)"""


def test_an_index_of_the_earlier_schema_is_migrated(tmp_path, parties, codec, images):
    """State written before sender-bound ids (flat archive, message id as the only key) keeps working:
    a retry of a message it recorded gets its receipt, now with the digest the sender checks."""
    client, _ = app_client(tmp_path, parties, codec)
    data = sealed(images[0], parties, codec, parties[1])
    receipt = client.post("/v1/messages", content=data).json()
    header = parse_header(data)
    old_receipt = {k: v for k, v in receipt.items() if k != "sealed_sha256"}
    state = tmp_path / "old"
    (state / "archive").mkdir(parents=True)
    (state / "archive" / f"{header.message_id}.rsl").write_bytes(data)
    with sqlite3.connect(state / "index.sqlite") as db:
        db.execute(_V0_SCHEMA)
        db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (header.message_id, receipt["sop_instance_uid"], header.sender_key_id, receipt["received_at"],
                    len(data), receipt["payload_bytes"], receipt["ratio"], "x", None, None, json.dumps(old_receipt)))
    db.close()
    migrated, _ = app_client(tmp_path, parties, codec, state="old")
    again = migrated.post("/v1/messages", content=data)
    assert again.status_code == 200 and again.headers["Radseal-Duplicate"] == "true"
    assert again.json()["sealed_sha256"] == hashlib.sha256(data).hexdigest()
    assert (state / "archive" / header.sender_key_id / f"{header.message_id}.rsl").read_bytes() == data
    assert not (state / "archive" / f"{header.message_id}.rsl").exists()
    other = sealed(images[1], parties, codec, parties[2], message_id=header.message_id)
    assert migrated.post("/v1/messages", content=other).status_code == 409
    with sqlite3.connect(state / "index.sqlite") as db:
        db.execute("PRAGMA user_version = 9")
    db.close()
    with pytest.raises(TransportError, match="newer radseal"):
        ReceiptIndex(state / "index.sqlite")


# ---------------------------------------------------------------- sender: receipts and refusals


@pytest.fixture
def one_queued(tmp_path, parties, codec):
    outbox = Outbox(tmp_path / "outbox")
    queued = enqueue_image(outbox, png(tmp_path / "scan.png", 3), parties[0].public_key(), parties[1], codec=codec)
    return outbox, queued


def scripted(outbox, answers, max_attempts=3):
    seen = []

    def handler(request):
        seen.append(request.content)
        return answers[min(len(seen), len(answers)) - 1](request)

    sender = Sender("http://receiver.test", outbox, client=httpx.Client(transport=httpx.MockTransport(handler)),
                    sleep=lambda s: None, retry=RetryPolicy(base=0.0, cap=0.0, max_attempts=max_attempts),
                    rng=random.Random(0))
    return sender, seen


def receipt_of(request, **changes) -> dict:
    receipt = {"message_id": parse_header(request.content).message_id, "sop_instance_uid": "2.25.9",
               "sender_key_id": parse_header(request.content).sender_key_id,
               "sealed_sha256": hashlib.sha256(request.content).hexdigest(), "sealed_bytes": 1, "ratio": 1.0}
    receipt.update(changes)
    return {k: v for k, v in receipt.items() if v is not None}


@pytest.mark.parametrize("change", [
    {"sender_key_id": "ab" * 16},      # another device's message under our id
    {"sealed_sha256": "00" * 32},      # other bytes under our id
    {"sealed_sha256": None},           # a receipt that names no digest proves nothing
    {"message_id": "cd" * 16},
])
def test_only_a_receipt_for_these_very_bytes_drops_the_message(one_queued, change):
    outbox, queued = one_queued
    sender, seen = scripted(outbox, [lambda r: httpx.Response(200, json=receipt_of(r, **change))])
    result = sender.flush()
    assert not result.delivered and [m for m, _ in result.refused] == [queued.message_id]
    assert len(seen) == 1 and outbox.sealed(queued.message_id) == seen[0]
    [row] = outbox.rows(("refused",))
    assert row.refused_code == "receipt_mismatch" and next(iter(change)) in row.last_error
    good, _ = scripted(outbox, [lambda r: httpx.Response(200, json=receipt_of(r))])
    assert outbox.retry() == [queued.message_id] and len(good.flush().delivered) == 1


@pytest.mark.parametrize("status, code", [
    (400, "malformed"), (403, "unknown_sender"), (409, "conflict"), (413, "too_large"),
    (421, "wrong_recipient"), (422, "not_authentic"), (422, "undecodable"),
])
def test_a_permanent_refusal_is_set_aside_with_the_receivers_reason(one_queued, status, code):
    outbox, queued = one_queued
    answer = lambda r: httpx.Response(status, json={"error": code, "detail": f"the reason for {code}"})  # noqa: E731
    sender, seen = scripted(outbox, [answer], max_attempts=5)
    result = sender.flush()
    assert len(seen) == 1 and [m for m, _ in result.refused] == [queued.message_id] and not result.pending
    [row] = outbox.rows(("refused",))
    assert (row.refused_status, row.refused_code, row.last_error) == (status, code, f"the reason for {code}")
    assert outbox.sealed(queued.message_id) == seen[0]
    again, seen_again = scripted(outbox, [answer])
    assert again.flush().refused == [] and seen_again == []  # never sent again by a later run


@pytest.mark.parametrize("answer", [
    lambda r: httpx.Response(503, json={"error": "store_unavailable", "detail": "down"}),
    lambda r: httpx.Response(500, text="Internal Server Error"),
    lambda r: httpx.Response(404, text="Not Found"),  # a wrong URL: not about the message
    lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)),
])
def test_transient_answers_keep_the_message_pending_and_retried(one_queued, answer):
    outbox, queued = one_queued
    sender, seen = scripted(outbox, [answer], max_attempts=3)
    result = sender.flush()
    assert len(seen) == 3 and result.pending == [queued.message_id] and outbox.counts()["pending"] == 1


def test_outbox_status_shows_refused_messages_and_retry_puts_them_back(one_queued, tmp_path, capsys):
    outbox, queued = one_queued
    sender, _ = scripted(outbox, [lambda r: httpx.Response(403, json={"error": "unknown_sender", "detail": "not trusted"})])
    sender.flush()
    box = str(tmp_path / "outbox")
    assert main(["outbox", "status", "--outbox", box]) == 0
    out = capsys.readouterr().out
    assert f"refused {queued.message_id}" in out and "HTTP 403 unknown_sender: not trusted" in out
    assert "radseal outbox retry" in out and "scan.png" not in out  # named by digest, not by file name
    assert main(["outbox", "retry", "--outbox", box, "0" * 32]) == 2
    assert capsys.readouterr().err.startswith("radseal: error: no message")
    assert "oldest pending" not in out  # the only message is refused, none is pending
    assert main(["outbox", "retry", "--outbox", box, queued.message_id]) == 0
    assert outbox.state(queued.message_id) == "pending"
    capsys.readouterr()
    assert main(["outbox", "status", "--outbox", box]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "1 pending, 0 refused" in first and "oldest pending" in first and first.endswith(" old")
    assert main(["outbox", "status", "--outbox", str(tmp_path / "nowhere")]) == 2


# ---------------------------------------------------------------- item 4: one bad file in a batch


def test_one_unreadable_file_does_not_stop_the_batch(live, parties, codec, tmp_path, capsys, monkeypatch):
    proc, work = live
    monkeypatch.setattr("radseal.cli.transport._load_codec", lambda: codec)
    good = [png(tmp_path / f"good{i}.png", 10 + i) for i in range(2)]
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    missing = tmp_path / "missing.png"
    folder = tmp_path / "afolder.png"
    folder.mkdir()
    stored_before = FolderStore(work / "store").count()
    args = ["send", good[0], str(garbage), str(missing), str(folder), good[1], "--to", proc.url,
            "--recipient", str(work / "receiver.pub"), "--sign", str(work / "a.key"),
            "--outbox", str(tmp_path / "outbox"), "-q", "--retain-delivered", "1d"]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("radseal: error: ") for line in lines)
    assert lines[0].startswith(f"radseal: error: {garbage}: ") and lines[1] == f"radseal: error: {missing}: no such file"
    assert lines[2].startswith(f"radseal: error: {folder}: ")
    assert out.count("stored  ") == 2 and f"stored  {good[0]}" in out and "unreadable inputs 3" in out
    assert FolderStore(work / "store").count() == stored_before + 2
    # Only bad files: nothing sealed, exit 2, no outbox left behind.
    assert main(["send", str(garbage), str(missing), "--to", proc.url, "--recipient", str(work / "receiver.pub"),
                 "--sign", str(work / "a.key"), "--outbox", str(tmp_path / "outbox2"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"radseal: error: {garbage}: unrecognised file type (expected DICOM, PNG, JPEG or TIFF)",
                                f"radseal: error: {missing}: no such file"]
    assert not (tmp_path / "outbox2").exists()


# ---------------------------------------------------------------- item 13: private files, no paths, purge


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outbox_and_receiver_files_are_private(tmp_path, parties, codec, images):
    with umask(0o022):
        outbox = Outbox(tmp_path / "dev" / "outbox")
        (tmp_path / "state" / "archive").mkdir(parents=True)  # as `radseal serve` makes them before the receiver starts
        client, store = app_client(tmp_path, parties, codec, store=FolderStore(tmp_path / "pacs" / "store"))
        # Held open, so that SQLite's -wal and -shm files exist while we look at them.
        held = [sqlite3.connect(tmp_path / "dev" / "outbox" / "outbox.sqlite"),
                sqlite3.connect(tmp_path / "state" / "index.sqlite")]
        for db in held:
            db.execute("SELECT COUNT(*) FROM messages").fetchone()
        enqueue_image(outbox, png(tmp_path / "scan.png", 4), parties[0].public_key(), parties[1], codec=codec)
        assert client.post("/v1/messages", content=sealed(images[0], parties, codec, parties[1])).status_code == 200
    try:
        folders = [tmp_path / "dev", tmp_path / "dev" / "outbox", tmp_path / "state", tmp_path / "state" / "archive",
                   tmp_path / "pacs", tmp_path / "pacs" / "store"]
        folders += [p for p in (tmp_path / "state" / "archive").rglob("*") if p.is_dir()]
        folders += [p for p in (tmp_path / "pacs" / "store").rglob("*") if p.is_dir()]
        files = [p for root in (tmp_path / "dev", tmp_path / "state", tmp_path / "pacs") for p in root.rglob("*")
                 if p.is_file()]
        assert len(folders) == 9 and {mode(p) for p in folders} == {0o700}  # 6 named, sender, study, series
        names = {p.name for p in files}
        assert {"outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm", "index.sqlite", "index.sqlite-wal"} <= names
        assert any(n.endswith(".rsl") for n in names) and any(n.endswith(".dcm") for n in names)
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        for db in held:
            db.close()


def test_an_existing_world_readable_index_and_outbox_are_tightened(tmp_path):
    for path in (tmp_path / "index.sqlite", tmp_path / "ob" / "outbox.sqlite"):
        path.parent.mkdir(exist_ok=True)
        sqlite3.connect(path).close()
        os.chmod(path, 0o644)
    os.chmod(tmp_path / "ob", 0o755)
    ReceiptIndex(tmp_path / "index.sqlite")
    Outbox(tmp_path / "ob")
    assert mode(tmp_path / "index.sqlite") == mode(tmp_path / "ob" / "outbox.sqlite") == 0o600
    assert mode(tmp_path / "ob") == 0o700


def file_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def test_the_outbox_keeps_no_input_path(tmp_path, parties, codec):
    name = tmp_path / "DOE^JANE_1961-04-12_chest.png"
    png(name, 5)
    outbox = Outbox(tmp_path / "outbox")
    queued = enqueue_image(outbox, name, parties[0].public_key(), parties[1], codec=codec)
    [entry] = outbox.pending()
    assert entry.source == "sha256:" + hashlib.sha256(name.read_bytes()).hexdigest()[:16]
    assert b"DOE^JANE" not in file_bytes(tmp_path / "outbox") and queued.message_id


_OLD_OUTBOX = """CREATE TABLE messages (message_id TEXT PRIMARY KEY, source TEXT NOT NULL, source_key TEXT NOT NULL,
    sealed BLOB, sealed_bytes INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending', last_error TEXT, receipt TEXT)"""


def test_an_old_outbox_is_scrubbed_of_paths_when_opened(tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir()
    with sqlite3.connect(folder / "outbox.sqlite") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_OLD_OUTBOX)
        now = time.time()
        db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   ("aa" * 16, "/scans/DOE^JANE.png", "ff" * 32 + ":" + "11" * 16, b"sealed", 6, now, now, 1,
                    "rejected", "HTTP 403: unknown_sender", None))
    db.close()
    assert b"DOE^JANE" in file_bytes(folder)
    outbox = Outbox(folder)
    assert b"DOE^JANE" not in file_bytes(folder)
    [row] = outbox.rows()
    assert (row.state, row.source) == ("refused", "sha256:" + "ff" * 8)
    assert outbox.retry() == ["aa" * 16] and outbox.pending()[0].sealed == b"sealed"


def test_delivered_records_are_purged_after_the_retention_period(one_queued, tmp_path, parties, codec):
    outbox, queued = one_queued
    recent = enqueue_image(outbox, png(tmp_path / "recent.png", 6), parties[0].public_key(), parties[1], codec=codec)
    waiting = enqueue_image(outbox, png(tmp_path / "waiting.png", 7), parties[0].public_key(), parties[1], codec=codec)
    for mid in (queued.message_id, recent.message_id):
        outbox.mark_delivered(mid, {"message_id": mid, "diagnosis": {"name": "PNEUMONIA-" + mid[:6]}})
    with sqlite3.connect(outbox.path) as db:
        db.execute("UPDATE messages SET updated = ? WHERE message_id = ?", (time.time() - 8 * 86400, queued.message_id))
    db.close()
    assert outbox.purge_delivered(7 * 86400) == 1
    assert outbox.state(queued.message_id) is None and outbox.state(recent.message_id) == "delivered"
    assert outbox.state(waiting.message_id) == "pending"
    assert f"PNEUMONIA-{queued.message_id[:6]}".encode() not in file_bytes(tmp_path / "outbox")
    assert f"PNEUMONIA-{recent.message_id[:6]}".encode() in file_bytes(tmp_path / "outbox")


def test_retention_option_is_parsed_and_checked(tmp_path, capsys):
    from radseal.cli.transport import _duration

    assert (_duration("7d"), _duration("12h"), _duration("30m"), _duration("0")) == (604800, 43200, 1800, 0)
    with pytest.raises(SystemExit):
        main(["send", "--flush", "--to", "http://127.0.0.1:9", "--retain-delivered", "forever"])
    assert "invalid duration" in capsys.readouterr().err
    Outbox(tmp_path / "ob")
    assert main(["outbox", "purge", "--outbox", str(tmp_path / "ob"), "--retain-delivered", "0"]) == 0
    assert "purged 0" in capsys.readouterr().out


def test_outbox_error_is_one_line(tmp_path):
    (tmp_path / "ob").mkdir()
    (tmp_path / "ob" / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError):
        Outbox(tmp_path / "ob")


def test_local_decode_and_receiver_give_one_message_the_same_uids(tmp_path, rg3_path):
    """Both derive UIDs from (sender key id, message id), so a local decode names the object the receiver stored."""
    from radseal.cli import main
    from radseal.io import read_image, write_image
    from radseal.seal.keys import load_receiver_key, load_trusted
    from radseal.transport.index import ReceiptIndex
    from radseal.transport.receiver import Receiver
    from radseal.transport.stores import FolderStore

    img = read_image(rg3_path)
    write_image(img.with_pixels(img.pixels[800:864, 700:764].copy()), tmp_path / "crop.dcm")
    assert main(["keygen", "receiver", "hospital", "--out", str(tmp_path)]) == 0
    assert main(["keygen", "device", "xray7", "--out", str(tmp_path)]) == 0
    assert main(["encode", str(tmp_path / "crop.dcm"), "--to", str(tmp_path / "hospital.pub"),
                 "--sign", str(tmp_path / "xray7.key"), "-o", str(tmp_path / "m.rsl")]) == 0
    assert main(["decode", str(tmp_path / "m.rsl"), "--key", str(tmp_path / "hospital.key"),
                 "--trust", str(tmp_path / "xray7.pub"), "-o", str(tmp_path / "local.dcm")]) == 0
    store = FolderStore(tmp_path / "store")
    receiver = Receiver([load_receiver_key(tmp_path / "hospital.key")], load_trusted([tmp_path / "xray7.pub"]),
                        store, ReceiptIndex(tmp_path / "index.sqlite"), tmp_path / "archive")
    receipt, _ = receiver.accept((tmp_path / "m.rsl").read_bytes())
    local, stored = pydicom.dcmread(tmp_path / "local.dcm"), pydicom.dcmread(store.files()[0])
    assert local.SOPInstanceUID == stored.SOPInstanceUID == receipt["sop_instance_uid"]
    assert (local.SeriesInstanceUID, local.StudyInstanceUID) == (stored.SeriesInstanceUID, stored.StudyInstanceUID)
