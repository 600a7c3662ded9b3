"""Fault drills: prove that nothing is lost or stored twice when things break.

Pieces, usable on their own:

* :class:`BitDropCodec` – a tiny deterministic lossy codec (drops low bits,
  deflates) so a drill runs in seconds without the learned codec's weights;
* :class:`FlakyProxy` – a loopback TCP proxy that cuts connections at random
  points of the request or the response;
* :class:`ReceiverProcess` – a receiver in its own process (uvicorn), to be
  SIGKILLed and restarted;
* :func:`run_fault_drill` – N images through the proxy while the receiver is
  killed and restarted at random moments; then every check: each image stored
  exactly once, stored pixels identical to a local decode, no partial files;
* :class:`PostgresCluster`, :class:`HAProxyProcess` and :func:`run_fleet_drill`
  – several receivers behind HAProxy sharing a PostgreSQL index, a state
  folder and a store; receivers SIGKILLed and PostgreSQL restarted mid-run.

``python -m radseal.transport.drill serve ...`` is the receiver process entry
point (it can load the stand-in codec, which ``radseal serve`` does not offer).
"""

from __future__ import annotations

import argparse
import io
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from radseal.image import Image

# ---------------------------------------------------------------- stand-in codec


class BitDropCodec:
    """Lossy stand-in codec: keep the high bits of each sample, deflate them.

    Deterministic and fast; the reconstruction puts each sample in the middle
    of its dropped range. ``quality`` in 0..100 picks how many bits to drop.
    """

    name = "bitdrop"
    _HEAD = struct.Struct(">4sHHBB")

    def __init__(self, drop_bits: int = 2) -> None:
        self.drop_bits = int(drop_bits)

    @property
    def model_id(self) -> str:
        return f"bitdrop-stand-in-{self.drop_bits}"

    def compress(self, img: Image, quality: float | None = None, bpp: float | None = None) -> bytes:
        drop = self.drop_bits if quality is None else max(0, min(img.bits_stored - 1, round((100 - quality) / 25)))
        kept = (img.pixels.astype(np.uint16) >> drop).astype("<u2")
        head = self._HEAD.pack(b"BDC1", img.height, img.width, img.bits_stored, drop)
        return head + zlib.compress(kept.tobytes(), 6)

    def decompress(self, data: bytes) -> Image:
        magic, rows, cols, bits, drop = self._HEAD.unpack_from(data)
        if magic != b"BDC1":
            raise ValueError("not a bitdrop payload")
        kept = np.frombuffer(zlib.decompress(data[self._HEAD.size :]), dtype="<u2").reshape(rows, cols)
        values = (kept.astype(np.uint32) << drop) + ((1 << drop) >> 1)
        return Image(np.minimum(values, (1 << bits) - 1), bits_stored=bits)


def load_codec(name: str):
    """``bitdrop`` (stand-in) or ``pretrained`` (the shipped learned codec)."""
    if name == "bitdrop":
        return BitDropCodec()
    from radseal.pipeline import default_codec

    return default_codec()


# ---------------------------------------------------------------- flaky proxy


class FlakyProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target``, cutting some connections.

    Each new connection is cut with probability ``cut_probability``: half of
    the cuts fall inside the request, half inside the response (after the
    receiver may already have stored the message: the retry must then be
    answered as a duplicate).
    """

    def __init__(self, target_port: int, cut_probability: float = 0.2, seed: int = 0, cut_window: int = 3000) -> None:
        self.target_port = target_port
        self.cut_window = cut_window
        self.cut_probability = cut_probability
        self._rng = random.Random(seed)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.cuts = 0  # connections actually cut (their byte limit was reached)
        self.request_cuts = 0
        self.response_cuts = 0
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:  # receiver down: the client sees the connection close at once
                client.close()
                continue
            self.connections += 1
            up_limit = down_limit = None
            if self._rng.random() < self.cut_probability:
                # Byte counts over the connection's life (it may carry several requests).
                if self._rng.random() < 0.5:
                    up_limit = self._rng.randint(0, self.cut_window)
                else:
                    down_limit = self._rng.randint(0, self.cut_window // 4)  # a receipt is ~600 bytes
            threading.Thread(target=self._serve, args=(client, upstream, up_limit, down_limit), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket, up_limit: int | None, down_limit: int | None) -> None:
        done = threading.Event()

        def close_both() -> None:
            done.set()
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

        def pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
            sent = 0
            try:
                while not done.is_set():
                    chunk = src.recv(65536)
                    if not chunk:
                        break
                    if limit is not None and sent + len(chunk) > limit:
                        dst.sendall(chunk[: max(0, limit - sent)])
                        self.cuts += 1
                        if src is client:
                            self.request_cuts += 1
                        else:
                            self.response_cuts += 1
                        break
                    dst.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            close_both()

        threading.Thread(target=pump, args=(upstream, client, down_limit), daemon=True).start()
        pump(client, upstream, up_limit)

    def close(self) -> None:
        self._stop.set()
        self._server.close()


# ---------------------------------------------------------------- receiver process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReceiverProcess:
    """A receiver (uvicorn) in a child process, on a fixed loopback port."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.args = args
        self.port = port
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radseal.transport.drill", "serve", "--port", str(self.port), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"receiver exited with status {self.proc.returncode}; log ends:\n{tail}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"receiver did not become healthy in {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def serve_main(argv: list[str]) -> int:
    """Entry point of the receiver child process."""
    import logging

    import uvicorn

    from radseal.seal import load_receiver_key, load_trusted
    from radseal.transport.receiver import create_app
    from radseal.transport.stores import open_store

    p = argparse.ArgumentParser(prog="python -m radseal.transport.drill serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--trust", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--index", required=True, help="SQLite file or postgresql:// URL")
    p.add_argument("--state", default=None, help="archive and spool folder (required with a postgresql:// index)")
    p.add_argument("--codec", default="bitdrop", choices=("bitdrop", "pretrained"))
    p.add_argument("--workers-threads", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(
        [load_receiver_key(a.key)],
        load_trusted(a.trust),
        open_store(a.store),
        a.index,
        archive_dir=Path(a.state) / "archive" if a.state else None,
        codec=load_codec(a.codec),
    )
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)
    return 0


# ---------------------------------------------------------------- the drill


def drill_images(n: int, size: int = 64, seed: int = 0) -> list[Image]:
    """``n`` small test images: crops of the RG3 radiograph (with its DICOM header) and, every
    fifth one, an 8-bit image without DICOM (a Secondary Capture on the receiver)."""
    from radseal.io import read_image
    from radseal.io.samples import sample_path

    rg3 = read_image(sample_path("RG3"))
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        y, x = (int(v) for v in rng.integers(0, rg3.height - size, size=2))
        crop = rg3.pixels[y : y + size, x : x + size]
        if i % 5 == 4:
            images.append(Image((crop >> 2).astype(np.uint8), bits_stored=8, metadata={"source_format": "PNG"}))
        else:
            images.append(Image(crop.copy(), rg3.bits_stored, rg3.photometric, source=rg3.source, metadata=dict(rg3.metadata)))
    return images


@dataclass
class DrillResult:
    images: int
    senders: int
    kills: int
    receiver_starts: int
    proxy_connections: int
    proxy_cuts: int
    proxy_request_cuts: int
    proxy_response_cuts: int
    retries: int
    seconds: float
    delivered: int
    index_rows: int
    stored_objects: int
    archived: int
    duplicates_in_store: int
    pixel_mismatches: int
    duplicate_answers: int
    partial_files_swept: int
    partial_files_before_recovery: int
    partial_files_after_recovery: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_fault_drill(
    workdir: str | Path,
    n_images: int = 30,
    *,
    senders: int = 2,
    kills: int = 4,
    cut_probability: float = 0.2,
    codec_name: str = "bitdrop",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> DrillResult:
    """Send ``n_images`` through a flaky proxy while the receiver is killed ``kills`` times."""
    import pydicom

    from radseal.pipeline import open_image, seal_image
    from radseal.seal import DeviceKey, ReceiverKey, parse_header, save_private_key, save_public_key
    from radseal.transport.files import partial_files
    from radseal.transport.index import ReceiptIndex
    from radseal.transport.outbox import Outbox
    from radseal.transport.stores import FolderStore

    say = progress or (lambda _msg: None)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    receiver_key, device_key = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver_key, work / "receiver.key")
    (work / "trusted").mkdir(exist_ok=True)
    save_public_key(device_key.public_key(), work / "trusted" / "device.pub")
    store_dir, index_path = work / "store", work / "state" / "index.sqlite"
    codec = load_codec(codec_name)

    say(f"sealing {n_images} images into {senders} outbox(es)")
    images = drill_images(n_images, seed=seed)
    outboxes = [Outbox(work / f"outbox{i}") for i in range(senders)]
    sealed_by_id: dict[str, bytes] = {}
    for i, img in enumerate(images):
        sealed = seal_image(img, receiver_key.public_key(), device_key, codec=codec)
        message_id = parse_header(sealed.data).message_id
        sealed_by_id[message_id] = sealed.data
        outboxes[i % senders].add(message_id, sealed.data, f"drill-{i}", f"drill-{i}")

    port = free_port()
    receiver = ReceiverProcess(
        ["--key", str(work / "receiver.key"), "--trust", str(work / "trusted"), "--store", str(store_dir),
         "--index", str(index_path), "--codec", codec_name],
        port,
        work / "receiver.log",
    )
    receiver.start()
    proxy = FlakyProxy(port, cut_probability, seed=seed + 1)
    done = threading.Event()
    kills_done = [0]
    start_failures: list[str] = []
    abort = threading.Event()

    # Kill at random points of the run: after a random number of stored
    # messages, plus a random few milliseconds (often mid-request).
    thresholds = sorted(rng.sample(range(1, n_images), min(kills, n_images - 1)))

    def killer() -> None:
        for threshold in thresholds:
            while not done.is_set() and _count_rows(index_path) < threshold:
                time.sleep(0.005)
            if done.is_set():
                return
            time.sleep(rng.uniform(0.0, 0.05))
            receiver.kill()
            kills_done[0] += 1
            say(f"killed the receiver after about {threshold} stored ({kills_done[0]}/{kills})")
            time.sleep(rng.uniform(0.0, 0.3))
            try:
                receiver.start()
            except RuntimeError as exc:
                start_failures.append(str(exc))
                abort.set()
                return

    started = time.perf_counter()
    killer_thread = threading.Thread(target=killer, daemon=True)
    killer_thread.start()
    retries = _deliver_all(f"http://127.0.0.1:{proxy.port}", outboxes, abort, seed=seed, cap=0.5, timeout=10.0)
    seconds = time.perf_counter() - started
    done.set()
    killer_thread.join()
    proxy.close()

    # A last crash and restart: partial files left by SIGKILLs are swept on start.
    receiver.kill()
    before = len(partial_files(store_dir)) + len(partial_files(work / "state"))
    try:
        receiver.start()
    except RuntimeError as exc:
        start_failures.append(str(exc))
    receiver.stop()
    after = len(partial_files(store_dir)) + len(partial_files(work / "state"))

    say("checking the store")
    problems: list[str] = [f"receiver failed to restart: {f}" for f in start_failures]
    index = ReceiptIndex(index_path)
    rows = index.rows()
    store = FolderStore(store_dir)
    files = store.files()
    delivered = sum(ob.counts()["delivered"] for ob in outboxes)
    pending = sum(ob.counts()["pending"] + ob.counts()["refused"] for ob in outboxes)
    if pending:
        problems.append(f"{pending} message(s) still pending or refused in the outboxes")
    if {r["message_id"] for r in rows} != set(sealed_by_id):
        problems.append("index message ids differ from the messages sent")
    sops = [r["sop_instance_uid"] for r in rows]
    stored_sops = [f.stem for f in files]
    duplicates = len(stored_sops) - len(set(stored_sops))
    if sorted(stored_sops) != sorted(sops):
        problems.append(f"store holds {len(files)} object(s) for {len(rows)} receipt(s)")
    archived = len(list((work / "state" / "archive").glob("*/*.rsl")))
    if archived != len(sealed_by_id):
        problems.append(f"archive holds {archived} message(s), expected {len(sealed_by_id)}")
    mismatches = 0
    for row in rows:
        local = open_image(sealed_by_id[row["message_id"]], receiver_key, device_key.public_key(), codec=codec)
        data = store.get(row["sop_instance_uid"])
        ds = pydicom.dcmread(io.BytesIO(data)) if data else None
        if ds is None or not np.array_equal(ds.pixel_array, local.image.pixels):
            mismatches += 1
    if mismatches:
        problems.append(f"{mismatches} stored image(s) differ from a local decode")
    if after:
        problems.append(f"{after} partial file(s) left after recovery")
    log_text = (work / "receiver.log").read_text(errors="replace")
    return DrillResult(
        images=n_images, senders=senders, kills=kills_done[0], receiver_starts=receiver.starts,
        proxy_connections=proxy.connections, proxy_cuts=proxy.cuts,
        proxy_request_cuts=proxy.request_cuts, proxy_response_cuts=proxy.response_cuts, retries=retries,
        seconds=round(seconds, 2), delivered=delivered, index_rows=len(rows), stored_objects=len(files),
        archived=archived, duplicates_in_store=duplicates, pixel_mismatches=mismatches,
        duplicate_answers=log_text.count(" duplicate message="),
        partial_files_swept=sum(int(m) for m in re.findall(r"removed (\d+) partial file", log_text)),
        partial_files_before_recovery=before, partial_files_after_recovery=after, problems=problems,
    )


class _Aborted(Exception):
    pass


def _deliver_all(url: str, outboxes: list, abort: threading.Event, *, seed: int, cap: float,
                 timeout: float) -> int:
    """Flush every outbox to ``url`` from its own thread, as that many devices would; return the retries.

    Retries are bounded, so that a receiver that cannot restart ends a drill with a report, not a
    hang; ``abort`` stops every sender at its next back-off.
    """
    from radseal.transport.sender import RetryPolicy, Sender

    retries = [0]
    lock = threading.Lock()

    def sleep_unless_aborted(seconds: float) -> None:
        if abort.wait(seconds):
            raise _Aborted()

    def on_retry(*_args) -> None:
        with lock:
            retries[0] += 1

    def send(outbox, k: int) -> None:
        policy = RetryPolicy(base=0.05, cap=cap, max_attempts=240)
        with Sender(url, outbox, retry=policy, timeout=timeout, rng=random.Random(seed + k),
                    sleep=sleep_unless_aborted) as sender:
            try:
                sender.flush(on_retry=on_retry)
            except _Aborted:
                pass

    threads = [threading.Thread(target=send, args=(outbox, k)) for k, outbox in enumerate(outboxes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return retries[0]


def _count_rows(index_path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(index_path, timeout=1.0) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    except sqlite3.Error:
        return 0


# ---------------------------------------------------------------- the fleet drill


class PostgresCluster:
    """A private PostgreSQL cluster run by ``scripts/start-postgres.sh`` (and stopped by ``stop-postgres.sh``)."""

    def __init__(self, scripts_dir: str | Path, folder: str | Path, port: int | None = None) -> None:
        self.scripts_dir = Path(scripts_dir)
        self.folder = Path(folder)
        self.port = port or free_port()
        self.url: str | None = None
        self.restarts = 0

    def start(self) -> str:
        out = subprocess.run(["bash", str(self.scripts_dir / "start-postgres.sh"), str(self.folder), str(self.port)],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"start-postgres.sh failed: {out.stderr.strip()[-1500:]}")
        self.url = out.stdout.strip().splitlines()[-1]
        return self.url

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(["bash", str(self.scripts_dir / "stop-postgres.sh"), str(self.folder), mode],
                       capture_output=True, timeout=120)

    def fresh_database(self, name: str, owner: str = "radseal") -> dict:
        """Drop and create database ``name`` (owned by ``owner``) in this running cluster; its connection
        settings (host, port, database, user) for a client such as Orthanc's PostgreSQL plugin."""
        import psycopg

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or not re.fullmatch(r"[a-z_][a-z0-9_]*", owner):
            raise ValueError(f"database and role names must be plain identifiers: {name!r}, {owner!r}")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return {"host": "127.0.0.1", "port": self.port, "database": name, "user": owner}

    def restart(self, down_seconds: float = 0.5) -> None:
        self.stop("immediate")  # as a crash: no checkpoint; committed rows must survive (WAL)
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1


def haproxy_binary() -> str | None:
    import shutil

    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


def haproxy_config(port: int, backends: list[int]) -> str:
    """HAProxy in front of receivers on loopback: round robin, health-checked every 200 ms.

    A refused connection, or a receiver that closed without answering (killed), is retried by HAProxy
    on another receiver (``retry-on conn-failure empty-response``, for requests that fit HAProxy's
    buffer). That is safe because accepting a message is idempotent: one stored before the close is
    answered as a duplicate with the receipt on record. Anything else is retried by the sender.
    """
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check inter 200ms fall 1 rise 1" for i, p in enumerate(backends))
    return f"""global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    retry-on conn-failure empty-response
    option redispatch

frontend radseal
    bind 127.0.0.1:{port}
    default_backend receivers

backend receivers
    balance roundrobin
    option httpchk GET /healthz
{servers}
"""


class HAProxyProcess:
    """Debian's haproxy in the foreground, with :func:`haproxy_config`."""

    def __init__(self, backends: list[int], workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = Path(workdir) / "haproxy.cfg"
        self.config.write_text(haproxy_config(self.port, backends))
        self.log_path = Path(workdir) / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("haproxy is not installed")
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy config refused: {check.stdout}{check.stderr}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text(errors='replace')[-1500:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("haproxy did not answer /healthz")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def orthanc_binary() -> str | None:
    import shutil

    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")


def orthanc_postgresql_plugin() -> str | None:
    """The index plugin of Debian's orthanc-postgresql, or None."""
    for candidate in ("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so",
                      *sorted(Path("/usr/lib/orthanc").glob("libOrthancPostgreSQLIndex.so*"), reverse=True)):
        if Path(candidate).exists():
            return str(candidate)
    return None


def orthanc_postgresql_config(http_port: int, workdir: Path, db: dict, *, storage_in_postgres: bool = False) -> dict:
    """Orthanc's configuration with its index (and, if asked, its storage) in PostgreSQL database ``db``
    (:meth:`PostgresCluster.fresh_database`); HTTP on loopback only, no DICOM port."""
    plugins = [orthanc_postgresql_plugin()]
    if storage_in_postgres:
        plugins.append(plugins[0].replace("PostgreSQLIndex", "PostgreSQLStorage"))
    return {
        "Name": "radseal-fleet",
        "HttpPort": http_port,
        "DicomServerEnabled": False,
        "DicomPort": 0,
        "StorageDirectory": str(workdir / "orthanc-storage"),
        "IndexDirectory": str(workdir / "orthanc-index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": plugins,
        "PostgreSQL": {
            "EnableIndex": True,
            "EnableStorage": storage_in_postgres,
            "Host": db["host"],
            "Port": db["port"],
            "Database": db["database"],
            "Username": db["user"],
            "Password": "",
            "Lock": False,
        },
    }


class OrthancProcess:
    """Debian's Orthanc with its index in PostgreSQL (plugin from orthanc-postgresql), to be SIGKILLed
    and restarted."""

    def __init__(self, workdir: Path, db: dict, *, storage_in_postgres: bool = False, port: int | None = None) -> None:
        import json

        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.config = self.workdir / "orthanc.json"
        self.config.write_text(json.dumps(orthanc_postgresql_config(self.port, self.workdir, db,
                                                                    storage_in_postgres=storage_in_postgres), indent=2))
        self.log_path = self.workdir / "orthanc.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed (Debian package orthanc)")
        if orthanc_postgresql_plugin() is None:
            raise RuntimeError("Orthanc's PostgreSQL plugin is not installed (Debian package orthanc-postgresql)")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with status {self.proc.returncode}; log ends:\n"
                                   f"{self.log_path.read_text(errors='replace')[-1500:]}")
            try:
                if httpx.get(self.url + "/system", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"Orthanc did not answer in {timeout} s; see {self.log_path}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class FleetResult:
    images: int
    senders: int
    receivers: int
    kills: int
    receiver_starts: int
    failed_starts: list[str]
    postgres_restarts: int
    retries: int
    seconds: float
    messages_per_second: float
    delivered: int
    index_rows: int
    stored_objects: int
    archived: int
    duplicates_in_store: int
    pixel_mismatches: int
    answered_by: dict
    problems: list[str] = field(default_factory=list)
    pacs: str = "folder"
    orthanc_restarts: int = 0
    orthanc_unplanned_exits: int = 0
    orthanc_index_instances: int = 0  # instances in Orthanc's index tables in PostgreSQL
    orthanc_version: str = ""
    orthanc_files_on_disk: int = 0  # files in Orthanc's StorageDirectory (0 when its storage is PostgreSQL)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_fleet_drill(
    workdir: str | Path,
    postgres: PostgresCluster,
    n_images: int = 60,
    *,
    senders: int = 4,
    receivers: int = 3,
    kills: int = 3,
    postgres_restart: bool = True,
    orthanc: bool = False,
    orthanc_restart: bool = True,
    orthanc_storage_in_postgres: bool = False,
    codec_name: str = "bitdrop",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> FleetResult:
    """``n_images`` from ``senders`` devices through HAProxy to ``receivers`` receivers sharing ``postgres``
    (started), one state folder (archive) and one store; ``kills`` random receivers SIGKILLed and
    restarted, PostgreSQL crashed and restarted once; then every check.

    The store is a folder, or with ``orthanc`` an Orthanc (Debian orthanc + orthanc-postgresql) whose
    index (and with ``orthanc_storage_in_postgres`` its storage) is a database of its own in ``postgres``;
    the receivers store through its REST API (``--store orthanc+http://...``) and, with
    ``orthanc_restart``, Orthanc is SIGKILLed and restarted once mid-run. An Orthanc that exits by itself
    is restarted as a supervisor would and counted (``orthanc_unplanned_exits``). The checks then count
    the instances in Orthanc (one per image, none twice) and compare each one's pixels with a local
    decode."""
    import pydicom

    from radseal.pipeline import open_image, seal_image
    from radseal.seal import DeviceKey, ReceiverKey, parse_header, save_private_key, save_public_key
    from radseal.transport.index import open_index
    from radseal.transport.outbox import Outbox
    from radseal.transport.stores import FolderStore, OrthancStore

    say = progress or (lambda _msg: None)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    receiver_key = ReceiverKey.generate()
    save_private_key(receiver_key, work / "receiver.key")
    (work / "trusted").mkdir(exist_ok=True)
    devices = [DeviceKey.generate() for _ in range(senders)]
    for k, dev in enumerate(devices):
        save_public_key(dev.public_key(), work / "trusted" / f"device{k}.pub")
    store_dir, state = work / "store", work / "state"
    codec = load_codec(codec_name)
    index_url = postgres.url
    assert index_url is not None, "start the PostgreSQL cluster first"

    say(f"sealing {n_images} images from {senders} devices")
    outboxes = [Outbox(work / f"outbox{i}") for i in range(senders)]
    sealed: dict[str, tuple[bytes, int]] = {}
    for i, img in enumerate(drill_images(n_images, seed=seed)):
        k = i % senders
        message = seal_image(img, receiver_key.public_key(), devices[k], codec=codec)
        message_id = parse_header(message.data).message_id
        sealed[message_id] = (message.data, k)
        outboxes[k].add(message_id, message.data, f"fleet-{i}", f"fleet-{i}")

    pacs: OrthancProcess | None = None
    store_spec = str(store_dir)
    if orthanc:
        db = postgres.fresh_database("orthanc_fleet")
        pacs = OrthancProcess(work, db, storage_in_postgres=orthanc_storage_in_postgres)
        say(f"starting Orthanc on PostgreSQL database {db['database']} (port {pacs.port})")
        pacs.start()
        store_spec = "orthanc+" + pacs.url
    procs = [
        ReceiverProcess(
            ["--key", str(work / "receiver.key"), "--trust", str(work / "trusted"), "--store", store_spec,
             "--index", index_url, "--state", str(state), "--codec", codec_name],
            free_port(), work / f"receiver{r}.log")
        for r in range(receivers)
    ]
    try:
        for p in procs:
            p.start()
        balancer = HAProxyProcess([p.port for p in procs], work)
        balancer.start()
    except BaseException:  # leave no process behind
        for p in procs:
            p.kill()
        if pacs is not None:
            pacs.kill()
        raise
    index = open_index(index_url)
    done = threading.Event()
    abort = threading.Event()
    failures: list[str] = []
    kills_done = [0]

    def count() -> int:
        try:
            return index.count()
        except Exception:  # the server restarting
            return 0

    # Faults at random points of the first two thirds of the run: after a random number of stored
    # messages (plus a few ms: often mid-request). A killed receiver restarts in the background while
    # the others carry the load, as a supervisor (systemd) would restart it.
    last = max(2, 2 * n_images // 3)
    events = [(t, "kill") for t in rng.sample(range(1, last), min(kills, last - 1))]
    if postgres_restart:
        events.append((rng.randint(max(1, n_images // 4), max(1, n_images // 2)), "postgres"))
    if pacs is not None and orthanc_restart:
        events.append((rng.randint(max(1, n_images // 3), max(1, 2 * n_images // 3)), "orthanc"))
    events.sort()
    restarting: set[int] = set()
    orthanc_lock = threading.Lock()
    orthanc_restarts = [0]
    orthanc_unplanned = [0]

    def start_orthanc() -> None:  # with orthanc_lock held; retried as a supervisor would, up to 5 times
        for attempt in range(5):
            try:
                pacs.start()
                return
            except RuntimeError as exc:
                pacs.kill()
                failed_starts.append("Orthanc: " + str(exc).splitlines()[-1][-300:])
                if attempt == 4:
                    failures.append(str(exc))
                    abort.set()
                time.sleep(1.0)

    def orthanc_watchdog() -> None:
        while not done.wait(0.2):
            with orthanc_lock:
                if not pacs.running() and not done.is_set() and not abort.is_set():
                    orthanc_unplanned[0] += 1
                    say("Orthanc exited by itself; restarting it")
                    start_orthanc()
    failed_starts: list[str] = []
    restarters: list[threading.Thread] = []

    def restart_later(victim: ReceiverProcess) -> None:
        # As a supervisor (systemd Restart=always) would: a receiver that exits at start, e.g. because
        # PostgreSQL is still recovering from its crash, is started again, up to 5 times.
        time.sleep(rng.uniform(0.1, 0.5))
        try:
            for attempt in range(5):
                try:
                    victim.start()
                    return
                except RuntimeError as exc:
                    victim.kill()
                    failed_starts.append(str(exc).splitlines()[-1][-300:])
                    if attempt == 4:
                        failures.append(str(exc))
                        abort.set()
                    time.sleep(1.0)
        finally:
            restarting.discard(victim.port)

    def chaos() -> None:
        for threshold, kind in events:
            while not done.is_set() and count() < threshold:
                time.sleep(0.005)
            if done.is_set():
                return
            time.sleep(rng.uniform(0.0, 0.03))
            if kind == "kill":
                candidates = [p for p in procs if p.port not in restarting]
                if not candidates:
                    continue
                victim = rng.choice(candidates)
                victim.kill()
                restarting.add(victim.port)
                kills_done[0] += 1
                say(f"killed receiver on port {victim.port} after about {threshold} stored")
                t = threading.Thread(target=restart_later, args=(victim,), daemon=True)
                t.start()
                restarters.append(t)
            elif kind == "orthanc":
                say(f"killing and restarting Orthanc after about {threshold} stored")
                with orthanc_lock:
                    pacs.kill()
                    time.sleep(rng.uniform(0.2, 0.6))
                    start_orthanc()
                    orthanc_restarts[0] += 1
            else:
                say(f"crashing and restarting PostgreSQL after about {threshold} stored")
                try:
                    postgres.restart()
                except RuntimeError as exc:
                    failures.append(str(exc))
                    abort.set()
                    return

    started = time.perf_counter()
    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    watchdog = threading.Thread(target=orthanc_watchdog, daemon=True) if pacs is not None else None
    if watchdog is not None:
        watchdog.start()
    retries = _deliver_all(balancer.url, outboxes, abort, seed=seed, cap=1.0, timeout=30.0)
    seconds = time.perf_counter() - started
    done.set()
    chaos_thread.join()
    if watchdog is not None:
        watchdog.join()
    for t in restarters:
        t.join()
    balancer.stop()
    for p in procs:
        p.stop()

    say("checking the index, the archive and the store")
    problems = [f"fault injection failed: {f}" for f in failures]
    rows = index.rows()
    index.close()
    sops = [r["sop_instance_uid"] for r in rows]
    if pacs is not None:
        if not pacs.running():
            orthanc_unplanned[0] += 1
            pacs.start()
        store = OrthancStore(pacs.url)
        orthanc_version = store.check()
        orthanc_files = sum(1 for f in (work / "orthanc-storage").rglob("*") if f.is_file())
        if orthanc_storage_in_postgres and orthanc_files:
            problems.append(f"Orthanc's storage should be PostgreSQL, yet {orthanc_files} file(s) are in its storage folder")
        stored_count = store.count()
        found = {sop: store.find(sop) for sop in set(sops)}
        duplicates = sum(max(0, len(ids) - 1) for ids in found.values())
        missing = sum(1 for ids in found.values() if not ids)
        if stored_count != len(sealed) or missing or duplicates:
            problems.append(f"Orthanc holds {stored_count} instance(s) for {len(sealed)} image(s) "
                            f"({missing} receipt(s) without an instance, {duplicates} SOP Instance UID(s) stored twice)")
        # Orthanc's own index tables in PostgreSQL (resource type 3: instance), read directly: the
        # instances are recorded there, not in an SQLite file of Orthanc's.
        import psycopg

        with psycopg.connect(f"postgresql://{db['user']}@{db['host']}:{db['port']}/{db['database']}") as conn:
            orthanc_index_instances = conn.execute("SELECT count(*) FROM resources WHERE resourcetype = 3").fetchone()[0]
        if orthanc_index_instances != len(sealed):
            problems.append(f"Orthanc's PostgreSQL index lists {orthanc_index_instances} instance(s) for {len(sealed)} image(s)")
    else:
        orthanc_index_instances, orthanc_version, orthanc_files = 0, "", 0
        store = FolderStore(store_dir)
        files = store.files()
        stored_count = len(files)
        stored_sops = [f.stem for f in files]
        duplicates = len(stored_sops) - len(set(stored_sops))
        if sorted(stored_sops) != sorted(sops):
            problems.append(f"store holds {len(files)} object(s) for {len(rows)} receipt(s)")
    delivered = sum(ob.counts()["delivered"] for ob in outboxes)
    pending = sum(ob.counts()["pending"] + ob.counts()["refused"] for ob in outboxes)
    if pending:
        problems.append(f"{pending} message(s) still pending or refused in the outboxes")
    if sorted(r["message_id"] for r in rows) != sorted(sealed):
        problems.append(f"index holds {len(rows)} row(s) for {len(sealed)} message(s) sent, or other ids")
    archived = len(list((state / "archive").glob("*/*.rsl")))
    if archived != len(sealed):
        problems.append(f"archive holds {archived} message(s), expected {len(sealed)}")
    mismatches = 0
    for row in rows:
        data, k = sealed[row["message_id"]]
        local = open_image(data, receiver_key, devices[k].public_key(), codec=codec)
        stored = store.get(row["sop_instance_uid"])
        ds = pydicom.dcmread(io.BytesIO(stored)) if stored else None
        if ds is None or not np.array_equal(ds.pixel_array, local.image.pixels):
            mismatches += 1
    if mismatches:
        problems.append(f"{mismatches} stored image(s) differ from a local decode")
    if pacs is not None:
        store.close()
        pacs.stop()
    answered_by = {p.port: (p.log_path.read_text(errors="replace").count("stored message=")) for p in procs}
    return FleetResult(
        images=n_images, senders=senders, receivers=receivers, kills=kills_done[0],
        receiver_starts=sum(p.starts for p in procs), failed_starts=failed_starts, postgres_restarts=postgres.restarts, retries=retries,
        seconds=round(seconds, 2), messages_per_second=round(n_images / seconds, 2) if seconds else 0.0,
        delivered=delivered, index_rows=len(rows), stored_objects=stored_count, archived=archived,
        duplicates_in_store=duplicates, pixel_mismatches=mismatches,
        answered_by={str(k): v for k, v in answered_by.items()}, problems=problems,
        pacs="orthanc-postgresql" if pacs is not None else "folder",
        orthanc_restarts=orthanc_restarts[0], orthanc_unplanned_exits=orthanc_unplanned[0],
        orthanc_index_instances=orthanc_index_instances, orthanc_version=orthanc_version,
        orthanc_files_on_disk=orthanc_files,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    if argv[:1] == ["haproxy-config"]:
        p = argparse.ArgumentParser(prog="python -m radseal.transport.drill haproxy-config")
        p.add_argument("--port", type=int, required=True, help="port HAProxy listens on (127.0.0.1)")
        p.add_argument("--backend", type=int, action="append", required=True, metavar="PORT",
                       help="a receiver's port on 127.0.0.1 (repeat)")
        a = p.parse_args(argv[1:])
        sys.stdout.write(haproxy_config(a.port, a.backend))
        return 0
    print("usage: python -m radseal.transport.drill serve --port P --key K --trust DIR --store S --index I [--state DIR]\n"
          "       python -m radseal.transport.drill haproxy-config --port P --backend PORT [--backend PORT ...]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
