"""seal / open_sealed: round trips, rejection of every kind of wrong input, the header."""

from __future__ import annotations

import pytest

import radseal
from radseal.seal import (
    HEADER_BYTES,
    MAGIC,
    AuthenticationError,
    DeviceKey,
    FormatError,
    ReceiverKey,
    UnknownSenderError,
    WrongRecipientError,
    open_sealed,
    overhead_bytes,
    parse_header,
    seal,
)
from radseal.seal.format import SUITES, split
from radseal.errors import RadsealError

KEMS = ("x25519", "mlkem768-x25519")


@pytest.fixture(scope="module", params=KEMS)
def keys(request):
    return ReceiverKey.generate(request.param), DeviceKey.generate()


def test_round_trip_and_header(keys):
    receiver, device = keys
    mid = bytes(range(16))
    data = seal(b"payload bytes", receiver.public_key(), device, message_id=mid, created=1_700_000_000)
    assert data.startswith(MAGIC)
    assert len(data) == len(b"payload bytes") + overhead_bytes(receiver.kem)
    opened = open_sealed(data, receiver, [device.public_key()])
    assert opened.body == b"payload bytes"
    h = opened.header
    assert (h.version, h.recipient_key_id, h.sender_key_id) == (1, receiver.key_id, device.key_id)
    assert h.message_id == mid.hex() and h.created == 1_700_000_000
    assert h.suite == SUITES[{"x25519": 1, "mlkem768-x25519": 2}[receiver.kem]].name
    assert parse_header(data) == h


def test_top_level_names():
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    data = radseal.seal(b"x", receiver.public_key(), signer=device)
    assert radseal.open_sealed(data, receiver, trusted=[device.public_key()]).body == b"x"
    assert radseal.seal.ReceiverKey is ReceiverKey


def test_empty_body_and_fresh_message_ids(keys):
    receiver, device = keys
    a = seal(b"", receiver.public_key(), device)
    b = seal(b"", receiver.public_key(), device)
    assert open_sealed(a, receiver, [device.public_key()]).body == b""
    assert parse_header(a).message_id != parse_header(b).message_id
    assert a[HEADER_BYTES:] != b[HEADER_BYTES:]  # fresh HPKE encapsulation each time


def test_key_ids_are_fingerprints():
    r = ReceiverKey.generate("mlkem768-x25519")
    assert r.key_id == r.public_key().key_id and len(r.key_id) == 32
    int(r.key_id, 16)
    assert ReceiverKey.generate().key_id != ReceiverKey.generate().key_id
    d = DeviceKey.generate()
    assert d.key_id == d.public_key().key_id != r.key_id


def test_wrong_recipient(keys):
    receiver, device = keys
    data = seal(b"x", receiver.public_key(), device)
    with pytest.raises(WrongRecipientError, match=receiver.key_id):
        open_sealed(data, ReceiverKey.generate(receiver.kem), [device.public_key()])


def test_key_rotation_picks_the_named_key(keys):
    receiver, device = keys
    data = seal(b"x", receiver.public_key(), device)
    keys_list = [ReceiverKey.generate("x25519"), receiver, ReceiverKey.generate("mlkem768-x25519")]
    assert open_sealed(data, keys_list, [device.public_key()]).body == b"x"


def test_untrusted_sender(keys):
    receiver, device = keys
    data = seal(b"x", receiver.public_key(), device)
    with pytest.raises(UnknownSenderError, match=device.key_id):
        open_sealed(data, receiver, [DeviceKey.generate().public_key()])
    with pytest.raises(UnknownSenderError):
        open_sealed(data, receiver, [])


def test_tampered_ciphertext_and_header_are_not_authentic(keys):
    receiver, device = keys
    data = bytearray(seal(b"secret", receiver.public_key(), device))
    for pos in (12, 50, 60, HEADER_BYTES + 3, len(data) - 70, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(AuthenticationError) as info:
            open_sealed(bytes(bad), receiver, [device.public_key()])
        assert str(info.value) == "container is not authentic (signature or ciphertext does not verify)"


def test_header_is_bound_into_hpke_even_under_a_valid_signature(keys):
    """A trusted but malicious device re-signs another container's ciphertext under its own header."""
    receiver, device = keys
    mallory = DeviceKey.generate()
    parts = split(seal(b"secret", receiver.public_key(), device))
    h = parts.header
    forged_header = type(h)(h.version, h.suite_id, h.recipient_key_id, mallory.key_id, h.message_id, h.created,
                            h.ciphertext_length).encode()
    forged = forged_header + parts.ciphertext
    forged += mallory.sign(forged)
    with pytest.raises(AuthenticationError):
        open_sealed(forged, receiver, [device.public_key(), mallory.public_key()])


def test_parse_errors_name_the_problem(keys):
    receiver, device = keys
    data = seal(b"abc", receiver.public_key(), device)
    cases = {
        b"": "bad magic",
        b"PK\x03\x04" + data[4:]: "bad magic",
        data[:40]: "truncated container: 40 bytes",
        data[:8] + b"\x02" + data[9:]: "unsupported format version 2",
        data[:9] + b"\x07" + data[10:]: "unknown suite 0x07",
        data[:10] + b"\x00\x01" + data[12:]: "reserved header flags",
        data[:68] + b"\xff\xff\xff\xff" + data[72:]: "exceeds the limit",
        data[:68] + b"\x00\x00\x00\x01" + data[72:]: "shorter than suite",
        data[:-1]: "truncated container",
        data + b"\x00": "1 unexpected bytes after the signature",
    }
    for bad, message in cases.items():
        with pytest.raises(FormatError, match=message):
            open_sealed(bad, receiver, [device.public_key()])
        with pytest.raises(FormatError, match=message):
            parse_header(bad)


def test_errors_are_radseal_errors():
    for cls in (FormatError, AuthenticationError, UnknownSenderError, WrongRecipientError):
        assert issubclass(cls, RadsealError)


def test_insecure_paper_suite_is_refused_unless_asked():
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    data = seal(b"latent", receiver.public_key(), device, insecure_paper_cipher=True)
    assert parse_header(data).suite_id == 0xF0 and parse_header(data).insecure
    assert b"latent" in data  # documented: no encryption at all
    with pytest.raises(FormatError, match="insecure-paper-cipher"):
        open_sealed(data, receiver, [device.public_key()])
    opened = open_sealed(data, receiver, [device.public_key()], allow_insecure_paper_cipher=True)
    assert opened.body == b"latent"
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(AuthenticationError):  # still signed
        open_sealed(tampered, receiver, [device.public_key()], allow_insecure_paper_cipher=True)


def test_bad_arguments_to_seal():
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    with pytest.raises(TypeError):
        seal(b"x", receiver, device)  # a private key where the public one belongs
    with pytest.raises(TypeError):
        seal(b"x", receiver.public_key(), device.public_key())
    with pytest.raises(ValueError):
        seal(b"x", receiver.public_key(), device, message_id=b"short")
    with pytest.raises(ValueError):
        seal(b"x", receiver.public_key(), device, created=-1)
    with pytest.raises(ValueError):
        ReceiverKey.generate("rsa")


def test_open_sealed_checks_key_types():
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    data = seal(b"x", receiver.public_key(), device)
    with pytest.raises(TypeError, match="DevicePublicKey"):
        open_sealed(data, receiver, ["device.pub"])
    with pytest.raises(TypeError, match="ReceiverKey"):
        open_sealed(data, [receiver.public_key()], [device.public_key()])
