"""The receiver under hostile and careless clients (issue: hardening).

Slow and stalled clients, garbage bodies, aborted uploads, messages that
cannot be stored, oversized images, future dates, several trusted key
files, several receiver keys with their own passphrases, and what the
receiver does not serve. The network tests open raw sockets against a real
``radseal serve`` subprocess.
"""

from __future__ import annotations

import logging
import select
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from radseal.cli import build_parser, main
from radseal.container import pack_body
from radseal.image import Image
from radseal.pipeline import BODY_FORMAT, seal_image
from radseal.seal import DeviceKey, ReceiverKey, parse_header, save_private_key, save_public_key, seal
from radseal.transport.drill import BitDropCodec, free_port
from radseal.transport.receiver import create_app
from radseal.transport.stores import FolderStore

PATIENT_NAME = "Hardening^Patient"


def codec_available() -> str | None:
    try:
        from radseal.pipeline import default_codec

        default_codec()
    except Exception as exc:  # weights missing on this machine
        return f"the shipped codec does not load here ({type(exc).__name__}: {exc})"
    return None


# --------------------------------------------------------------------------- a real `radseal serve`


@pytest.fixture(scope="module")
def keyfolder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver, root / "receiver.key")
    save_public_key(receiver.public_key(), root / "receiver.pub")
    save_private_key(device, root / "device.key")
    (root / "devices").mkdir()
    save_public_key(device.public_key(), root / "devices" / "device.pub")
    return root, receiver, device


def start_serve(root: Path, name: str, *extra: str) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = root / f"{name}.log"
    cmd = [sys.executable, "-m", "radseal", "serve", "--key", str(root / "receiver.key"),
           "--trust", str(root / "devices"), "--store", str(root / f"{name}-store"),
           "--state", str(root / f"{name}-state"), "--port", str(port), "--diagnosis", "off", *extra]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"radseal serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc, port, log
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("radseal serve did not come up in 90 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(keyfolder):
    """One receiver with short limits: headers within 6 s, bodies 6 s then 1 KiB/s."""
    reason = codec_available()
    if reason:
        pytest.skip(reason)
    root, receiver, device = keyfolder
    proc, port, log = start_serve(root, "main", "--header-timeout", "6", "--body-timeout", "6", "--min-rate", "1")
    yield port, log, root
    stop(proc)


def valid_message(keyfolder, value: int = 700) -> bytes:
    from radseal.pipeline import default_codec

    root, receiver, device = keyfolder
    pixels = np.full((64, 64), value, np.uint16)
    pixels[16:48, 16:48] += 200
    # texture, so that the sealed message stays above 1000 bytes whichever codec is the default
    pixels += np.random.default_rng(value).integers(0, 32, pixels.shape, dtype=np.uint16)
    # quality 10: the default rate would code this small image at about 30:1, under 1000 bytes
    return seal_image(Image(pixels, bits_stored=12), receiver.public_key(), device, codec=default_codec(), quality=10).data


def post_head(port: int, length: int, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Length: %d\r\n\r\n" % length + body)
    return s


def read_reply(s: socket.socket, timeout: float = 3) -> bytes:
    """Everything the server sends until it closes the connection (it answers refusals with Connection: close)."""
    s.settimeout(timeout)
    reply = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    return reply


def closed_by_server(s: socket.socket) -> bool:
    """True when the server has closed the connection (whatever it answered first)."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        while True:
            data = s.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_slow_and_stalled_clients_are_cut_off_and_a_valid_send_goes_through_meanwhile(server, keyfolder):
    port, log, _ = server
    good = valid_message(keyfolder, 600)
    started = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]  # connect, send nothing
    half_headers = []
    for _ in range(100):  # a request line and part of the headers, never the blank line
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: receiver\r\nContent-Le")
        half_headers.append(s)
    stalled = [post_head(port, len(good), good[:100]) for _ in range(80)]  # headers and 100 body bytes, then nothing
    trickle = [post_head(port, len(good), good[:72]) for _ in range(20)]  # then one byte every 0.5 s
    hangers = idle + half_headers + stalled + trickle
    assert len(hangers) == 300

    answer = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=good, timeout=30)
    sent_after = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["message_id"] == parse_header(good).message_id
    still_open = sum(not closed_by_server(s) for s in hangers)
    assert sent_after < 6 and still_open == 300, (sent_after, still_open)  # it went through while they all hung on

    # Then every one of them is cut off: headers after 6 s, bodies after 6 s plus what 1 KiB/s allows.
    deadline = started + 6 + 10
    open_ = set(range(len(hangers)))
    offset = 72
    while open_ and time.monotonic() < deadline:
        for i in list(open_):
            if closed_by_server(hangers[i]):
                open_.discard(i)
        for i in range(300 - len(trickle), 300):
            if i in open_:
                try:
                    hangers[i].sendall(good[offset:offset + 1])
                except OSError:
                    open_.discard(i)
        offset += 1
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    for s in hangers:
        s.close()
    assert not open_, f"{len(open_)} of 300 slow clients still connected after {elapsed:.0f} s"
    text = log.read_text()
    assert "error=body_timeout" in text and "no complete request headers within 6 s" in text
    assert "Traceback" not in text
    again = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=valid_message(keyfolder, 650), timeout=30)
    assert again.status_code == 200


def test_a_slow_but_steady_upload_outlives_the_header_limit(server, keyfolder):
    """The header deadline ends with the headers: a body still arriving after it (within the rate) is stored."""
    port, _, _ = server
    good = valid_message(keyfolder, 550)
    assert len(good) > 1000
    started = time.monotonic()
    s = post_head(port, len(good), good[:72])
    time.sleep(5)
    s.sendall(good[72:-10])
    time.sleep(max(0.0, started + 6.4 - time.monotonic()))  # past the 6 s header limit, within 6 s + 1017 B / 1 KiB/s
    s.sendall(good[-10:])
    s.settimeout(30)
    reply = s.recv(65536)
    s.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]


def test_the_connection_limit_stays_below_the_open_file_limit():
    import resource

    from radseal.transport.server import connection_limit

    assert connection_limit(10, 5) == 10
    allowed = connection_limit(10**9, 256)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 1 <= allowed < 10**9 and (soft == resource.RLIM_INFINITY or allowed + 256 < soft)


def test_garbage_is_refused_on_its_first_bytes_and_bodies_go_to_private_files(server, keyfolder):
    port, log, root = server
    # 50 MB announced, 16 bytes of garbage sent: the answer comes at once, the rest is never read.
    reply = read_reply(post_head(port, 50_000_000, b"GARBAGE-GARBAGE!"))
    assert reply.startswith(b"HTTP/1.1 400") and b'"malformed"' in reply

    # A header from an unknown device: refused after its 72 bytes.
    stranger = seal_image(Image(np.zeros((8, 8), np.uint8), bits_stored=8), keyfolder[1].public_key(),
                          DeviceKey.generate(), codec=BitDropCodec()).data
    reply = read_reply(post_head(port, len(stranger), stranger[:72]))
    assert reply.startswith(b"HTTP/1.1 403") and b"unknown_sender" in reply and b"trusted device key(s)" not in reply

    # A valid header: the body goes to a private file in STATE/incoming, removed when the upload ends.
    good = valid_message(keyfolder, 500)
    s = post_head(port, len(good), good[:1000])
    incoming = root / "main-state" / "incoming"
    for _ in range(50):
        files = list(incoming.glob(".upload-*"))
        if files:
            break
        time.sleep(0.05)
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600 and stat.S_IMODE(incoming.stat().st_mode) == 0o700
    assert files[0].read_bytes() == good[:1000]
    s.close()  # an aborted upload: one log line, no traceback, no file left
    for _ in range(50):
        if not list(incoming.glob(".upload-*")):
            break
        time.sleep(0.05)
    assert not list(incoming.glob(".upload-*"))
    time.sleep(0.3)
    text = log.read_text()
    assert "aborted: the client closed the connection after 1000 of" in text
    assert "Traceback" not in text and "Exception in ASGI" not in text


def test_uploads_in_flight_are_bounded(keyfolder):
    reason = codec_available()
    if reason:
        pytest.skip(reason)
    root = keyfolder[0]
    proc, port, log = start_serve(root, "busy", "--max-uploads", "2")
    try:
        good = valid_message(keyfolder, 400)
        hangers = [post_head(port, len(good), good[:100]) for _ in range(2)]
        time.sleep(0.5)
        busy = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=good, timeout=30)
        assert busy.status_code == 503 and busy.json()["error"] == "busy" and busy.headers["Retry-After"]
        for s in hangers:
            s.close()
        time.sleep(0.5)
        assert httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=good, timeout=30).status_code == 200
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text()


# --------------------------------------------------------------------------- the app in process


@pytest.fixture(scope="module")
def keys():
    return ReceiverKey.generate(), DeviceKey.generate()


@pytest.fixture
def make(tmp_path, keys):
    receiver_key, device_key = keys

    def build(trusted=None, **kwargs):
        kwargs.setdefault("codec", BitDropCodec())
        store = kwargs.pop("store", FolderStore(tmp_path / "store"))
        app = create_app(receiver_key, trusted or [device_key.public_key()], store, tmp_path / "state" / "index.sqlite", **kwargs)
        return TestClient(app, raise_server_exceptions=False)

    return build


def sealed(keys, size=(48, 48), created=None, payload=None, rows_cols=None) -> bytes:
    receiver_key, device_key = keys
    img = Image(np.arange(size[0] * size[1], dtype=np.uint16).reshape(size) % 4096, bits_stored=12)
    if payload is None and created is None:
        return seal_image(img, receiver_key.public_key(), device_key, codec=BitDropCodec()).data
    rows, cols = rows_cols or size
    metadata = {"format": BODY_FORMAT, "image": {"rows": rows, "columns": cols, "bits_stored": 12,
                                                 "photometric": "MONOCHROME2", "signed": False},
                "source": {}, "codec": {"name": "bitdrop"}}
    body = pack_body(payload if payload is not None else BitDropCodec().compress(img), metadata)
    return seal(body, receiver_key.public_key(), device_key, created=created)


def test_openapi_and_docs_are_not_served_and_403_does_not_count_devices(make, keys):
    others = [DeviceKey.generate().public_key() for _ in range(3)]
    client = make(trusted=[keys[1].public_key(), *others])
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    data = seal_image(Image(np.zeros((8, 8), np.uint8), bits_stored=8), keys[0].public_key(), DeviceKey.generate(),
                      codec=BitDropCodec()).data
    answer = client.post("/v1/messages", content=data)
    assert answer.status_code == 403 and answer.json()["error"] == "unknown_sender"
    detail = answer.json()["detail"].replace(parse_header(data).sender_key_id, "")
    assert not any(ch.isdigit() for ch in detail), detail  # nothing that counts the trusted devices


def test_future_dated_container_is_refused_and_old_ones_accepted(make, keys, tmp_path):
    client = make()
    now = int(time.time())
    ahead = client.post("/v1/messages", content=sealed(keys, created=now + 2 * 86400))
    assert ahead.status_code == 422 and ahead.json()["error"] == "future_dated"
    assert "clock" in ahead.json()["detail"]
    assert not list((tmp_path / "state" / "archive").glob("*.rsl"))  # refused before anything is stored
    for created in (now + 3600, now - 30 * 86400, 0):  # an hour of skew; a month in an outbox; the epoch
        answer = client.post("/v1/messages", content=sealed(keys, created=created))
        assert answer.status_code == 200, (created, answer.text)


def test_future_date_refusal_needs_an_authentic_container(make, keys):
    data = bytearray(sealed(keys, created=int(time.time()) + 5 * 86400))
    data[100] ^= 1  # tampered: the refusal says so, not "future_dated"
    answer = make().post("/v1/messages", content=bytes(data))
    assert answer.status_code == 422 and answer.json()["error"] == "not_authentic"


class _NeverDecode(BitDropCodec):
    calls = 0

    def decompress(self, data):
        type(self).calls += 1
        raise AssertionError("the decoder must not run for an oversized image")


def test_oversized_images_are_refused_before_decoding(make, keys):
    from radseal.codec import bitstream
    from radseal.transport.receiver import Limits

    codec = _NeverDecode()
    client = make(codec=codec, limits=Limits(max_pixels=100 * 100))
    # The metadata declares 200 x 300.
    big = client.post("/v1/messages", content=sealed(keys, size=(200, 300), created=int(time.time())))
    assert big.status_code == 422 and big.json()["error"] == "image_too_large"
    assert "300x200 (width x height" in big.json()["detail"]
    # The metadata lies (48 x 48) but the codec stream's header declares 8000 x 8000: the stream header counts.
    head = bitstream.Header("rsc2-cdf97-ctx", 8000, 8000, 12, "MONOCHROME2", False, 3, 0, 4095)
    liar = sealed(keys, created=int(time.time()), payload=bitstream.pack(head, b"\x00" * 64), rows_cols=(48, 48))
    started = time.monotonic()
    answer = client.post("/v1/messages", content=liar)
    assert answer.status_code == 422 and answer.json()["error"] == "image_too_large"
    assert "codec stream" in answer.json()["detail"] and time.monotonic() - started < 5
    assert _NeverDecode.calls == 0
    # At the limit it is decoded.
    fine = make(limits=Limits(max_pixels=100 * 100)).post("/v1/messages", content=sealed(keys, size=(100, 100)))
    assert fine.status_code == 200, fine.text


def test_decode_command_refuses_an_oversized_image_in_one_line(tmp_path, keys, capsys):
    receiver_key, device_key = keys
    save_private_key(receiver_key, tmp_path / "r.key")
    save_public_key(device_key.public_key(), tmp_path / "d.pub")
    (tmp_path / "big.rsl").write_bytes(sealed(keys, size=(120, 100), created=int(time.time())))
    code = main(["decode", str(tmp_path / "big.rsl"), "--key", str(tmp_path / "r.key"), "--trust", str(tmp_path / "d.pub"),
                 "--max-pixels", "10000", "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("radseal: error:") and err.count("\n") == 1
    assert "100x120" in err and "--max-pixels" in err and not (tmp_path / "out.png").exists()


class _FailingStore(FolderStore):
    def __init__(self, root, exc):
        super().__init__(root)
        self.exc = exc

    def put(self, data, obj):
        raise self.exc


@pytest.mark.parametrize("exc, status, code", [
    (KeyError("SOPClassUID " + PATIENT_NAME), 422, "unstorable"),
    (AttributeError("no attribute " + PATIENT_NAME), 422, "unstorable"),
    (OSError(28, "No space left on device"), 503, "unavailable"),
])
def test_unexpected_failures_are_precise_refusals_never_500(make, keys, tmp_path, caplog, exc, status, code):
    client = make(store=_FailingStore(tmp_path / "store", exc))
    with caplog.at_level(logging.INFO, logger="radseal.receiver"):
        answer = client.post("/v1/messages", content=sealed(keys))
    assert answer.status_code == status and answer.json()["error"] == code
    assert type(exc).__name__ in answer.json()["detail"]
    assert PATIENT_NAME not in answer.text and PATIENT_NAME not in caplog.text  # the exception's text stays out
    lines = [r for r in caplog.records if r.name == "radseal.receiver" and f"error={code}" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


@pytest.mark.parametrize("attribute", ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_a_source_without_its_uids_is_stored_or_refused_with_a_reason_never_500(make, keys, attribute):
    """The issue's case: such a DICOM used to end in a plain-text 500 (and a sender retrying for ever)."""
    from radseal.io import read_image
    from radseal.io.samples import sample_path

    img = read_image(sample_path("RG3"))
    source = img.source.copy()
    del source[attribute]
    data = seal_image(Image(img.pixels[:64, :64].copy(), bits_stored=img.bits_stored, source=source),
                      keys[0].public_key(), keys[1], codec=BitDropCodec()).data
    answer = make().post("/v1/messages", content=data)
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 422:  # refused for good, with a reason the sender keeps
        assert answer.json()["error"] == "unstorable" and "will not help" in answer.json()["detail"]


def test_an_internal_fault_outside_processing_is_a_503_not_a_500(make, tmp_path):
    class BrokenKind(FolderStore):
        @property
        def kind(self):
            raise RuntimeError("bug")

    answer = make(store=BrokenKind(tmp_path / "store")).get("/healthz")
    assert answer.status_code == 503 and answer.json()["error"] == "internal"


def test_log_lines_never_carry_tracebacks_or_warning_text():
    from radseal.transport.server import _OneLine

    one = _OneLine()
    try:
        raise ValueError(PATIENT_NAME)
    except ValueError:
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n", None,
                                   sys.exc_info())
    assert one.filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert text == "Exception in ASGI application (ValueError)"
    warning = logging.LogRecord("py.warnings", logging.WARNING, __file__, 1,
                                f"/x/site-packages/pydicom/valuerep.py:440: UserWarning: Invalid value '{PATIENT_NAME}'\n"
                                "  warn_and_log(msg)\n", None, None)
    assert one.filter(warning)
    text = logging.Formatter("%(message)s").format(warning)
    assert PATIENT_NAME not in text and "UserWarning" in text and "pydicom/valuerep.py" in text and "\n" not in text


def test_the_receivers_logging_prints_one_line_per_event():
    """configure_logging as `radseal serve` uses it: uvicorn's traceback and a pydicom-style warning, one line each."""
    script = f"""
import logging, warnings
from radseal.transport.server import configure_logging
configure_logging()
try:
    raise ConnectionResetError({PATIENT_NAME!r})
except ConnectionResetError as exc:
    logging.getLogger("uvicorn.error").error("Exception in ASGI application\\n", exc_info=exc)
warnings.warn("Invalid value for VR PN: {PATIENT_NAME}", UserWarning)
logging.getLogger("pydicom").warning("value {PATIENT_NAME} is odd")
logging.getLogger("radseal.receiver").info("stored message=abc")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 3, out.stderr
    assert lines[0].endswith("uvicorn.error ERROR Exception in ASGI application (ConnectionResetError)")
    assert "py.warnings WARNING UserWarning from" in lines[1] and "text not logged" in lines[1]
    assert lines[2].endswith("radseal.receiver INFO stored message=abc")
    assert PATIENT_NAME not in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- the serve command's arguments


def serve_args(*argv: str):
    argv = list(argv) if "--trust" in argv else [*argv, "--trust", "t"]
    return build_parser().parse_args(["serve", "--store", "s", *argv])


def test_every_trust_option_is_kept(tmp_path):
    devices = [DeviceKey.generate() for _ in range(3)]
    (tmp_path / "folder").mkdir()
    save_public_key(devices[0].public_key(), tmp_path / "a.pub")
    save_public_key(devices[1].public_key(), tmp_path / "b.pub")
    save_public_key(devices[2].public_key(), tmp_path / "folder" / "c.pub")
    args = serve_args("--key", "k", "--trust", str(tmp_path / "a.pub"), "--trust", str(tmp_path / "b.pub"),
                      "--trust", str(tmp_path / "folder"))
    from radseal.seal import load_trusted

    assert args.trust == [str(tmp_path / "a.pub"), str(tmp_path / "b.pub"), str(tmp_path / "folder")]
    assert {k.key_id for k in load_trusted(args.trust)} == {d.key_id for d in devices}


@pytest.fixture
def rotation(tmp_path):
    """An old key protected by one passphrase, a new one by another, a third without one."""
    keys = [ReceiverKey.generate() for _ in range(3)]
    save_private_key(keys[0], tmp_path / "old.key", passphrase=b"old secret")
    save_private_key(keys[1], tmp_path / "new.key", passphrase=b"new secret")
    save_private_key(keys[2], tmp_path / "plain.key")
    (tmp_path / "old.pass").write_bytes(b"old secret\n")
    (tmp_path / "new.pass").write_bytes(b"new secret\n")
    return tmp_path, keys


def test_each_receiver_key_has_its_own_passphrase(rotation):
    from radseal.cli.transport import _load_receiver_keys

    d, keys = rotation
    args = serve_args("--key", str(d / "old.key"), "--passphrase-file", str(d / "old.pass"),
                      "--key", str(d / "plain.key"),
                      "--key", str(d / "new.key"), "--passphrase-file", str(d / "new.pass"))
    loaded = _load_receiver_keys(args.key, args.passphrase_file)
    assert [k.key_id for k in loaded] == [keys[0].key_id, keys[2].key_id, keys[1].key_id]
    # One key: the passphrase file may come first, as before.
    args = serve_args("--passphrase-file", str(d / "new.pass"), "--key", str(d / "new.key"))
    assert [k.key_id for k in _load_receiver_keys(args.key, args.passphrase_file)] == [keys[1].key_id]


@pytest.mark.parametrize("argv, message", [
    (["--passphrase-file", "{d}/old.pass", "--key", "{d}/old.key", "--key", "{d}/new.key"], "comes before any --key"),
    (["--key", "{d}/old.key", "--passphrase-file", "{d}/old.pass", "--passphrase-file", "{d}/new.pass",
      "--key", "{d}/new.key"], "followed by two passphrase files"),
    (["--key", "{d}/old.key", "--passphrase-file", "{d}/old.pass", "--key", "{d}/new.key"], "passphrase-protected"),
    (["--key", "{d}/plain.key", "--passphrase-file", "{d}/old.pass", "--key", "{d}/new.key",
      "--passphrase-file", "{d}/new.pass"], "not passphrase-protected"),
])
def test_passphrase_mistakes_are_one_line_errors(rotation, capsys, argv, message):
    d, _ = rotation
    argv = [a.format(d=d) for a in argv]
    code = main(["serve", *argv, "--trust", str(d), "--store", str(d / "store"), "--state", str(d / "state")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("radseal: error:") and err.count("\n") == 1 and message in err, err
    assert not (d / "state").exists() and not (d / "store").exists()


def test_cli_defaults_match_the_library():
    from radseal.cli import transport as cli
    from radseal.pipeline import DEFAULT_MAX_PIXELS
    from radseal.transport import receiver, server

    assert cli.DEFAULT_MAX_UPLOADS == receiver.DEFAULT_MAX_UPLOADS
    assert cli.DEFAULT_BODY_GRACE == receiver.DEFAULT_BODY_GRACE
    assert cli.DEFAULT_MIN_RATE == receiver.DEFAULT_MIN_RATE
    assert cli.DEFAULT_HEADER_TIMEOUT == server.DEFAULT_HEADER_TIMEOUT
    assert cli.DEFAULT_MAX_CONNECTIONS == server.DEFAULT_MAX_CONNECTIONS
    args = serve_args("--key", "k", "--trust", "t")
    assert args.max_pixels == DEFAULT_MAX_PIXELS
    decode = build_parser()._subparsers._group_actions[0].choices["decode"]
    assert f"default: {DEFAULT_MAX_PIXELS}" in decode.format_help().replace("\n", " ")


def test_metrics_count_outcomes_and_latencies_only_when_asked(make, keys):
    """GET /metrics (serve --metrics): stored, duplicate, refusals by status and code, bytes in, decode and store
    latency; absent by default (it tells any client how busy the receiver is); no ids in it."""
    assert make().get("/metrics").status_code == 404
    client = make(metrics=True)
    data = sealed(keys)
    assert client.post("/v1/messages", content=data).status_code == 200
    assert client.post("/v1/messages", content=data).status_code == 200  # a retry: duplicate
    assert client.post("/v1/messages", content=b"not a container at all").status_code == 400
    ahead = sealed(keys, created=int(time.time()) + 2 * 86400)
    assert client.post("/v1/messages", content=ahead).status_code == 422
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    values = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["radseal_messages_stored_total"] == 1
    assert values["radseal_messages_duplicate_total"] == 1
    assert values['radseal_messages_refused_total{code="malformed",status="400"}'] == 1
    assert values['radseal_messages_refused_total{code="future_dated",status="422"}'] == 1
    assert values["radseal_bytes_received_total"] >= 2 * len(data) + len(ahead)
    assert values["radseal_decode_seconds_count"] == 1 and values["radseal_store_seconds_count"] == 1
    header = parse_header(data)
    assert header.message_id not in answer.text and header.sender_key_id not in answer.text
