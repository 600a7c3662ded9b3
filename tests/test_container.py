"""The sealed body (radseal.container): round trips and a strict parser."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radseal.container import (
    MAX_METADATA_BYTES,
    PREFIX_BYTES,
    Body,
    pack_body,
    unpack_body,
)
from radseal.seal import FormatError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=2000), metadata=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
       dicom=st.none() | st.binary(min_size=1, max_size=500))
def test_round_trip(payload, metadata, dicom):
    body = unpack_body(pack_body(payload, metadata, dicom))
    assert body == Body(payload, metadata, dicom)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_or_parsed(data):
    try:
        unpack_body(data)
    except FormatError:
        pass


def test_every_single_byte_change_and_truncation():
    """Mutations of a valid body: a FormatError or a well-formed Body, nothing else."""
    data = pack_body(b"\x01\x02payload", {"image": {"rows": 2, "n": [1, 2.5, None]}, "s": "ä"}, b"DICM-ish")
    tried = 0
    for i in range(len(data)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            mutated = data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]
            tried += 1
            try:
                assert isinstance(unpack_body(mutated), Body)
            except FormatError:
                pass
    for n in range(len(data)):
        tried += 1
        with pytest.raises(FormatError):
            unpack_body(data[:n])
    with pytest.raises(FormatError, match="lengths announce"):
        unpack_body(data + b"\x00")
    assert tried == 5 * len(data)


def _prefix(magic=b"RSLB", version=1, flags=0, reserved=0, m=2, p=0, d=0):
    return struct.pack(">4sBBHIII", magic, version, flags, reserved, m, p, d)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"RSLB", "truncated"),
        (_prefix(magic=b"XXXX") + b"{}", "bad magic"),
        (_prefix(version=9) + b"{}", "version 9"),
        (_prefix(flags=0x80) + b"{}", "reserved"),
        (_prefix(reserved=1) + b"{}", "reserved"),
        (_prefix(m=MAX_METADATA_BYTES + 1), "metadata length"),
        (_prefix(p=1 << 31), "payload length"),
        (_prefix(d=1 << 30, flags=1), "DICOM header length"),
        (_prefix(flags=1) + b"{}", "DICOM flag"),
        (_prefix(d=1) + b"{}x", "DICOM flag"),
        (_prefix(m=3) + b"[1]", "must be a JSON object"),
        (_prefix(m=3) + b"NaN", "not valid UTF-8 JSON"),
        (_prefix(m=2) + b"\xff\xfe", "not valid UTF-8 JSON"),
        (_prefix(m=4000) + b"[" * 2000 + b"]" * 2000, "JSON"),
    ],
)
def test_strict_errors(data, message):
    with pytest.raises(FormatError, match=message):
        unpack_body(data)


def test_deep_nesting_and_bad_metadata_refused_when_packing():
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(FormatError, match="nests deeper"):
        pack_body(b"", deep)
    with pytest.raises(FormatError, match="JSON"):
        pack_body(b"", {"x": float("nan")})
    with pytest.raises(FormatError, match="JSON"):
        pack_body(b"", {"x": object()})
    with pytest.raises(FormatError, match="empty"):
        pack_body(b"", {}, b"")
    with pytest.raises(TypeError):
        pack_body(b"", [1])  # type: ignore[arg-type]
    nested_ok = json.loads("[" * 10 + "]" * 10)
    assert unpack_body(pack_body(b"", {"n": nested_ok})).metadata == {"n": nested_ok}
    assert PREFIX_BYTES == 20
