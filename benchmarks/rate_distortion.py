"""Rate-distortion benchmark: radseal's codec (the registry's default model) against the standard codecs.

Measures, in one run on this machine:

* chest X-rays from ``DATA/test`` (a documented, evenly spaced subset; 8-bit):
  on copies offset by 4 pixels (first 4 rows and columns cut: no codec can
  line up with the source JPEG's 8x8 grid; these are the figures to judge)
  and, for the baselines, at native alignment too;
* RG1 (15-bit chest CR) and RG3 (10-bit) from pydicom-data at native bit
  depth: their *right halves*, which training never saw;
* bpp (len(bytes) * 8 / pixels, headers included), PSNR at the image's own
  peak, MS-SSIM; BD-rate (PSNR and MS-SSIM) of radseal against each
  baseline over 0.1-1.0 bpp; encode and decode seconds per megapixel;
* a 2048 x 2048 radiograph: encode + decode time of radseal and of
  JPEG 2000 at matching PSNR, and peak memory (max RSS of a fresh process).

Writes OUT/rate_distortion.{json,md,png}. Run:

    python benchmarks/rate_distortion.py --images 8 --out docs/results
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BD_RANGE = (0.1, 1.0)
LOSSY_BASELINES = ("jpeg", "jpeg2000", "jpegxl", "avif")
LOSSLESS_BASELINES = ("jpegls", "jpegxl-lossless")
NATIVE_BASELINES = ("jpeg", "jpeg2000", "jpegxl")


def pick_images(data: Path, n: int) -> list[Path]:
    from radseal.io.dataset import list_samples

    samples = list_samples(data, "test")
    chosen = []
    for label in (0, 1):
        cls = [s.path for s in samples if s.label == label]
        k = n // 2 + (n % 2 if label == 0 else 0)
        idx = np.linspace(0, len(cls) - 1, k).round().astype(int) if k else []
        chosen += [cls[i] for i in idx]
    return chosen


def measure(img, data: bytes, out, enc_s: float | None, dec_s: float, with_msssim: bool) -> dict:
    from radseal.evaluate.metrics import ms_ssim, psnr

    rec = {
        "bytes": len(data),
        "bpp": len(data) * 8 / img.pixels.size,
        "psnr": psnr(img.pixels, out.pixels, img.max_value),
        "enc_s": enc_s,
        "dec_s": dec_s,
    }
    if with_msssim and rec["bpp"] <= 2.0:  # MS-SSIM costs ~1 s per image: only where curves are drawn
        rec["ms_ssim"] = ms_ssim(img.pixels, out.pixels, img.max_value)
    return rec


def run_image(img, name: str, dataset: str, codec, qualities, baselines, with_msssim: bool, rows: list, label: str = "radseal") -> None:
    mp = img.pixels.size / 1e6
    # radseal: one timed single-quality encode (for speed), the sweep sharing the analysis.
    mid_q = qualities[len(qualities) // 2]
    t = time.perf_counter()
    codec.compress(img, quality=mid_q)
    enc_mid = time.perf_counter() - t
    streams = codec.compress_qualities(img, qualities)
    for q, data in streams.items():
        t = time.perf_counter()
        out = codec.decompress(data)
        dec = time.perf_counter() - t
        rec = measure(img, data, out, enc_mid if q == mid_q else None, dec, with_msssim)
        rows.append({"dataset": dataset, "image": name, "codec": label, "param": q, "mp": mp, **rec})
    for bname in baselines:
        sweep_baseline(img, name, dataset, bname, rows, with_msssim)


def sweep_baseline(img, name: str, dataset: str, bname: str, rows: list, with_msssim: bool) -> None:
    """One baseline over its own quality sweep, each setting timed and measured."""
    from radseal.baselines import get_baseline

    b = get_baseline(bname)
    mp = img.pixels.size / 1e6
    for p in b.params_for(img):
        t = time.perf_counter()
        data = b.compress(img, p)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        out = b.decompress(data)
        dec = time.perf_counter() - t
        ms = with_msssim and not b.lossless
        rows.append({"dataset": dataset, "image": name, "codec": bname, "param": p, "mp": mp, **measure(img, data, out, enc, dec, ms)})


def mean_curves(rows: list, dataset: str) -> dict:
    """codec -> list of (param, mean bpp, mean psnr, mean ms_ssim) over the images."""
    out: dict = {}
    for codec in sorted({r["codec"] for r in rows if r["dataset"] == dataset}):
        pts = []
        params = []
        for r in rows:
            if r["dataset"] == dataset and r["codec"] == codec and r["param"] not in params:
                params.append(r["param"])
        for p in params:
            sel = [r for r in rows if r["dataset"] == dataset and r["codec"] == codec and r["param"] == p]
            ms = [r["ms_ssim"] for r in sel if r.get("ms_ssim") is not None]
            pts.append(
                {
                    "param": p,
                    "bpp": float(np.mean([r["bpp"] for r in sel])),
                    "psnr": float(np.mean([r["psnr"] for r in sel])),
                    "ms_ssim": float(np.mean(ms)) if len(ms) == len(sel) else None,
                    "n": len(sel),
                }
            )
        out[codec] = sorted(pts, key=lambda d: d["bpp"])
    return out


def _in_range(pts: list, key: str) -> tuple[list, list]:
    sel = [p for p in pts if BD_RANGE[0] <= p["bpp"] <= BD_RANGE[1] and p.get(key) is not None and math.isfinite(p[key])]
    return [p["bpp"] for p in sel], [p[key] for p in sel]


def bd_rates(curves: dict, per_image_rows: list, dataset: str, ours: str = "radseal", skip=()) -> dict:
    """BD-rate of codec ``ours`` against every lossy baseline (codecs in ``skip`` are not baselines)."""
    from radseal.evaluate.metrics import bd_rate, ms_ssim_db

    res = {}
    if ours not in curves:
        return res
    for base in curves:
        if base == ours or base == "radseal" or base in skip or base in LOSSLESS_BASELINES:
            continue
        entry = {}
        for key in ("psnr", "ms_ssim"):
            def tr(v, key=key):
                return ms_ssim_db(v) if key == "ms_ssim" else v

            rr, qr = _in_range(curves[base], key)
            rt, qt = _in_range(curves[ours], key)
            entry[f"{key}_mean_curve"] = bd_rate(rr, [tr(v) for v in qr], rt, [tr(v) for v in qt]) if len(rr) > 1 and len(rt) > 1 else math.nan
            # Where the curves share no quality inside the bpp window, BD-rate over whatever quality
            # range they do share (any rate) still says how many more bits one needs.
            allr = [(p["bpp"], tr(p[key])) for p in curves[base] if p.get(key) is not None and math.isfinite(p[key])]
            allt = [(p["bpp"], tr(p[key])) for p in curves[ours] if p.get(key) is not None and math.isfinite(p[key])]
            entry[f"{key}_mean_curve_any_rate"] = (
                bd_rate([a for a, _ in allr], [b for _, b in allr], [a for a, _ in allt], [b for _, b in allt])
                if len(allr) > 1 and len(allt) > 1
                else math.nan
            )
            per = []
            for image in sorted({r["image"] for r in per_image_rows if r["dataset"] == dataset}):
                def pts(c):
                    return [r for r in per_image_rows if r["dataset"] == dataset and r["image"] == image and r["codec"] == c]

                rr, qr = _in_range(pts(base), key)
                rt, qt = _in_range(pts(ours), key)
                if len(rr) > 1 and len(rt) > 1:
                    v = bd_rate(rr, [tr(x) for x in qr], rt, [tr(x) for x in qt])
                    if math.isfinite(v):
                        per.append(v)
            entry[f"{key}_per_image_median"] = float(np.median(per)) if per else math.nan
            entry[f"{key}_per_image_mean"] = float(np.mean(per)) if per else math.nan
            entry[f"{key}_per_image_max"] = float(np.max(per)) if per else math.nan
            entry[f"{key}_images"] = len(per)
        res[base] = entry
    return res


def timing_table(rows: list) -> dict:
    out = {}
    for codec in sorted({r["codec"] for r in rows}):
        sel = [r for r in rows if r["codec"] == codec and r["dataset"] == "cxr_offset"]
        enc = [r["enc_s"] / r["mp"] for r in sel if r["enc_s"] is not None]
        dec = [r["dec_s"] / r["mp"] for r in sel]
        out[codec] = {
            "encode_s_per_mp_median": float(np.median(enc)) if enc else None,
            "decode_s_per_mp_median": float(np.median(dec)) if dec else None,
            "samples": len(sel),
        }
    return out


# -- 2048 x 2048: time and peak memory in fresh processes ---------------------------------------
def square_test_image(data: Path, side: int = 2048):
    """The largest test chest X-ray, reflect-padded/cropped to side x side (sizes read from headers only)."""
    from PIL import Image as PILImage

    from radseal.io import read_image
    from radseal.io.dataset import list_samples

    samples = list_samples(data, "test")

    def area(s):
        with PILImage.open(s.path) as im:
            return im.size[0] * im.size[1]

    biggest = max(samples, key=area)
    img = read_image(biggest.path)
    px = np.pad(img.pixels, ((0, max(0, side - img.height)), (0, max(0, side - img.width))), mode="reflect")[:side, :side]
    return img.with_pixels(np.ascontiguousarray(px)), biggest.path.name


def child(kind: str, param: str, data: str, threads: int, side: int = 2048) -> None:
    """Run in a fresh process: encode + decode the side x side image once, print JSON (peak RSS included)."""
    from radseal.evaluate.metrics import psnr

    img, name = square_test_image(Path(data), side)
    small = img.with_pixels(np.ascontiguousarray(img.pixels[:256, :256]))
    if kind == "radseal" or kind.startswith("model:"):
        from radseal.codec import Codec

        codec = Codec.pretrained(None if kind == "radseal" else kind[len("model:") :])
        if codec.family == "hyperprior":  # the only family that runs torch
            import torch

            torch.set_num_threads(threads)
        enc = lambda im: codec.compress(im, quality=int(param))  # noqa: E731
        dec = codec.decompress
    else:
        from radseal.baselines import get_baseline

        b = get_baseline(kind)
        enc = lambda im: b.compress(im, float(param))  # noqa: E731
        dec = b.decompress
    dec(enc(small))  # warm-up on a small crop (first-call set-up costs)
    t = time.perf_counter()
    stream = enc(img)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    out = dec(stream)
    t_dec = time.perf_counter() - t
    print(
        json.dumps(
            {
                "codec": kind,
                "param": param,
                "image": name,
                "bpp": len(stream) * 8 / img.pixels.size,
                "psnr": psnr(img.pixels, out.pixels, img.max_value),
                "encode_s": t_enc,
                "decode_s": t_dec,
                "side": side,
                "peak_rss_mb": _vm_hwm_mb(),
            }
        )
    )


def _vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would count the parent's peak after fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(kind: str, param, data: Path, threads: int, side: int = 2048) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(param), "--data", str(data), "--threads", str(threads), "--side", str(side)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timing_2048(data: Path, quality: int, threads: int) -> dict:
    rs = run_child("radseal", quality, data, threads)
    # JPEG 2000 at matching quality: its knob is a target PSNR in dB; aim at radseal's PSNR.
    j2 = run_child("jpeg2000", round(rs["psnr"], 2), data, threads)
    ratio = (rs["encode_s"] + rs["decode_s"]) / (j2["encode_s"] + j2["decode_s"])
    # The largest size the codec must handle, for time and peak memory.
    big = run_child("radseal", quality, data, threads, side=4096)
    return {"radseal": rs, "jpeg2000": j2, "time_ratio_radseal_over_jpeg2000": ratio, "radseal_4096": big}


# -- reporting --------------------------------------------------------------------------------
def plot(curves_by_ds: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radseal.evaluate.metrics import ms_ssim_db

    panels = [(ds, "psnr") for ds in curves_by_ds] + [("cxr_offset", "ms_ssim")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for ax, (ds, key) in zip(np.atleast_1d(axes), panels):
        for codec, pts in curves_by_ds.get(ds, {}).items():
            pts = [p for p in pts if p.get(key) is not None and math.isfinite(p[key]) and p["bpp"] <= 2.0]
            if not pts:
                continue
            ys = [ms_ssim_db(p[key]) if key == "ms_ssim" else p[key] for p in pts]
            ax.plot([p["bpp"] for p in pts], ys, "o-" if codec == "radseal" else ".--", label=codec, lw=2 if codec == "radseal" else 1)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("MS-SSIM (dB)" if key == "ms_ssim" else "PSNR (dB)")
        ax.set_title(f"{ds} ({key})")
        ax.axvspan(*BD_RANGE, color="0.93")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _model_summary(model: dict) -> str:
    size = f"{model['bytes'] / 1e6:.2f} MB"
    if model.get("family", "hyperprior") == "subband":
        return f"{size}; CDF 9/7 wavelet with a learned context model fitted on {model.get('training_samples')} sampled coefficients"
    return f"{size}, {model.get('training_steps')} training steps"


def markdown(result: dict) -> str:
    lines = [
        "# Rate-distortion: radseal's codec vs standard codecs",
        "",
        f"Command: `{result['command']}`" + (f"; tables re-derived from its per-image rows with `{result['recompute_command']}`" if result.get("recompute_command") else ""),
        "",
        f"Run {result['started']} on this machine ({result['machine']}); model `{result['model']['model_id']}` "
        f"({_model_summary(result['model'])}). "
        f"Chest X-rays: {len(result['images'])} test images ({result['image_note']}). "
        "RG1/RG3: right halves (held out from training), native bit depth. "
        "cxr_native (not offset, aligned with the source JPEG grid): JPEG, JPEG 2000, JPEG XL only, PSNR only.",
        "",
        *([f"Baseline rows (JPEG, JPEG 2000, JPEG XL, AVIF, lossless) re-used from the run of {result['baselines_from']['started']} "
           f"(`{result['baselines_from']['command']}`): the baselines are deterministic, so their bpp and PSNR are those of a fresh run; "
           "their per-image times are from that run, not this one. The 2048 x 2048 timings below run JPEG 2000 fresh, in this run.", ""]
          if result.get("baselines_from") else []),
        "bpp = len(bytes) * 8 / pixels (headers included); PSNR at the image's own peak (2^bits - 1); values are means over images.",
        "",
        f"## BD-rate of radseal against each baseline ({BD_RANGE[0]}-{BD_RANGE[1]} bpp; negative = radseal needs fewer bits)",
        "",
        "n/a: inside the window the two curves share no quality range (radseal's best quality is below the baseline's quality at 0.1 bpp, or the baseline has under two points there); the 'any rate' columns then integrate over the quality range the curves do share, at whatever rates.",
        "",
        "| data | baseline | BD-rate PSNR (mean curve) | median per image | PSNR, any rate | BD-rate MS-SSIM (mean curve) | median per image | MS-SSIM, any rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    def f(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:+.1f}%"

    for ds, table in result["bd_rate"].items():
        for base, e in table.items():

            lines.append(
                f"| {ds} | {base} | {f(e['psnr_mean_curve'])} | {f(e['psnr_per_image_median'])} ({e['psnr_images']} img) "
                f"| {f(e.get('psnr_mean_curve_any_rate'))} "
                f"| {f(e.get('ms_ssim_mean_curve'))} | {f(e.get('ms_ssim_per_image_median'))} | {f(e.get('ms_ssim_mean_curve_any_rate'))} |"
            )
    for mid, by_ds in result.get("bd_rate_extra", {}).items():
        lines += ["", f"## BD-rate of `{mid}` against each baseline (same window; per image: median, mean, worst)", "",
                  "| data | baseline | PSNR mean curve | PSNR per image median | mean | worst | MS-SSIM per image median | mean |",
                  "|---|---|---|---|---|---|---|---|"]
        for ds, table in by_ds.items():
            for base, e in table.items():
                lines.append(
                    f"| {ds} | {base} | {f(e['psnr_mean_curve'])} | {f(e['psnr_per_image_median'])} ({e['psnr_images']} img) "
                    f"| {f(e.get('psnr_per_image_mean'))} | {f(e.get('psnr_per_image_max'))} "
                    f"| {f(e.get('ms_ssim_per_image_median'))} | {f(e.get('ms_ssim_per_image_mean'))} |"
                )
    lines += ["", "## Curves (mean over images)", ""]
    for ds, curves in result["curves"].items():
        lines += [f"### {ds}", "", "| codec | setting | bpp | PSNR dB | MS-SSIM |", "|---|---|---|---|---|"]
        for codec, pts in curves.items():
            for p in pts:
                ms = "" if p.get("ms_ssim") is None else f"{p['ms_ssim']:.5f}"
                ps = "lossless" if not math.isfinite(p["psnr"]) else f"{p['psnr']:.2f}"
                lines.append(f"| {codec} | {p['param']} | {p['bpp']:.4f} | {ps} | {ms} |")
        lines.append("")
    lines += ["## Speed (chest X-rays, offset copies; median seconds per megapixel)", "", "| codec | encode s/MP | decode s/MP |", "|---|---|---|"]
    for codec, t in result["timing"].items():
        enc = "" if t["encode_s_per_mp_median"] is None else f"{t['encode_s_per_mp_median']:.3f}"
        lines.append(f"| {codec} | {enc} | {t['decode_s_per_mp_median']:.3f} |")
    t2 = result.get("timing_2048")
    if t2:
        lines += [
            "",
            "## 2048 x 2048 radiograph, encode + decode, fresh process each",
            "",
            f"Measured {t2.get('measured', result['started'])} with the same weights (the largest test chest X-ray, {t2['radseal'].get('image', '')}, cropped/reflect-padded to 2048 x 2048; JPEG 2000 aimed at radseal's PSNR).",
            "",
            "| codec | setting | bpp | PSNR dB | encode s | decode s | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for k in ("radseal", "jpeg2000"):
            r = t2[k]
            lines.append(f"| {k} | {r['param']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['encode_s']:.2f} | {r['decode_s']:.2f} | {r['peak_rss_mb']:.0f} |")
        big = t2.get("radseal_4096")
        if big:
            lines.append(f"| radseal at 4096 x 4096 | {big['param']} | {big['bpp']:.3f} | {big['psnr']:.2f} | {big['encode_s']:.2f} | {big['decode_s']:.2f} | {big['peak_rss_mb']:.0f} |")
        lines += ["", f"Time ratio radseal / JPEG 2000 (encode + decode, 2048 x 2048): **{t2['time_ratio_radseal_over_jpeg2000']:.2f}x**."]
        for mid, e in t2.get("extra", {}).items():
            lines += ["", f"`{mid}` at 2048 x 2048: quality {e['codec']['param']}, {e['codec']['bpp']:.3f} bpp, {e['codec']['psnr']:.2f} dB, "
                      f"encode {e['codec']['encode_s']:.2f} s + decode {e['codec']['decode_s']:.2f} s, peak RSS {e['codec']['peak_rss_mb']:.0f} MB; "
                      f"JPEG 2000 at {e['jpeg2000']['psnr']:.2f} dB: {e['jpeg2000']['encode_s']:.2f} + {e['jpeg2000']['decode_s']:.2f} s, "
                      f"{e['jpeg2000']['peak_rss_mb']:.0f} MB. Time ratio **{e['time_ratio_over_jpeg2000']:.2f}x**. "
                      f"At 4096 x 4096: {e['codec_4096']['encode_s']:.2f} + {e['codec_4096']['decode_s']:.2f} s, peak RSS {e['codec_4096']['peak_rss_mb']:.0f} MB."]
    lines += ["", "Lossless references (bpp): " + ", ".join(
        f"{ds} {c} {p['bpp']:.3f}" for ds, cs in result["curves"].items() for c, pts in cs.items() if c in LOSSLESS_BASELINES for p in pts
    ), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="chest X-ray folder with test/ (default ../shared/data/cxr)")
    ap.add_argument("--images", type=int, default=8, help="test images, half NORMAL half PNEUMONIA, evenly spaced")
    ap.add_argument("--qualities", default="1,3,5,7,9,11,13,15", help="radseal qualities to sweep")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-native", action="store_true", help="skip the non-offset chest X-ray copies")
    ap.add_argument("--no-2048", action="store_true", help="skip the 2048x2048 timing")
    ap.add_argument("--recompute", action="store_true", help="recompute tables/plots from OUT/rate_distortion.json's per-image rows")
    ap.add_argument("--baselines-from", default=None, help="take the baselines' per-image rows (bpp, PSNR, MS-SSIM, times) from an earlier run's JSON instead of re-running them (same images required); the 2048 x 2048 timing still runs JPEG 2000 fresh")
    ap.add_argument("--also", default="rsc3-cdf97-seq", help="other installed model ids to measure beside the default (comma-separated; '' for none); "
                    "'rsc3-cdf97-seq@bw=W' is rsc3 with its finest level's step multiplied by W (a signalled band weight; rate-distortion only, no timing)")
    ap.add_argument("--child", nargs=2, metavar=("CODEC", "PARAM"), help=argparse.SUPPRESS)
    ap.add_argument("--side", type=int, default=2048, help=argparse.SUPPRESS)
    args = ap.parse_args()

    from radseal.io.dataset import resolve_data_dir

    data = resolve_data_dir(args.data)
    if args.child:
        child(args.child[0], args.child[1], str(data), args.threads, args.side)
        return 0

    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    from radseal.codec import Codec
    from radseal.io import read_image
    from radseal.io.samples import sample_path

    if args.recompute:
        return recompute(Path(args.out), data, args)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.time()
    codec = Codec.pretrained()
    extra = {mid: _extra_codec(mid) for mid in args.also.split(",") if mid and mid != codec.model_id}
    qualities = [int(q) for q in args.qualities.split(",")]
    paths = pick_images(data, args.images)
    rows: list = []
    all_baselines = LOSSY_BASELINES + LOSSLESS_BASELINES
    reused = None
    if args.baselines_from:
        reused = json.loads(Path(args.baselines_from).read_text())
        if reused.get("images") != [p.name for p in paths]:
            raise SystemExit("radseal: error: --baselines-from names other images than this run's")
        for r in reused["per_image"]:
            if r["codec"] in all_baselines:
                rows.append(dict(r, psnr=math.inf if r.get("psnr") is None else r["psnr"]))
        all_baselines = ()
    for p in tqdm(paths, desc="chest X-rays", unit="img"):
        img = read_image(p)
        off = img.with_pixels(np.ascontiguousarray(img.pixels[4:, 4:]))
        run_image(off, p.name, "cxr_offset", codec, qualities, all_baselines, True, rows)
        for mid, c in extra.items():
            run_image(off, p.name, "cxr_offset", c, qualities, (), True, rows, label=mid)
        if not args.no_native and reused is None:
            run_native(img, p.name, rows)
    for name in tqdm(("RG1", "RG3"), desc="pydicom-data", unit="img"):
        img = read_image(sample_path(name))
        right = img.with_pixels(np.ascontiguousarray(img.pixels[:, img.width // 2 :]))
        run_image(right, f"{name}-right-half", f"{name.lower()}_right", codec, qualities, all_baselines, True, rows)
        for mid, c in extra.items():
            run_image(right, f"{name}-right-half", f"{name.lower()}_right", c, qualities, (), True, rows, label=mid)

    datasets = ["cxr_offset"] + ([] if args.no_native else ["cxr_native"]) + ["rg1_right", "rg3_right"]
    curves = {ds: mean_curves(rows, ds) for ds in datasets}
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "baselines_from": None if reused is None else {"path": args.baselines_from, "command": reused.get("command"), "started": reused.get("started")},
        "started": started,
        "machine": f"{__import__('os').cpu_count()} CPU cores shared with other work, torch threads {args.threads}",
        "model": {
            "model_id": codec.model_id,
            "family": codec.family,
            "bytes": codec.info.get("bytes"),
            "training_steps": codec.info.get("training_steps"),
            "training_samples": codec.info.get("training_samples"),
            "sha256": codec.info.get("sha256"),
        },
        "images": [p.name for p in paths],
        "image_note": f"evenly spaced over the sorted NORMAL and PNEUMONIA test lists, {args.images} in all",
        "qualities": qualities,
        "bd_range_bpp": list(BD_RANGE),
        "bd_rate": {ds: bd_rates(curves[ds], rows, ds, skip=tuple(extra)) for ds in datasets},
        "bd_rate_extra": {mid: {ds: bd_rates(curves[ds], rows, ds, ours=mid, skip=tuple(extra)) for ds in datasets} for mid in extra},
        "curves": curves,
        "timing": timing_table(rows),
        "per_image": rows,
    }
    if not args.no_2048:
        # The radseal quality whose mean PSNR on the offset chest X-rays is nearest 40 dB (~30:1 for JPEG 2000).
        pts = curves["cxr_offset"]["radseal"]
        q2048 = min(pts, key=lambda p: abs(p["psnr"] - 40.0))["param"]
        result["timing_2048"] = timing_2048(data, q2048, args.threads)
        for mid in extra:
            if "@" in mid:  # an encoder setting of an installed model: rate-distortion only
                continue
            pts = curves["cxr_offset"][mid]
            qx = min(pts, key=lambda p: abs(p["psnr"] - 40.0))["param"]
            rx = run_child("model:" + mid, qx, data, args.threads)
            jx = run_child("jpeg2000", round(rx["psnr"], 2), data, args.threads)
            bx = run_child("model:" + mid, qx, data, args.threads, side=4096)
            result["timing_2048"].setdefault("extra", {})[mid] = {
                "codec": rx, "jpeg2000": jx, "codec_4096": bx,
                "time_ratio_over_jpeg2000": (rx["encode_s"] + rx["decode_s"]) / (jx["encode_s"] + jx["decode_s"]),
            }
    result["wall_s"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from radseal.io.files import atomic_write

    atomic_write(out / "rate_distortion.json", (json.dumps(_clean(result), indent=1, default=_json) + "\n").encode())
    atomic_write(out / "rate_distortion.md", markdown(result).encode())
    plot(curves, out / "rate_distortion.png")
    print(markdown(result))
    return 0


def _extra_codec(spec: str):
    """An installed model by id, or 'rsc3-cdf97-seq@bw=W': rsc3 sending band weight W on its finest level."""
    from radseal.codec import Codec

    mid, _, setting = spec.partition("@")
    codec = Codec.pretrained(mid)
    if setting:
        key, _, value = setting.partition("=")
        if key != "bw" or not hasattr(codec, "band_weights"):
            raise SystemExit(f"radseal: error: unknown model setting {spec!r}")
        codec.band_weights = (float(value),)
    return codec


def recompute(out: Path, data: Path, args) -> int:
    from radseal.io.files import atomic_write

    result = json.loads((out / "rate_distortion.json").read_text())
    rows = result["per_image"]
    for r in rows:  # JSON null back to inf (lossless PSNR)
        if r.get("psnr") is None:
            r["psnr"] = math.inf
    datasets = list(result["curves"])
    curves = {ds: mean_curves(rows, ds) for ds in datasets}
    result["curves"] = curves
    result["bd_rate"] = {ds: bd_rates(curves[ds], rows, ds) for ds in datasets}
    result["timing"] = timing_table(rows)
    result["recompute_command"] = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    if not args.no_2048:
        pts = curves["cxr_offset"]["radseal"]
        q2048 = min(pts, key=lambda p: abs(p["psnr"] - 40.0))["param"]
        result["timing_2048"] = timing_2048(data, q2048, args.threads)
        result["timing_2048"]["measured"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write(out / "rate_distortion.json", (json.dumps(_clean(result), indent=1, default=_json) + "\n").encode())
    atomic_write(out / "rate_distortion.md", markdown(result).encode())
    plot(curves, out / "rate_distortion.png")
    print(markdown(result))
    return 0


def run_native(img, name: str, rows: list) -> None:
    """Baselines (and no radseal, for time) on the copy aligned with the source JPEG grid; PSNR only."""
    for bname in NATIVE_BASELINES:
        sweep_baseline(img, name, "cxr_native", bname, rows, with_msssim=False)


def _clean(v):
    """JSON has no inf/nan: write them as null (lossless PSNR, undefined BD-rate)."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
        return None
    return v


def _json(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
