"""Native-depth benchmark: radseal lossless and guaranteed-maximum-error coding against the standards.

On the right halves of RG1 and RG3 (pydicom-data) and of the six radiographs
in ``../shared/data/native`` (see its SOURCE.md), at their stored depth
(10 to 16 bits), measured in one run on this machine:

* lossless: bytes of radseal (``max_error=0``), JPEG-LS, JPEG 2000 reversible
  (OpenJPEG) and JPEG XL effort 7 lossless (libjxl), all through imagecodecs;
  every decoded image compared with the original;
* maximum error k = 1, 2, 4, 8, 16: radseal ``max_error=k``, JPEG-LS NEAR=k
  and SZ3 (absolute bound k); the bound checked on every pixel of every
  decoded image;
* encode and decode seconds per megapixel (one thread; total time over total
  pixels) for radseal, JPEG-LS and JPEG XL e7 lossless.

bpp = len(bytes) * 8 / pixels (radseal's header and checksums included).
The learned initial probabilities never saw a right half. Writes
OUT/native_depth.{json,md}. Run:

    python benchmarks/native_depth.py --out docs/results
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

MAX_ERRORS = (1, 2, 4, 8, 16)


def images(native_dir: Path):
    import radseal
    from radseal.io.samples import sample_path

    found = [("RG1", sample_path("RG1")), ("RG3", sample_path("RG3"))]
    found += [(p.stem, p) for p in sorted(native_dir.glob("*.dcm"))] if native_dir.is_dir() else []
    for name, path in found:
        img = radseal.read_image(path)
        w = img.width
        yield name, img.with_pixels(np.ascontiguousarray(img.pixels[:, w // 2 :]))


def mode(data: bytes) -> str:
    """How radseal's encoder coded the image (the payload's flags byte, see radseal.codec.native)."""
    from radseal.codec import bitstream

    flags = bitstream.unpack(data)[1][0]
    parts = [name for bit, name in ((1, "packed"), (4, "grid"), (2, "5/3")) if flags & bit]
    return "+".join(parts) or "direct"


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def run(native_dir: Path) -> dict:
    import imagecodecs

    from radseal.codec import Codec
    from radseal.codec.native import default_native

    codec = default_native()
    decoder = Codec.pretrained()
    rows = []
    for name, img in images(native_dir):
        a = img.pixels
        bits = img.bits_stored
        row = {"image": name, "bits": bits, "height": img.height, "width": img.width, "pixels": int(a.size)}
        print(f"{name}: {img.height}x{img.width}, {bits} bits", file=sys.stderr, flush=True)
        # lossless
        data, te = timed(codec.compress_native, img, 0)
        out, td = timed(decoder.decompress, data)
        assert np.array_equal(out.pixels, a), name
        row["radseal"] = {"bytes": len(data), "encode_s": te, "decode_s": td, "mode": mode(data)}
        jls, te = timed(imagecodecs.jpegls_encode, a)
        back, td = timed(imagecodecs.jpegls_decode, jls)
        assert np.array_equal(back, a), name
        row["jpegls"] = {"bytes": len(jls), "encode_s": te, "decode_s": td}
        j2k = imagecodecs.jpeg2k_encode(a, level=0, reversible=True, bitspersample=bits, numthreads=1)
        assert np.array_equal(imagecodecs.jpeg2k_decode(j2k), a), name
        row["jpeg2000"] = {"bytes": len(j2k)}
        jxl, te = timed(imagecodecs.jpegxl_encode, a, lossless=True, effort=7, bitspersample=bits, numthreads=1)
        back, td = timed(imagecodecs.jpegxl_decode, jxl, numthreads=1)
        assert np.array_equal(back, a), name
        row["jpegxl"] = {"bytes": len(jxl), "encode_s": te, "decode_s": td}
        # guaranteed maximum error
        row["near"] = {}
        for k in MAX_ERRORS:
            data = codec.compress_native(img, k)
            diff = decoder.decompress(data).pixels.astype(np.int64) - a
            err = int(np.abs(diff).max())
            mse = float(np.mean(diff.astype(np.float64) ** 2))
            psnr = float(10 * np.log10(((1 << bits) - 1) ** 2 / mse)) if mse > 0 else float("inf")
            assert err <= k, (name, k, err)
            jls = imagecodecs.jpegls_encode(a, level=k)
            jerr = int(np.abs(imagecodecs.jpegls_decode(jls).astype(np.int64) - a).max())
            assert jerr <= k, (name, k, jerr)
            sz = imagecodecs.sz3_encode(a.astype(np.float32), mode="abs", abs=float(k))
            serr = float(np.abs(imagecodecs.sz3_decode(sz, shape=a.shape, dtype=np.float32).astype(np.float64) - a).max())
            row["near"][str(k)] = {"radseal": len(data), "radseal_mode": mode(data), "radseal_max_err": err, "radseal_psnr": psnr,
                                   "jpegls": len(jls), "jpegls_max_err": jerr,
                                   "sz3": len(sz), "sz3_max_err": serr}
        rows.append(row)
    return {"rows": rows}


def summarize(res: dict) -> dict:
    rows = res["rows"]
    px = sum(r["pixels"] for r in rows)
    mp = px / 1e6

    def total(key):
        return sum(r[key]["bytes"] for r in rows)

    best = sum(min(r["jpegls"]["bytes"], r["jpeg2000"]["bytes"], r["jpegxl"]["bytes"]) for r in rows)
    s = {
        "pixels": px,
        "lossless_bpp": {k: 8 * total(k) / px for k in ("radseal", "jpegls", "jpeg2000", "jpegxl")},
        "lossless_best_of_three_bpp": 8 * best / px,
        "lossless_ratio_to_best": total("radseal") / best,
        "lossless_images_above_jpegls": [r["image"] for r in rows if r["radseal"]["bytes"] > r["jpegls"]["bytes"]],
        "near": {},
        "speed_s_per_mp": {
            c: {"encode": sum(r[c]["encode_s"] for r in rows) / mp, "decode": sum(r[c]["decode_s"] for r in rows) / mp}
            for c in ("radseal", "jpegls", "jpegxl")
        },
    }
    for k in MAX_ERRORS:
        ours = sum(r["near"][str(k)]["radseal"] for r in rows)
        jls = sum(r["near"][str(k)]["jpegls"] for r in rows)
        sz = sum(r["near"][str(k)]["sz3"] for r in rows)
        s["near"][str(k)] = {"radseal_bpp": 8 * ours / px, "jpegls_bpp": 8 * jls / px, "sz3_bpp": 8 * sz / px,
                             "ratio_to_jpegls": ours / jls, "ratio_to_sz3": ours / sz,
                             "max_err_all": max(r["near"][str(k)]["radseal_max_err"] for r in rows)}
    return s


def markdown(res: dict, s: dict, command: str) -> str:
    rows = res["rows"]
    out = ["# Native-depth lossless and maximum-error coding", "",
           f"Command: `{command}`", "",
           f"Machine: {platform.machine()}, Python {platform.python_version()}, {res['when']} (one thread per codec; the "
           "machine is shared, so compare timings within this run only).", "",
           "Images: the right halves of RG1, RG3 and of the six radiographs in `../shared/data/native` "
           f"({s['pixels'] / 1e6:.1f} Mpixel). bpp = bytes x 8 / pixels. Every decoded image was compared with the "
           "original: lossless ones exactly, bounded ones on every pixel.", "",
           "## Lossless (bpp)", "",
           "radseal's mode: how its encoder coded the image (direct prediction; packed = indices of the used values; "
           "5/3 = the reversible wavelet front end; grid = the value grid for k >= 1).", "",
           "| image | bits | radseal | mode | JPEG-LS | JPEG 2000 rev. | JPEG XL e7 | radseal / best of three |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = lambda key: 8 * r[key]["bytes"] / r["pixels"]  # noqa: E731
        best = min(r["jpegls"]["bytes"], r["jpeg2000"]["bytes"], r["jpegxl"]["bytes"])
        out.append(f"| {r['image']} | {r['bits']} | {b('radseal'):.3f} | {r['radseal']['mode']} | {b('jpegls'):.3f} | {b('jpeg2000'):.3f} | "
                   f"{b('jpegxl'):.3f} | {r['radseal']['bytes'] / best:.3f} |")
    L = s["lossless_bpp"]
    out.append(f"| **all (total bytes)** | | **{L['radseal']:.3f}** | | {L['jpegls']:.3f} | {L['jpeg2000']:.3f} | "
               f"{L['jpegxl']:.3f} | **{s['lossless_ratio_to_best']:.3f}** (best of three per image: "
               f"{s['lossless_best_of_three_bpp']:.3f}) |")
    out += ["", "## Guaranteed maximum error (bpp, total over the eight images)", "",
            "| max error k | radseal | JPEG-LS NEAR=k | SZ3 abs=k | radseal / JPEG-LS | radseal / SZ3 | largest radseal error seen |",
            "|---|---|---|---|---|---|---|"]
    for k, v in s["near"].items():
        out.append(f"| {k} | {v['radseal_bpp']:.3f} | {v['jpegls_bpp']:.3f} | {v['sz3_bpp']:.3f} | {v['ratio_to_jpegls']:.3f} | "
                   f"{v['ratio_to_sz3']:.3f} | {v['max_err_all']} |")
    out += ["", "Per image, radseal / JPEG-LS NEAR=k (radseal's mode):", "", "| image | " + " | ".join(f"k={k}" for k in MAX_ERRORS) + " |",
            "|---|" + "---|" * len(MAX_ERRORS)]
    for r in rows:
        out.append(f"| {r['image']} | " + " | ".join(f"{r['near'][str(k)]['radseal'] / r['near'][str(k)]['jpegls']:.3f} "
                                                   f"({r['near'][str(k)]['radseal_mode']})"
                                                   for k in MAX_ERRORS) + " |")
    out += ["", "PSNR of radseal's bounded-error images (dB, peak 2^bits - 1; the lossy codec's 8-bit internal range "
            "stops at 52-62 dB on these images):", "",
            "| image | " + " | ".join(f"k={k}" for k in MAX_ERRORS) + " |", "|---|" + "---|" * len(MAX_ERRORS)]
    for r in rows:
        out.append(f"| {r['image']} | " + " | ".join(f"{r['near'][str(k)]['radseal_psnr']:.1f} dB, "
                                                   f"{8 * r['near'][str(k)]['radseal'] / r['pixels']:.2f} bpp"
                                                   for k in MAX_ERRORS) + " |")
    sp = s["speed_s_per_mp"]
    out += ["", "## Speed (seconds per megapixel, lossless, one thread)", "", "| codec | encode | decode |", "|---|---|---|"]
    for c, label in (("radseal", "radseal"), ("jpegls", "JPEG-LS (CharLS)"), ("jpegxl", "JPEG XL e7 (libjxl)")):
        out.append(f"| {label} | {sp[c]['encode']:.3f} | {sp[c]['decode']:.3f} |")
    return "\n".join(out) + "\n"


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native-dir", default=str(root / ".." / "shared" / "data" / "native"))
    ap.add_argument("--out", default="docs/results")
    args = ap.parse_args()
    res = run(Path(args.native_dir))
    res["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    s = summarize(res)
    res["summary"] = s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "native_depth.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "native_depth.md").write_text(markdown(res, s, "python benchmarks/native_depth.py --out docs/results"))
    print(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
