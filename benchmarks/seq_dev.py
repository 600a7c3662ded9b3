"""Development comparison of rsc3 variants on TRAINING chest X-rays (never the test split).

Per image (offset by 4 pixels, as the benchmark), BD-rate (PSNR, optionally MS-SSIM) of each
variant against the first one, over all points in 0.1-1.0 bpp; prints the median and the worst.
Variants are ``name=python-expression`` evaluated with ``seq`` (the module) in scope, the
expression returning a configured SeqCodec, e.g.::

    python benchmarks/seq_dev.py --images 6 \\
        'f0=seq.SeqCodec(base.model, loop_filter=None)' 'lf1=seq.SeqCodec(base.model)'
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cxr"))
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--qualities", default="1,3,5,7,9,11,13,15")
    ap.add_argument("--msssim", action="store_true")
    args = ap.parse_args()

    from radseal.codec import Codec, seq
    from radseal.evaluate.metrics import bd_rate, ms_ssim, ms_ssim_db, psnr
    from radseal.io import read_image
    from radseal.io.dataset import list_samples

    base = Codec.pretrained(seq.MODEL_ID)
    variants = []
    for v in args.variants:
        name, expr = v.split("=", 1)
        variants.append((name, eval(expr, {"seq": seq, "base": base, "np": np})))
    samples = list_samples(args.data, "train")
    chosen = []
    for label in (0, 1):
        cls = [s.path for s in samples if s.label == label]
        k = args.images // 2 + (args.images % 2 if label == 0 else 0)
        chosen += [cls[i] for i in np.linspace(0, len(cls) - 1, k).round().astype(int)]
    qs = [int(q) for q in args.qualities.split(",")]
    keys = ["psnr"] + (["ms_ssim"] if args.msssim else [])
    res = {name: {k: [] for k in keys} for name, _ in variants}
    times = {name: 0.0 for name, _ in variants}
    for p in chosen:
        img = read_image(p)
        img = img.with_pixels(np.ascontiguousarray(img.pixels[4:, 4:]))
        curves = {}
        for name, codec in variants:
            t = time.perf_counter()
            streams = codec.compress_qualities(img, qs)
            pts = []
            for q in qs:
                out = codec.decompress(streams[q])
                bpp = len(streams[q]) * 8 / img.pixels.size
                rec = {"bpp": bpp, "psnr": psnr(img.pixels, out.pixels, img.max_value)}
                if args.msssim and 0.1 <= bpp <= 1.0:
                    rec["ms_ssim"] = ms_ssim_db(ms_ssim(img.pixels, out.pixels, img.max_value))
                pts.append(rec)
            times[name] += time.perf_counter() - t
            curves[name] = pts
        ref = curves[variants[0][0]]
        line = [p.name]
        for name, _ in variants[1:]:
            for k in keys:
                def sel(c):
                    s = [r for r in c if 0.1 <= r["bpp"] <= 1.0 and k in r]
                    return [r["bpp"] for r in s], [r[k] for r in s]
                v = bd_rate(*sel(ref), *sel(curves[name]))
                res[name][k].append(v)
                line.append(f"{name}:{k}={v:+.2f}%")
        print(" ".join(line), flush=True)
    for name, _ in variants[1:]:
        for k in keys:
            v = [x for x in res[name][k] if math.isfinite(x)]
            print(f"{name} {k}: median {np.median(v):+.2f}% mean {np.mean(v):+.2f}% worst {max(v):+.2f}%  ({times[name]:.0f} s)")
    print(f"{variants[0][0]} time {times[variants[0][0]]:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
