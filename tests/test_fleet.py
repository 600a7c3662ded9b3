"""A fleet of receivers: the receipt index in PostgreSQL, HAProxy in front, a shared state folder.

The PostgreSQL cluster is a private one started by scripts/start-postgres.sh
(the script CI and docs/deploy.md use). Without PostgreSQL or HAProxy
installed these tests skip with the reason, except in CI (``CI`` set), where
scripts/install.sh has installed both and a skip would hide a broken set-up.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from radseal.pipeline import open_image, seal_image
from radseal.seal import DeviceKey, ReceiverKey, parse_header, save_private_key, save_public_key
from radseal.transport.drill import (BitDropCodec, PostgresCluster, ReceiverProcess, drill_images,
                                     free_port, haproxy_binary, run_fleet_drill)
from radseal.transport.errors import TransportError
from radseal.transport.index import ReceiptIndex, open_index
from radseal.transport.receiver import Receiver, Rejected
from radseal.transport.stores import FolderStore

psycopg = pytest.importorskip("psycopg", reason="the fleet extra is not installed: pip install 'radseal[fleet]'")

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
IN_CI = bool(os.environ.get("CI"))


def _need(present: bool, what: str) -> None:
    if not present:
        if IN_CI:
            pytest.fail(f"{what} is missing in CI: scripts/install.sh should have installed it")
        pytest.skip(f"{what} not installed (scripts/install.sh installs it)")


@pytest.fixture(scope="module")
def postgres():
    _need(bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")), "PostgreSQL (Debian package postgresql)")
    # A folder of its own under the system temp folder: when the tests run as root the cluster runs as
    # the 'postgres' user, which must reach it (pytest's tmp_path is private to the user running pytest).
    folder = tempfile.mkdtemp(prefix="radseal-pg-")
    cluster = PostgresCluster(SCRIPTS, folder)
    cluster.start()
    yield cluster
    cluster.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres):
    """A fresh database on the shared cluster for each test."""
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"  # the cluster's superuser, loopback only
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER radseal')
    return postgres.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def keys():
    return ReceiverKey.generate(), DeviceKey.generate()


@pytest.fixture(scope="module")
def codec():
    return BitDropCodec()


@pytest.fixture(scope="module")
def images():
    return drill_images(3, size=48, seed=5)


def receipt(message_id="m1", sender="a" * 16, digest="d" * 64, sop="1.2.3"):
    return {"message_id": message_id, "sender_key_id": sender, "sealed_sha256": digest, "sop_instance_uid": sop,
            "received_at": "2026-01-01T00:00:00.000+00:00", "sealed_bytes": 10, "payload_bytes": 5, "ratio": 2.0,
            "diagnosis": {"name": "pneumonia", "probability": 0.25}}


def test_open_index_picks_the_backend(tmp_path, pg_url):
    assert isinstance(open_index(tmp_path / "index.sqlite"), ReceiptIndex)
    index = open_index(pg_url)
    assert type(index).__name__ == "PostgresIndex" and index.path is None and index.count() == 0
    with pytest.raises(TransportError, match="not a receipt index"):
        open_index("mysql://x@127.0.0.1/db")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_record_duplicate_and_conflicts(backend, tmp_path, request):
    index = open_index(tmp_path / "index.sqlite" if backend == "sqlite" else request.getfixturevalue("pg_url"))
    first = index.record(receipt(), "a/b/c.dcm")
    assert first.receipt == receipt() and first.same_message("a" * 16, "d" * 64)
    # the same message again: the row on record, unchanged
    assert index.record(receipt(sop="9.9"), "elsewhere").receipt == receipt()
    # another device under the same message id, and other bytes from the same device: the first row wins
    assert not index.record(receipt(sender="b" * 16), "x").same_message("b" * 16, "d" * 64)
    assert not index.record(receipt(digest="e" * 64), "x").same_message("a" * 16, "e" * 64)
    assert index.count() == 1 and index.lookup("m2") is None
    row = index.rows()[0]
    assert row["location"] == "a/b/c.dcm" and row["label"] == "pneumonia" and row["probability"] == 0.25


def test_server_down_is_a_one_line_error_without_the_password():
    with pytest.raises(TransportError, match=r"cannot open the receipt index") as err:
        open_index(f"postgresql://nobody:secret@127.0.0.1:{free_port()}/radseal")
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_threads_of_two_receivers_racing_store_once_and_conflict_409(pg_url, tmp_path, keys, codec, images):
    receiver_key, device_key = keys
    store = FolderStore(tmp_path / "store")
    calls = [0]
    lock = threading.Lock()

    def counting_open(*args, **kwargs):
        with lock:
            calls[0] += 1
        return open_image(*args, **kwargs)

    def receiver():  # each with its own connection pool, as two processes would have
        return Receiver([receiver_key], [device_key.public_key()], store, open_index(pg_url), tmp_path / "archive",
                        codec=codec, open_image=counting_open)

    one, two = receiver(), receiver()
    data = seal_image(images[0], receiver_key.public_key(), device_key, codec=codec).data
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (one if i % 2 else two).accept(data), range(16)))
    assert all(r[0] == results[0][0] for r in results)
    assert sum(not duplicate for _, duplicate in results) >= 1
    assert store.count() == 1 and open_index(pg_url).count() == 1
    # another trusted device claiming that message id: 409, nothing stored
    other = DeviceKey.generate()
    thief = Receiver([receiver_key], [device_key.public_key(), other.public_key()], store, open_index(pg_url),
                     tmp_path / "archive", codec=codec)
    message_id = parse_header(data).message_id
    forged = seal_image(images[1], receiver_key.public_key(), other, codec=codec,
                        message_id=bytes.fromhex(message_id)).data
    with pytest.raises(Rejected) as err:
        thief.accept(forged)
    assert err.value.status == 409 and err.value.code == "conflict"
    assert store.count() == 1 and open_index(pg_url).count() == 1


_RACE = """
import sys
from radseal.transport.index import open_index
url, me = sys.argv[1], sys.argv[2]
index = open_index(url)
wins = 0
for i in range(200):
    r = {"message_id": f"m{i}", "sender_key_id": "a" * 16, "sealed_sha256": "d" * 64, "sop_instance_uid": f"1.{i}",
         "received_at": "t", "sealed_bytes": 1, "payload_bytes": 1, "ratio": 1.0, "diagnosis": None}
    wins += index.record(r, me).receipt == r and index.lookup(f"m{i}") is not None
print(wins)
"""


def test_two_processes_racing_on_the_same_messages_keep_one_row_each(pg_url):
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, pg_url, f"p{k}"], stdout=subprocess.PIPE, text=True)
             for k in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = open_index(pg_url).rows()
    assert len(rows) == 200 and len({r["message_id"] for r in rows}) == 200
    # each row was written by one process or the other, and both read back the same one
    assert {r["location"] for r in rows} <= {"p0", "p1"}


def test_index_down_is_a_503_and_the_retry_is_answered(postgres, pg_url, tmp_path, keys, codec, images):
    receiver_key, device_key = keys
    from radseal.transport.index_pg import PostgresIndex

    store = FolderStore(tmp_path / "store")
    index = PostgresIndex(pg_url, timeout=2.0)  # how long a request waits for the server before its 503
    receiver = Receiver([receiver_key], [device_key.public_key()], store, index, tmp_path / "archive", codec=codec)
    data = seal_image(images[2], receiver_key.public_key(), device_key, codec=codec).data
    postgres.stop("immediate")
    try:
        with pytest.raises(Rejected) as err:
            receiver.accept(data)
        assert err.value.status == 503 and err.value.code == "index_unavailable"
    finally:
        postgres.start()
    # The pool reconnects in the background (with back-off): until it has, requests still get the
    # 503 and the sender retries, as here.
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            first, duplicate = receiver.accept(data)
            break
        except Rejected as exc:
            assert exc.code == "index_unavailable" and time.monotonic() < deadline
            time.sleep(0.5)
    assert not duplicate and receiver.accept(data) == (first, True)
    assert store.count() == 1 and index.count() == 1


def test_serve_with_a_postgresql_index(pg_url, tmp_path, keys, codec, images):
    """Two receiver processes on one PostgreSQL index and one state folder; the same message to both."""
    import httpx

    receiver_key, device_key = keys
    save_private_key(receiver_key, tmp_path / "receiver.key")
    save_public_key(device_key.public_key(), tmp_path / "device.pub")
    procs = [ReceiverProcess(["--key", str(tmp_path / "receiver.key"), "--trust", str(tmp_path / "device.pub"),
                              "--store", str(tmp_path / "store"), "--index", pg_url, "--state", str(tmp_path / "state")],
                             free_port(), tmp_path / f"r{k}.log") for k in range(2)]
    try:
        for p in procs:
            p.start()
        data = seal_image(images[0], receiver_key.public_key(), device_key, codec=codec).data
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda k: httpx.post(procs[k % 2].url + "/v1/messages", content=data, timeout=30),
                                    range(8)))
    finally:
        for p in procs:
            p.stop()
    assert all(a.status_code == 200 for a in answers)
    assert len({a.json()["sop_instance_uid"] for a in answers}) == 1
    assert [a.headers["Radseal-Duplicate"] for a in answers].count("false") >= 1
    assert FolderStore(tmp_path / "store").count() == 1 and open_index(pg_url).count() == 1
    assert len(list((tmp_path / "state" / "archive").glob("*/*.rsl"))) == 1


@pytest.mark.slow
def test_fleet_drill_behind_haproxy(postgres, tmp_path):
    _need(haproxy_binary() is not None, "HAProxy (Debian package haproxy)")
    result = run_fleet_drill(tmp_path, postgres, n_images=60, senders=4, receivers=3, kills=3, seed=7)
    assert result.ok, result.problems
    assert result.kills == 3 and result.postgres_restarts == 1
    assert result.index_rows == result.stored_objects == result.archived == result.delivered == 60
    assert result.duplicates_in_store == 0 and result.pixel_mismatches == 0
    assert sum(1 for v in result.answered_by.values() if v > 0) >= 2  # the balancer spread the load


def test_radseal_serve_index_errors_are_one_line(tmp_path, capsys):
    from radseal.cli import main

    save_private_key(ReceiverKey.generate(), tmp_path / "receiver.key")
    save_public_key(DeviceKey.generate().public_key(), tmp_path / "device.pub")
    base = ["serve", "--key", str(tmp_path / "receiver.key"), "--trust", str(tmp_path / "device.pub"),
            "--store", str(tmp_path / "store"), "--state", str(tmp_path / "state"), "--port", "0", "--diagnosis", "off"]
    assert main([*base, "--index", f"postgresql://radseal:secret@127.0.0.1:{free_port()}/db"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("radseal: error: postgresql://radseal:***@") and "cannot open the receipt index" in err
    assert "secret" not in err and err.count("\n") == 1
    assert main([*base, "--index", "mysql://x@127.0.0.1/db"]) != 0
    assert capsys.readouterr().err.startswith("radseal: error: mysql://x@127.0.0.1/db: not a receipt index")
    assert not (tmp_path / "state").exists() and not (tmp_path / "store").exists()  # nothing half-made


def test_radseal_serve_with_index_url_records_in_postgresql(pg_url, tmp_path, keys, codec, images):
    import httpx

    from radseal.pipeline import default_codec

    receiver_key, device_key = keys
    save_private_key(receiver_key, tmp_path / "receiver.key")
    save_public_key(device_key.public_key(), tmp_path / "device.pub")
    port = free_port()
    cmd = [sys.executable, "-m", "radseal", "serve", "--key", str(tmp_path / "receiver.key"), "--trust",
           str(tmp_path / "device.pub"), "--store", str(tmp_path / "store"), "--state", str(tmp_path / "state"),
           "--index", pg_url, "--port", str(port), "--diagnosis", "off"]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    try:
        import time

        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "radseal serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        data = seal_image(images[1], receiver_key.public_key(), device_key, codec=default_codec()).data
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=data, timeout=60)
    finally:
        proc.terminate()
        proc.wait(30)
    assert answer.status_code == 200, answer.text
    assert open_index(pg_url).get(parse_header(data).message_id) == answer.json()
    assert not (tmp_path / "state" / "index.sqlite").exists()
    assert "index: PostgresIndex('postgresql://radseal@127.0.0.1:" in log.read_text()


def test_a_starting_receiver_keeps_a_live_neighbours_uploads_in_the_shared_spool(tmp_path):
    from radseal.io.files import HOST_TAG
    from radseal.transport.receiver import _sweep_spool

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        spool = tmp_path / "incoming"
        spool.mkdir()
        neighbour = spool / f".upload-{HOST_TAG}-{live.pid}-abc123.rsl"
        other_host = spool / f".upload-otherhost-{live.pid}-abc123.rsl"
        left_by_dead = spool / f".upload-{HOST_TAG}-{dead.pid}-abc123.rsl"
        old_style = spool / ".upload-k2j4x9q1.rsl"  # written by an earlier version (one receiver per folder)
        for f in (neighbour, other_host, left_by_dead, old_style):
            f.write_bytes(b"RSL")
        _sweep_spool(spool)
        assert neighbour.exists() and other_host.exists()
        assert not left_by_dead.exists() and not old_style.exists()
    finally:
        live.kill()
        live.wait()


_ARCHIVE_RACE = """
import sys
from pathlib import Path
from radseal.transport.files import durable_write_new
folder, me = Path(sys.argv[1]), sys.argv[2]
wins = [str(i) for i in range(100) if durable_write_new(folder / f"{i}.rsl", (me * 50000).encode())]
print(" ".join(wins))
"""


def test_archive_writes_in_a_shared_folder_never_replace_across_processes(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _ARCHIVE_RACE, str(tmp_path), tag], stdout=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    outs = [set(p.communicate(timeout=120)[0].split()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not (outs[0] & outs[1]) and len(outs[0] | outs[1]) == 100  # each name created by exactly one process
    for i in range(100):
        winner = "a" if str(i) in outs[0] else "b"
        assert (tmp_path / f"{i}.rsl").read_bytes() == (winner * 50000).encode()  # whole, and the first writer's
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("storage_in_postgres", [False, True], ids=["index", "index+storage"])
def test_fleet_drill_into_orthanc_on_postgresql_restarted_once(postgres, tmp_path, storage_in_postgres):
    """Receivers store through Orthanc's REST API into an Orthanc whose index (and, in the second case,
    storage) is PostgreSQL (Debian orthanc-postgresql, a database of its own in the receipts' cluster);
    Orthanc SIGKILLed and restarted, PostgreSQL crashed and restarted and one receiver killed mid-run:
    every image in Orthanc exactly once and pixel-identical to a local decode."""
    from radseal.transport.drill import orthanc_binary, orthanc_postgresql_plugin

    _need(haproxy_binary() is not None, "HAProxy (Debian package haproxy)")
    _need(orthanc_binary() is not None, "Orthanc (Debian package orthanc)")
    _need(orthanc_postgresql_plugin() is not None, "Orthanc's PostgreSQL plugin (Debian package orthanc-postgresql)")
    postgres.fresh_database("fleet_orthanc_receipts")
    index_url = postgres.url
    postgres.url = index_url.rsplit("/", 1)[0] + "/fleet_orthanc_receipts"
    try:
        result = run_fleet_drill(tmp_path, postgres, n_images=24, senders=2, receivers=2, kills=1,
                                 postgres_restart=True, orthanc=True, orthanc_restart=True,
                                 orthanc_storage_in_postgres=storage_in_postgres, seed=11)
    finally:
        postgres.url = index_url
    assert result.problems == []
    assert result.pacs == "orthanc-postgresql"
    assert result.orthanc_restarts == 1 and result.postgres_restarts >= 1
    assert result.orthanc_index_instances == 24  # recorded in Orthanc's tables in PostgreSQL
    # the DICOM files: in Orthanc's storage folder, or (storage plugin) none there
    assert (result.orthanc_files_on_disk == 0) if storage_in_postgres else (result.orthanc_files_on_disk >= 24)
    assert result.stored_objects == result.images == 24
    assert result.duplicates_in_store == 0 and result.pixel_mismatches == 0
    assert result.kills == 1
