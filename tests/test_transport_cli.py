"""``radseal serve`` and ``radseal send`` end to end, with the shipped codec, on loopback."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from radseal.cli import main
from radseal.image import Image
from radseal.io import write_png
from radseal.seal import DeviceKey, ReceiverKey, save_private_key, save_public_key
from radseal.transport.drill import free_port
from radseal.transport.index import ReceiptIndex
from radseal.transport.outbox import Outbox
from radseal.transport.stores import FolderStore


def codec_available() -> str | None:
    try:
        from radseal.pipeline import default_codec

        default_codec()
    except Exception as exc:  # weights missing on this machine
        return f"the shipped codec does not load here ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture
def keyfiles(tmp_path):
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver, tmp_path / "receiver.key")
    save_public_key(receiver.public_key(), tmp_path / "receiver.pub")
    save_private_key(device, tmp_path / "device.key")
    (tmp_path / "devices").mkdir()
    save_public_key(device.public_key(), tmp_path / "devices" / "device.pub")
    return tmp_path


def self_signed_tls(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (it is its own CA) and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "radseal test receiver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls-cert.pem", folder / "tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def start_serve(keyfiles, port: int, tls: tuple[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "radseal", "serve", "--key", str(keyfiles / "receiver.key"),
           "--trust", str(keyfiles / "devices"), "--store", str(keyfiles / "store"),
           "--state", str(keyfiles / "state"), "--port", str(port), "--diagnosis", "off"]
    if tls:
        cmd += ["--ssl-certfile", tls[0], "--ssl-keyfile", tls[1]]
    scheme = "https" if tls else "http"
    proc = subprocess.Popen(cmd, stdout=open(keyfiles / "serve.log", "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"radseal serve exited: {(keyfiles / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{scheme}://127.0.0.1:{port}/healthz", timeout=0.5, verify=tls[0] if tls else True).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("radseal serve did not come up in 60 s")


def test_help_texts_have_examples(capsys):
    for command in ("serve", "send"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_send_usage_errors_are_one_line(keyfiles, capsys):
    assert main(["send", "--to", "http://127.0.0.1:9"]) != 0
    assert capsys.readouterr().err.startswith("radseal: error: give images to send")
    assert main(["send", "x.png", "--to", "http://127.0.0.1:9", "--outbox", str(keyfiles / "ob")]) != 0
    assert "--recipient" in capsys.readouterr().err


def test_serve_refuses_a_missing_key(keyfiles, capsys):
    code = main(["serve", "--key", str(keyfiles / "nope.key"), "--trust", str(keyfiles / "devices"),
                 "--store", str(keyfiles / "store"), "--state", str(keyfiles / "state")])
    assert code != 0 and capsys.readouterr().err.startswith("radseal: error:")


@pytest.mark.slow
def test_send_queues_while_receiver_is_down_then_flush_delivers_over_tls(keyfiles, capsys):
    reason = codec_available()
    if reason:
        pytest.skip(reason)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    tls = self_signed_tls(keyfiles)
    inputs = []
    for i in range(2):
        path = keyfiles / f"scan{i}.png"
        write_png(Image((np.add.outer(np.arange(64), np.arange(64)) * (i + 1) % 256).astype(np.uint8)), path)
        inputs.append(str(path))
    outbox = str(keyfiles / "outbox")
    send = ["--to", url, "--outbox", outbox, "--cacert", tls[0]]

    # Receiver down: sealed into the outbox, not delivered, non-zero exit.
    code = main(["send", *inputs, *send, "--recipient", str(keyfiles / "receiver.pub"),
                 "--sign", str(keyfiles / "device.key"), "--retries", "2", "--backoff", "0.01", "-q"])
    out, err = capsys.readouterr()
    assert code != 0 and out.count("sealed  ") == 2 and "stay in the outbox" in err
    assert Outbox(outbox).counts()["pending"] == 2

    proc = start_serve(keyfiles, port, tls)
    try:
        assert main(["send", "--flush", *send, "-q"]) == 0
        out, _ = capsys.readouterr()
        assert out.count("stored  ") == 2 and "delivered 2" in out
        # Same inputs again: recognised as delivered, nothing sent twice.
        assert main(["send", *inputs, *send, "--recipient", str(keyfiles / "receiver.pub"),
                     "--sign", str(keyfiles / "device.key"), "-q"]) == 0
        out, _ = capsys.readouterr()
        assert out.count("skipped ") == 2 and "delivered 0" in out
    finally:
        proc.terminate()
        proc.wait(10)
    assert FolderStore(keyfiles / "store").count() == 2
    assert ReceiptIndex(keyfiles / "state" / "index.sqlite").count() == 2
    assert Outbox(outbox).counts() == {"pending": 0, "delivered": 2, "refused": 0}


def test_serve_fails_at_start_when_orthanc_is_unreachable(keyfiles, capsys):
    code = main(["serve", "--key", str(keyfiles / "receiver.key"), "--trust", str(keyfiles / "devices"),
                 "--store", f"orthanc+http://127.0.0.1:{free_port()}", "--state", str(keyfiles / "state")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("radseal: error: Orthanc at") and "unreachable" in err
