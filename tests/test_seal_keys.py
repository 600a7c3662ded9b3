"""Key files: formats, permissions, passphrases, trust folders, and clear errors."""

from __future__ import annotations

import os
import stat
import subprocess
import shutil

import pytest

from radseal.seal import (
    DeviceKey,
    DevicePublicKey,
    KeyFileError,
    ReceiverKey,
    ReceiverPublicKey,
    load_device_key,
    load_private_key,
    load_public_key,
    load_receiver_key,
    load_receiver_public_key,
    load_trusted,
    open_sealed,
    save_private_key,
    save_public_key,
    seal,
)

KINDS = [("receiver", "x25519"), ("receiver", "mlkem768-x25519"), ("device", None)]


def _make(role, kem):
    return ReceiverKey.generate(kem) if role == "receiver" else DeviceKey.generate()


@pytest.mark.parametrize("role,kem", KINDS)
@pytest.mark.parametrize("passphrase", [None, "s3cret passphrase"])
def test_save_load_round_trip(tmp_path, role, kem, passphrase):
    key = _make(role, kem)
    save_private_key(key, tmp_path / "k.key", passphrase)
    save_public_key(key.public_key(), tmp_path / "k.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    loaded = load_private_key(tmp_path / "k.key", passphrase)
    assert type(loaded) is type(key) and loaded.key_id == key.key_id
    pub = load_public_key(tmp_path / "k.pub")
    assert pub == key.public_key() and pub.key_id == key.key_id
    text = (tmp_path / "k.key").read_text()
    assert ("ENCRYPTED PRIVATE KEY" in text) == bool(passphrase)
    assert not list(tmp_path.glob("*.part"))  # atomic writes leave no temp files


def test_loaded_keys_work_together(tmp_path):
    receiver, device = ReceiverKey.generate("mlkem768-x25519"), DeviceKey.generate()
    save_private_key(receiver, tmp_path / "r.key")
    save_public_key(receiver.public_key(), tmp_path / "r.pub")
    save_private_key(device, tmp_path / "d.key", "pw")
    save_public_key(device.public_key(), tmp_path / "d.pub")
    data = seal(b"hello", load_receiver_public_key(tmp_path / "r.pub"), load_device_key(tmp_path / "d.key", "pw"))
    opened = open_sealed(data, load_receiver_key(tmp_path / "r.key"), load_trusted(tmp_path / "d.pub"))
    assert opened.body == b"hello"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
def test_standard_pem_is_readable_by_openssl(tmp_path):
    device = DeviceKey.generate()
    save_public_key(device.public_key(), tmp_path / "d.pub")
    out = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(tmp_path / "d.pub"), "-noout", "-text"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "ED25519" in out.stdout.upper()


def test_passphrase_errors(tmp_path):
    key = DeviceKey.generate()
    save_private_key(key, tmp_path / "enc.key", "right")
    save_private_key(key, tmp_path / "plain.key")
    with pytest.raises(KeyFileError, match="passphrase-protected"):
        load_private_key(tmp_path / "enc.key")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(tmp_path / "enc.key", "wrong")
    with pytest.raises(KeyFileError, match="not passphrase-protected"):
        load_private_key(tmp_path / "plain.key", "right")
    with pytest.raises(KeyFileError, match="empty"):
        save_private_key(key, tmp_path / "x.key", "")


def test_kind_confusions_are_named(tmp_path):
    r, d = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(r, tmp_path / "r.key")
    save_public_key(r.public_key(), tmp_path / "r.pub")
    save_private_key(d, tmp_path / "d.key")
    with pytest.raises(KeyFileError, match="is a private key"):
        load_public_key(tmp_path / "r.key")
    with pytest.raises(KeyFileError, match="not a receiver key"):
        load_receiver_key(tmp_path / "d.key")
    with pytest.raises(KeyFileError, match="not a device"):
        load_device_key(tmp_path / "r.key")
    with pytest.raises(KeyFileError, match="not a device public key"):
        load_trusted(tmp_path / "r.pub")
    with pytest.raises(KeyFileError, match="not a receiver public key"):
        save_public_key(d.public_key(), tmp_path / "d.pub")
        load_receiver_public_key(tmp_path / "d.pub")


def test_damaged_and_missing_files(tmp_path):
    (tmp_path / "junk.key").write_text("hello\n")
    (tmp_path / "cut.key").write_text("-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----\n")
    (tmp_path / "big.key").write_bytes(b"x" * 70000)
    with pytest.raises(KeyFileError, match="not a PEM key file"):
        load_private_key(tmp_path / "junk.key")
    with pytest.raises(KeyFileError, match="damaged"):
        load_private_key(tmp_path / "cut.key")
    with pytest.raises(KeyFileError, match="too large"):
        load_private_key(tmp_path / "big.key")
    with pytest.raises(KeyFileError, match="no such key file"):
        load_public_key(tmp_path / "absent.pub")
    with pytest.raises(KeyFileError, match="is a folder"):
        load_public_key(tmp_path)


def test_hybrid_file_with_one_component_missing(tmp_path):
    r = ReceiverKey.generate("mlkem768-x25519")
    save_public_key(r.public_key(), tmp_path / "r.pub")
    text = (tmp_path / "r.pub").read_text()
    first_block = text[: text.index("-----END PUBLIC KEY-----") + len("-----END PUBLIC KEY-----\n")]
    (tmp_path / "half.pub").write_text(first_block)
    with pytest.raises(KeyFileError, match="MLKEM768PublicKey"):
        load_public_key(tmp_path / "half.pub")


def test_load_trusted_folder(tmp_path):
    devices = [DeviceKey.generate() for _ in range(3)]
    for i, d in enumerate(devices):
        save_public_key(d.public_key(), tmp_path / f"dev{i}.pub")
    save_public_key(devices[0].public_key(), tmp_path / "copy.pub")  # duplicate
    save_public_key(ReceiverKey.generate().public_key(), tmp_path / "receiver.pub")  # skipped in folders
    trusted = load_trusted(tmp_path)
    assert sorted(t.key_id for t in trusted) == sorted(d.key_id for d in devices)
    assert all(isinstance(t, DevicePublicKey) for t in trusted)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match="no device public keys"):
        load_trusted(empty)
    assert len(load_trusted([tmp_path / "dev0.pub", tmp_path / "dev1.pub"])) == 2


def test_public_key_equality():
    r = ReceiverKey.generate()
    assert r.public_key() == r.public_key() and isinstance(r.public_key(), ReceiverPublicKey)
    assert r.public_key() != ReceiverKey.generate().public_key()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from radseal.seal.keys import parse_private_key, parse_public_key  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["PRIVATE KEY", "PUBLIC KEY", "ENCRYPTED PRIVATE KEY", "X"]),
       st.booleans())
def test_garbage_key_files_raise_key_file_errors(junk, label, wrap):
    import base64

    data = (f"-----BEGIN {label}-----\n".encode() + base64.encodebytes(junk) + f"-----END {label}-----\n".encode()
            if wrap else junk)
    with pytest.raises(KeyFileError):
        parse_private_key(data, "pw" if "ENCRYPTED" in label else None)
    with pytest.raises(KeyFileError):
        parse_public_key(data)
