"""Writes the format-0 rsc3 fixtures in this folder (``PYTHONPATH=src python
tests/data/seq_format0/generate.py`` from the repository root). They were first written
before format 1 existed; the encoder settings below (format 0, no loop filter, RDO on
+-1 only) reproduce the first rsc3 encoder byte for byte.

Each case is a stream (``<name>.rsc``), the pixels it decoded to (``<name>.npy``) and, in
``expected.json``, the SHA-256 of its decoded symbols (int32, little-endian, coding order).
``tests/test_codec_seq.py::test_format0_fixtures_still_decode`` checks that they still decode.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from radseal.codec import Codec, bitstream
from radseal.codec.seq import MODEL_ID, SeqCodec
from radseal.image import Image
from radseal.io import read_image
from radseal.io.samples import sample_path

HERE = Path(__file__).resolve().parent


def cases():
    rg1 = read_image(sample_path("RG1"))
    crop = rg1.with_pixels(np.ascontiguousarray(rg1.pixels[700:796, 800:928]))
    yield "rg1_q3", crop, 3
    yield "rg1_q9", crop, 9
    yield "rg1_q15", crop, 15
    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[0:37, 0:53]
    px = np.clip(120 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + rng.normal(0, 6, xx.shape), 0, 255)
    yield "synthetic8_q6", Image(pixels=px.astype(np.uint8), bits_stored=8), 6


def main() -> None:
    codec = SeqCodec(Codec.pretrained(MODEL_ID).model, fmt=0, loop_filter=None, rdo_levels=False)
    expected = {}
    for name, img, q in cases():
        data = codec.compress(img, quality=q)
        header, payload = bitstream.unpack(data)
        assert payload[0] == 0
        sym, _ = codec.read_symbols(payload, header.height, header.width)
        out = codec.decompress(data)
        (HERE / f"{name}.rsc").write_bytes(data)
        np.save(HERE / f"{name}.npy", out.pixels)
        expected[name] = {"quality": q, "symbols_sha256": hashlib.sha256(sym.astype("<i4").tobytes()).hexdigest()}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
