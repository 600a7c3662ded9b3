"""Fuzz the compiled engine, ideally built with AddressSanitizer and UBSan.

Round trips random images of every depth at several max errors (the bound
checked), then decodes damaged copies (bytes replaced, truncated, extended)
and random bytes; every outcome must be an image within range or a
ValueError. Build and run with the sanitizers (Debian, gcc):

    gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
        -std=c99 -I$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
        csrc/rsengine.c -lm -o build/_engine_asan.so
    LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so) \
        ASAN_OPTIONS=detect_leaks=0 python benchmarks/fuzz_engine.py --engine build/_engine_asan.so

Without --engine it fuzzes the installed radseal.codec._engine.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np


def load(path: str | None):
    if path is None:
        from radseal.codec import _engine

        return _engine
    spec = importlib.util.spec_from_file_location("_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default=None, help="path of an engine build (default: the installed one)")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    eng = load(args.engine)
    rng = np.random.default_rng(args.seed)
    decoded = refused = 0
    for it in range(args.iterations):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        bits = int(rng.integers(1, 17))
        maxval = (1 << bits) - 1
        near = int(rng.choice([0, 0, 1, 3, 100, 65535]))
        if it % 3 == 0:
            px = rng.integers(0, maxval + 1, (h, w))
        else:
            px = np.clip(rng.integers(0, maxval + 1) + np.cumsum(rng.integers(-9, 10, (h, w)), 1), 0, maxval)
        px = px.astype(np.uint16)
        data, rec = eng.encode(px.tobytes(), h, w, maxval, near, b"", False, True)
        out = np.frombuffer(eng.decode(data, h, w, maxval, near, b""), np.uint16).reshape(h, w)
        assert np.array_equal(out, np.frombuffer(rec, np.uint16).reshape(h, w))
        assert np.abs(out.astype(np.int64) - px).max() <= near
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            if not b:
                break
            op = rng.integers(0, 3)
            if op == 0:
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
            elif op == 1:
                b = b[: int(rng.integers(0, len(b)))]
            else:
                b += bytes(rng.integers(0, 256, int(rng.integers(1, 9))).astype(np.uint8))
        try:
            o = np.frombuffer(eng.decode(bytes(b), h, w, maxval, near, b""), np.uint16)
            assert o.max(initial=0) <= maxval
            decoded += 1
        except ValueError:
            refused += 1
        v = rng.integers(-(1 << 20), 1 << 20, 50).astype(np.int32)
        c = rng.integers(0, eng.NCTX, 50).astype(np.int32)
        s = rng.integers(0, eng.NSIGN, 50).astype(np.int32)
        dd = eng.code_ints(v.tobytes(), c.tobytes(), s.tobytes(), b"")
        assert np.array_equal(np.frombuffer(eng.decode_ints(dd, c.tobytes(), s.tobytes(), b""), np.int32), v)
        try:
            eng.decode_ints(rng.integers(0, 256, int(rng.integers(0, 64))).astype(np.uint8).tobytes(), c.tobytes(),
                            s.tobytes(), b"")
        except ValueError:
            pass
    print(f"{args.iterations} iterations: round trips exact and within the bound; "
          f"damaged streams: {decoded} decoded to an in-range image, {refused} refused")
    seq_decoded, seq_refused = fuzz_sequential(eng, rng, args.iterations // 2)
    print(f"{args.iterations // 2} iterations of the sequential wavelet coder (rsc3): round trips exact; "
          f"damaged and random streams: {seq_decoded} decoded, {seq_refused} refused")
    return 0


def fuzz_sequential(eng, rng, iterations: int) -> tuple[int, int]:
    """The wavelet-coefficient coder: random band layouts and Laplacian symbols, then damaged and random payloads."""
    from radseal.codec.seq import band_shapes

    decoded = refused = 0
    for _ in range(iterations):
        shapes = band_shapes(int(rng.integers(1, 70)), int(rng.integers(1, 70)))
        shp = np.asarray(shapes, dtype=np.int32).ravel().tobytes()
        n = sum(a * b for a, b in shapes)
        sym = np.round(rng.laplace(0, rng.choice([0.3, 2, 20, 300]), n)).astype(np.int32)
        sym[rng.random(n) < 0.5] = 0
        stream, _ = eng.seq_encode(sym.tobytes(), shp, b"", b"", 0)
        assert np.array_equal(np.frombuffer(eng.seq_decode(stream, shp), np.int32), sym)
        for attempt in range(5):
            b = bytearray(stream)
            op = rng.integers(0, 4) if attempt < 4 else 3
            if op == 0 and b:
                for _ in range(int(rng.integers(1, 5))):
                    b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
            elif op == 1:
                b = b[: int(rng.integers(0, len(b) + 1))]
            elif op == 2:
                b += rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
            else:
                b = bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
            try:
                eng.seq_decode(bytes(b), shp)
                decoded += 1
            except ValueError:
                refused += 1
    return decoded, refused


if __name__ == "__main__":
    raise SystemExit(main())
