"""Bounded fuzz and property tests of the container parser and open_sealed.

The full fuzz run (every byte replaced by each of its 255 other values) is
benchmarks/fuzz_container.py; CI runs three masks per byte, which still
touches every byte of the container.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radseal.seal import DeviceKey, FormatError, ReceiverKey, open_sealed, parse_header, seal
from radseal.seal.format import HEADER_BYTES, MAGIC, SUITES, Header
from radseal.seal.mutations import EXPECTED, fuzz_suite

RECEIVER = ReceiverKey.generate("x25519")
HYBRID = ReceiverKey.generate("mlkem768-x25519")
DEVICE = DeviceKey.generate()
TRUSTED = [DEVICE.public_key()]


@pytest.mark.parametrize("kem", ["x25519", "mlkem768-x25519"])
def test_bounded_fuzz_rejects_every_mutation(kem):
    report = fuzz_suite(kem, masks=(0x01, 0x80, 0xFF), body_bytes=120, seed=1)
    assert report.failures == []
    # Every byte position was flipped and every truncation tried.
    container_len = 120 + {"x25519": 184, "mlkem768-x25519": 1272}[kem]
    assert report.tried["byte flip"] == 3 * container_len
    assert report.tried["truncation"] == container_len
    kinds = {k for k, _ in report.outcomes}
    assert {"swapped headers", "other recipient", "untrusted sender", "appended bytes"} <= kinds
    assert report.outcomes[("other recipient", "WrongRecipientError")] == 1
    assert report.outcomes[("untrusted sender", "UnknownSenderError")] == 1
    assert report.outcomes[("ciphertext re-signed under a new header", "AuthenticationError")] == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=3000), kem_hybrid=st.booleans(), created=st.integers(0, 2**64 - 1),
       mid=st.binary(min_size=16, max_size=16))
def test_round_trip_any_body(body, kem_hybrid, created, mid):
    receiver = HYBRID if kem_hybrid else RECEIVER
    data = seal(body, receiver.public_key(), DEVICE, message_id=mid, created=created)
    opened = open_sealed(data, [RECEIVER, HYBRID], TRUSTED)
    assert opened.body == body
    assert opened.header.created == created and opened.header.message_id == mid.hex()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_format_errors(data):
    with pytest.raises(FormatError):
        parse_header(data)
    with pytest.raises(FormatError):
        open_sealed(data, RECEIVER, TRUSTED)


@st.composite
def plausible_containers(draw):
    """Well-framed containers with random fields: they reach the cryptographic checks."""
    suite_id = draw(st.sampled_from(sorted(SUITES)))
    body = draw(st.binary(max_size=200))
    n = max(len(body), SUITES[suite_id].min_ciphertext_bytes) if draw(st.booleans()) else len(body)
    sender = DEVICE.key_id if draw(st.booleans()) else draw(st.binary(min_size=16, max_size=16)).hex()
    recipient = RECEIVER.key_id if draw(st.booleans()) else draw(st.binary(min_size=16, max_size=16)).hex()
    header = Header(1, suite_id, recipient, sender, draw(st.binary(min_size=16, max_size=16)).hex(),
                    draw(st.integers(0, 2**64 - 1)), n)
    ciphertext = (body + bytes(n))[:n]
    tail = draw(st.binary(min_size=0, max_size=70))
    return header.encode() + ciphertext + tail


@settings(max_examples=300, deadline=None)
@given(plausible_containers(), st.booleans())
def test_plausible_forgeries_raise_specific_errors(data, allow_insecure):
    with pytest.raises(EXPECTED):
        open_sealed(data, [RECEIVER, HYBRID], TRUSTED, allow_insecure_paper_cipher=allow_insecure)


def test_header_length_is_fixed():
    assert HEADER_BYTES == 72 and len(MAGIC) == 8
