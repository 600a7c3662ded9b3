"""Native-depth lossy benchmark: radseal's quality ladder against JPEG 2000 and JPEG XL at the stored depth.

On the eight right halves of ``benchmarks/native_depth.py`` (RG1, RG3 and the
six radiographs in ``../shared/data/native``; 10 to 16 bits), measured in one
run on this machine:

* radseal, the default codec (``rsc3-cdf97-seq``): a sweep of ``quality``
  over its whole ladder (every ``--step``-th quality from 1), stopped once an
  image passes ``--top-db``;
* radseal's native-depth coder, ``compress(img, max_error=k)``, for k in a
  fixed ladder (the curve that the per-rung choice below draws on);
* JPEG 2000 (OpenJPEG through imagecodecs, irreversible 9/7,
  ``bitspersample`` = the stored depth, one thread). imagecodecs exposes
  OpenJPEG's fixed-quality mode (its ``level`` is a target PSNR in dB against
  2^bits - 1), not a rate list, so the sweep is over target PSNR;
* JPEG XL (libjxl through imagecodecs, effort 7, ``bitspersample`` = the
  stored depth, one thread), a sweep of the butteraugli distance down to
  libjxl's smallest, 0.01.

PSNR is against 2^bits - 1 on the stored values; bpp = bytes x 8 / pixels
(radseal's container and checksums included). Every decoded image is checked
for shape and dtype, and JPEG XL's decoded values are checked to lie on the
stored scale (not rescaled to 16 bits). BD-rate per image with the project's
``radseal.evaluate.metrics.bd_rate`` (PCHIP of log-rate over PSNR),
integrated over 40-70 dB clipped to the PSNR range that both curves cover
(the clipped range is reported per image). Writes
OUT/native_lossy.{json,md}. Run:

    python benchmarks/native_lossy.py --out docs/results
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_depth import images  # noqa: E402  (the same eight right halves, one loader)

LOW_DB, HIGH_DB = 40.0, 70.0
J2K_TARGETS = (36, 39, 42, 45, 48, 51, 54, 57, 60, 63, 66, 69, 72, 75, 78)
JXL_DISTANCES = (12, 8, 5, 3.5, 2.5, 1.8, 1.2, 0.8, 0.55, 0.35, 0.25, 0.17, 0.12, 0.08, 0.05, 0.035, 0.025, 0.018, 0.012, 0.01)
NATIVE_K = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def psnr(a: np.ndarray, b: np.ndarray, bits: int) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(((1 << bits) - 1) ** 2 / mse)


def point(data_len: int, pixels: int, db: float, **extra) -> dict:
    return {"bpp": data_len * 8.0 / pixels, "psnr": db, **extra}


def sweep_radseal(img, codec, step: int, top_db: float) -> tuple[list, float, float]:
    a, bits = img.pixels, img.bits_stored
    encode = codec._encoder(img)  # one analysis shared by every quality
    pts, te, td = [], 0.0, 0.0
    qs = list(range(1, codec.qualities[-1] + 1, step))
    for q in qs:
        t = time.perf_counter()
        data = encode(q)
        te += time.perf_counter() - t
        t = time.perf_counter()
        out = codec.decompress(data)
        td += time.perf_counter() - t
        assert out.pixels.shape == a.shape and out.bits_stored == bits
        db = psnr(a, out.pixels, bits)
        pts.append(point(len(data), a.size, db, quality=q))
        if db > top_db:
            break
    return pts, te, td


def sweep_native(img, native, top_db: float) -> list:
    a, bits = img.pixels, img.bits_stored
    pts = []
    for k in sorted(NATIVE_K, reverse=True):  # low rate first
        data = native.compress_native(img, k)
        out = native.decompress(data).pixels
        assert int(np.abs(out.astype(np.int64) - a).max()) <= k
        db = psnr(a, out, bits)
        if db < LOW_DB - 6:
            continue
        pts.append(point(len(data), a.size, db, max_error=k))
        if db > top_db:
            break
    return pts


def sweep_j2k(img, top_db: float) -> tuple[list, float]:
    import imagecodecs

    a, bits = img.pixels, img.bits_stored
    pts, te = [], 0.0
    for target in J2K_TARGETS:
        t = time.perf_counter()
        data = imagecodecs.jpeg2k_encode(a, level=float(target), codecformat="j2k", reversible=False,
                                         bitspersample=bits, numthreads=1)
        te += time.perf_counter() - t
        out = imagecodecs.jpeg2k_decode(data, numthreads=1)
        assert out.shape == a.shape
        db = psnr(a, out, bits)
        pts.append(point(len(data), a.size, db, target_db=target))
        if db > top_db:
            break
    return pts, te


def sweep_jxl(img, top_db: float) -> tuple[list, float]:
    import imagecodecs

    a, bits = img.pixels, img.bits_stored
    pts, te = [], 0.0
    for d in JXL_DISTANCES:
        t = time.perf_counter()
        data = imagecodecs.jpegxl_encode(a, distance=float(d), effort=7, bitspersample=bits, numthreads=1)
        te += time.perf_counter() - t
        out = imagecodecs.jpegxl_decode(data, numthreads=1)
        if out.ndim == 3:
            out = out[..., 0]
        assert out.shape == a.shape
        # decoded on the stored scale: its mean within 1% of the original's range of the original's
        assert abs(float(out.mean()) - float(a.mean())) < 0.01 * max(int(a.max()) - int(a.min()), 1), "JPEG XL rescaled"
        db = psnr(a, out, bits)
        pts.append(point(len(data), a.size, db, distance=d))
        if db > top_db:
            break
    return pts, te


def bd(ref: list, test: list, low: float = LOW_DB, high: float = HIGH_DB) -> dict:
    """BD-rate of ``test`` against ``ref`` over ``low``-``high`` dB clipped to what both cover."""
    from radseal.evaluate.metrics import bd_rate

    lo = max(low, min(p["psnr"] for p in ref), min(p["psnr"] for p in test))
    hi = min(high, max(p["psnr"] for p in ref if math.isfinite(p["psnr"])),
             max(p["psnr"] for p in test if math.isfinite(p["psnr"])))
    value = bd_rate([p["bpp"] for p in ref], [p["psnr"] for p in ref], [p["bpp"] for p in test],
                    [p["psnr"] for p in test], quality_range=(lo, hi)) if hi > lo else math.nan
    return {"bd_rate": value, "from_db": lo, "to_db": hi}


def best_of(wavelet: list, native: list) -> list:
    """Per wavelet rung, the smaller of its stream and the smallest native stream with at least its PSNR."""
    out = []
    for p in wavelet:
        better = [n for n in native if n["psnr"] >= p["psnr"] and n["bpp"] < p["bpp"]]
        out.append(min(better, key=lambda n: n["bpp"]) if better else p)
    return out


def add_bd(row: dict) -> None:
    """Per-image BD-rates: over 40-70 dB, and split at the PSNR of the highest measured quality
    <= 16 (below it the streams are those the coder made before qualities 17+ existed)."""
    row["bd"] = {f"{test}_vs_{ref}": bd(row[ref], row[test])
                 for test in ("radseal", "best_of") for ref in ("jpeg2000", "jpegxl")}
    split = max(p["psnr"] for p in row["radseal"] if p["quality"] <= 16)
    row["split_db"] = split
    for ref in ("jpeg2000", "jpegxl"):
        row["bd"][f"radseal_vs_{ref}_below"] = bd(row[ref], row["radseal"], LOW_DB, split)
        row["bd"][f"radseal_vs_{ref}_above"] = bd(row[ref], row["radseal"], split, HIGH_DB)


def run(native_dir: Path, names: list[str] | None, step: int, top_db: float) -> dict:
    from radseal.codec import Codec
    from radseal.codec.native import default_native

    codec = Codec.pretrained()
    native = default_native()
    rows = []
    for name, img in images(native_dir):
        if names and name not in names:
            continue
        print(f"{name}: {img.height}x{img.width}, {img.bits_stored} bits", file=sys.stderr, flush=True)
        row = {"image": name, "bits": img.bits_stored, "height": img.height, "width": img.width,
               "pixels": int(img.pixels.size), "low": int(img.pixels.min()), "high": int(img.pixels.max())}
        row["radseal"], row["radseal_encode_s"], row["radseal_decode_s"] = sweep_radseal(img, codec, step, top_db)
        row["native"] = sweep_native(img, native, top_db)
        row["jpeg2000"], row["jpeg2000_encode_s"] = sweep_j2k(img, top_db)
        row["jpegxl"], row["jpegxl_encode_s"] = sweep_jxl(img, top_db)
        row["best_of"] = best_of(row["radseal"], row["native"])
        add_bd(row)
        print(json.dumps({k: round(v["bd_rate"], 2) for k, v in row["bd"].items()}), file=sys.stderr, flush=True)
        rows.append(row)
    return {"model_id": codec.model_id, "rows": rows, "range_db": [LOW_DB, HIGH_DB]}


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:+.1f}%"


def markdown(res: dict, command: str) -> str:
    rows = res["rows"]
    lines = [
        "# Native-depth lossy coding against JPEG 2000 and JPEG XL",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {res['when']} (one thread per codec).",
        "",
        f"Images: the right halves of RG1, RG3 and the six radiographs in `../shared/data/native`, at their stored "
        f"depth. radseal `{res['model_id']}` over its quality ladder; JPEG 2000 (OpenJPEG, target-PSNR sweep, "
        "`bitspersample` = stored depth); JPEG XL (libjxl e7, distance sweep to 0.01, `bitspersample` = stored "
        "depth). PSNR against 2^bits - 1. BD-rate per image (negative: radseal needs fewer bits for the same "
        "PSNR) over 40-70 dB clipped to the PSNR range that both curves cover; the range used is given.",
        "",
        "\"Best of wavelet/native per rung\" is computed from the measured points, not a codec mode: at each "
        "measured quality, the smaller of that stream and the smallest `max_error=k` stream (k from a fixed "
        "ladder) with at least its PSNR. It estimates what choosing between the two coders per rung would buy.",
        "",
        "## BD-rate per image",
        "",
        "| image | bits | radseal vs JPEG 2000 | range dB | radseal vs JPEG XL | range dB | best of wavelet/native per rung vs JPEG 2000 | vs JPEG XL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["bd"]
        j, x = b["radseal_vs_jpeg2000"], b["radseal_vs_jpegxl"]
        lines.append(f"| {r['image']} | {r['bits']} | {_fmt(j['bd_rate'])} | {j['from_db']:.1f}-{j['to_db']:.1f} | "
                     f"{_fmt(x['bd_rate'])} | {x['from_db']:.1f}-{x['to_db']:.1f} | "
                     f"{_fmt(b['best_of_vs_jpeg2000']['bd_rate'])} | {_fmt(b['best_of_vs_jpegxl']['bd_rate'])} |")
    split_lines = [
        "", "## Below and above quality 16", "",
        "The same BD-rates split at the PSNR of the highest measured quality <= 16 (qualities 1..16 code as "
        "before; 17 and above are the continued ladder).", "",
        "| image | split at dB | vs JPEG 2000 below | above | vs JPEG XL below | above |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["bd"]
        split_lines.append(f"| {r['image']} | {r['split_db']:.1f} | {_fmt(b['radseal_vs_jpeg2000_below']['bd_rate'])} | "
                           f"{_fmt(b['radseal_vs_jpeg2000_above']['bd_rate'])} | {_fmt(b['radseal_vs_jpegxl_below']['bd_rate'])} | "
                           f"{_fmt(b['radseal_vs_jpegxl_above']['bd_rate'])} |")
    for key, label in (("radseal_vs_jpeg2000", "JPEG 2000"), ("radseal_vs_jpegxl", "JPEG XL")):
        vals = [r["bd"][key]["bd_rate"] for r in rows if math.isfinite(r["bd"][key]["bd_rate"])]
        if vals:
            met = sum(v <= -10.0 for v in vals)
            lines.append("")
            lines.append(f"radseal vs {label}: median {np.median(vals):+.1f}%, mean {np.mean(vals):+.1f}%, "
                         f"worst {max(vals):+.1f}%; <= -10% on {met} of {len(vals)} images.")
    lines += split_lines
    lines += ["", "## Curves (bpp -> PSNR dB)", ""]
    for r in rows:
        lines.append(f"**{r['image']}** ({r['bits']} bits, {r['height']} x {r['width']}, values {r['low']}..{r['high']})")
        lines.append("")
        for key, label in (("radseal", "radseal (quality)"), ("native", "radseal max_error=k"),
                           ("jpeg2000", "JPEG 2000"), ("jpegxl", "JPEG XL e7")):
            pts = ", ".join(f"{p['bpp']:.3f}->{p['psnr']:.1f}" for p in r[key])
            lines.append(f"* {label}: {pts}")
        lines.append("")
    te = sum(r["radseal_encode_s"] for r in rows)
    td = sum(r["radseal_decode_s"] for r in rows)
    lines.append(f"Time for the whole radseal sweep: {te:.1f} s encode, {td:.1f} s decode; JPEG 2000 "
                 f"{sum(r['jpeg2000_encode_s'] for r in rows):.1f} s and JPEG XL "
                 f"{sum(r['jpegxl_encode_s'] for r in rows):.1f} s encode (shared machine; for scale only).")
    return "\n".join(lines) + "\n"


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native-dir", default=str(root / ".." / "shared" / "data" / "native"))
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--images", help="comma-separated image names (default: all eight)")
    ap.add_argument("--step", type=int, default=2, help="every STEP-th quality from 1 (default: 2)")
    ap.add_argument("--top-db", type=float, default=74.0, help="stop a sweep past this PSNR (default: 74)")
    args = ap.parse_args()
    res = run(Path(args.native_dir), args.images.split(",") if args.images else None, args.step, args.top_db)
    res["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/native_lossy.py --out docs/results"
    extra = [f"--images {args.images}"] if args.images else []
    extra += [f"--step {args.step}"] if args.step != 2 else []
    extra += [f"--top-db {args.top_db:g}"] if args.top_db != 74.0 else []
    if extra:
        command += " " + " ".join(extra)
    (out / "native_lossy.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "native_lossy.md").write_text(markdown(res, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
