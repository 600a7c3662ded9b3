"""Speed and peak memory of the default lossy codec (rsc3) against OpenJPEG and JPEG XL, same run.

* 2048 x 2048: the centre crop of the largest test chest X-ray (8-bit, no
  resampling). rsc3 at the given qualities; for each, OpenJPEG
  (``imagecodecs.jpeg2k_encode``, irreversible 9/7, one thread) and JPEG XL
  (effort 7, one thread) at the setting whose PSNR is closest to rsc3's from
  at or above it (searched by bisection on OpenJPEG's target-PSNR ``level``
  and JPEG XL's ``distance``). Encode and decode seconds are each the median
  of three runs in a fresh process after a warm-up on a 256 x 256 crop.
* 4096 x 4096: the same radiograph reflect-padded to 4096 x 4096, as 8-bit and
  as 16-bit (values x 257); peak resident memory (``VmHWM``) of a fresh
  process that loads the pixels (or the stream) and encodes (or decodes)
  once. ``VmHWM`` is read in the child itself: ``RUSAGE_CHILDREN`` gives the
  largest of all children so far, so it cannot tell codecs apart in one run.
  The row "python + numpy + image only" is the same child doing nothing.

``--baseline-src DIR`` also runs rsc3 from another source tree (e.g. an older
commit with its own engine built), in the same run::

    mkdir -p build/rsbase && git archive b5e529f | tar -x -C build/rsbase
    (cd build/rsbase && python setup.py -q build_ext --inplace)
    python benchmarks/codec_speed.py --baseline-src build/rsbase/src --baseline-label "b5e529f (numpy transform)"

Results: docs/results/codec_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rate_distortion import _vm_hwm_mb as vm_hwm_mb  # noqa: E402  (one VmHWM reader; this folder is sys.path[0])
from radseal.evaluate.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cxr"


# -- codecs (each: encode(px, bits, param) -> bytes, decode(bytes, bits) -> px) -----------------
def _radseal(px: np.ndarray, bits: int):
    from radseal.image import Image

    return Image(pixels=px, bits_stored=bits, photometric="MONOCHROME2", signed=False)


def encode(codec: str, px: np.ndarray, bits: int, param: float) -> bytes:
    if codec == "rsc3":
        from radseal.codec import Codec

        return Codec.pretrained().compress(_radseal(px, bits), quality=int(param))
    import imagecodecs

    if codec == "openjpeg":
        return imagecodecs.jpeg2k_encode(px, level=float(param), codecformat="j2k", reversible=False, numthreads=1, bitspersample=bits)
    if codec == "jpegxl":
        return imagecodecs.jpegxl_encode(px, distance=float(param), effort=7, bitspersample=bits, numthreads=1)
    raise ValueError(codec)


def decode(codec: str, data: bytes) -> np.ndarray:
    if codec == "rsc3":
        from radseal.codec import Codec

        return Codec.pretrained().decompress(data).pixels
    import imagecodecs

    if codec == "openjpeg":
        return imagecodecs.jpeg2k_decode(data, numthreads=1)
    return imagecodecs.jpegxl_decode(data, numthreads=1)


def child(args) -> None:
    """Fresh process: encode (pixels from --pixels) or decode (stream from --stream), report JSON."""
    if args.child == "idle":
        np.load(args.pixels)
        print(json.dumps({"peak_rss_mb": vm_hwm_mb()}))
        return
    if args.child == "encode":
        px = np.load(args.pixels)
        encode(args.codec, np.ascontiguousarray(px[:256, :256]), args.bits, args.param)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            data = encode(args.codec, px, args.bits, args.param)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        Path(args.stream).write_bytes(data)
        print(json.dumps({"seconds": float(np.median(times)), "cpu_seconds": float(np.median(cpu)), "times": times,
                          "bytes": len(data), "peak_rss_mb": vm_hwm_mb()}))
        return
    data = Path(args.stream).read_bytes()
    if args.warmup:
        decode(args.codec, Path(args.warmup).read_bytes())
    times, cpu = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        out = decode(args.codec, data)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = vm_hwm_mb()
    np.save(args.out, out)
    print(json.dumps({"seconds": float(np.median(times)), "cpu_seconds": float(np.median(cpu)), "times": times, "peak_rss_mb": peak}))


def run_child(mode: str, codec: str, param, bits: int, files: dict, repeat: int, src: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--codec", codec, "--param", str(param), "--bits", str(bits),
           "--repeat", str(repeat), "--pixels", files["pixels"], "--stream", files["stream"], "--out", files["out"]]
    if files.get("warmup"):
        cmd += ["--warmup", files["warmup"]]
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(codec: str, param, px_path: str, bits: int, tmp: Path, repeat: int, src: str | None = None) -> dict:
    """Encode child, then decode child (warm-up on a small stream of the same codec)."""
    px = np.load(px_path)
    small = tmp / "small.bin"
    small.write_bytes(encode(codec, np.ascontiguousarray(px[:256, :256]), bits, param))
    files = {"pixels": px_path, "stream": str(tmp / "stream.bin"), "out": str(tmp / "out.npy"), "warmup": str(small)}
    enc = run_child("encode", codec, param, bits, files, repeat, src)
    dec = run_child("decode", codec, param, bits, files, repeat, src)
    out = np.load(files["out"])
    small.unlink(missing_ok=True)
    return {
        "codec": codec, "param": param, "bits": bits, "side": px.shape[0],
        "bpp": enc["bytes"] * 8 / px.size, "psnr": psnr(px, out, 2**bits - 1),
        "encode_s": enc["seconds"], "decode_s": dec["seconds"], "encode_times": enc["times"], "decode_times": dec["times"],
        "encode_cpu_s": enc["cpu_seconds"], "decode_cpu_s": dec["cpu_seconds"],
        "encode_peak_rss_mb": enc["peak_rss_mb"], "decode_peak_rss_mb": dec["peak_rss_mb"],
    }


def combine(runs: list[dict]) -> dict:
    """One row from several rounds: the first round's stream figures, the median of the rounds' times."""
    out = dict(runs[0])
    for k in ("encode_s", "decode_s", "encode_cpu_s", "decode_cpu_s"):
        out[k] = float(np.median([r[k] for r in runs]))
    out["rounds"] = [{k: r[k] for k in ("encode_s", "decode_s", "encode_cpu_s", "decode_cpu_s")} for r in runs]
    out["encode_peak_rss_mb"] = max(r["encode_peak_rss_mb"] for r in runs)
    out["decode_peak_rss_mb"] = max(r["decode_peak_rss_mb"] for r in runs)
    return out


def match_psnr(codec: str, px: np.ndarray, bits: int, target: float) -> float:
    """The setting whose PSNR is the lowest at or above ``target`` (bisection; in this process)."""
    if codec == "openjpeg":  # level: target PSNR in dB, higher = better
        lo, hi, better_up = target - 3.0, target + 6.0, True
    else:  # distance: higher = worse
        lo, hi, better_up = 0.05, 8.0, False
    best = hi if better_up else lo
    for _ in range(14):
        mid = (lo + hi) / 2
        p = psnr(px, decode(codec, encode(codec, px, bits, mid)), 2**bits - 1)
        if p >= target:
            best = mid
            if better_up:
                hi = mid
            else:
                lo = mid
        elif better_up:
            lo = mid
        else:
            hi = mid
    return round(best, 4)


def test_image(data: Path) -> tuple[np.ndarray, str]:
    from PIL import Image as PILImage

    paths = sorted((data / "test").glob("*/*.jpeg"))
    if not paths:
        raise SystemExit(f"radseal: error: no test chest X-rays under {data}")

    def area(p):
        with PILImage.open(p) as im:
            return im.size[0] * im.size[1]

    best = max(paths, key=area)
    with PILImage.open(best) as im:
        px = np.asarray(im.convert("L"))
    return px, str(best.relative_to(data.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="chest X-ray folder with test/ (default ../shared/data/cxr)")
    ap.add_argument("--qualities", default="7,10")
    ap.add_argument("--repeat", type=int, default=3, help="runs per process (median)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh-process rounds per codec, interleaved (median)")
    ap.add_argument("--no-jpegxl", action="store_true")
    ap.add_argument("--no-4096", action="store_true")
    ap.add_argument("--baseline-src", default=None)
    ap.add_argument("--baseline-label", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--child", choices=["encode", "decode", "idle"], help=argparse.SUPPRESS)
    for a in ("--codec", "--pixels", "--stream", "--warmup"):
        ap.add_argument(a, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--param", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bits", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # --out is then the file for the decoded pixels
        child(args)
        return 0

    full, name = test_image(Path(args.data))
    h, w = full.shape
    crop = np.ascontiguousarray(full[(h - 2048) // 2 : (h - 2048) // 2 + 2048, (w - 2048) // 2 : (w - 2048) // 2 + 2048])
    big = np.pad(full, ((0, max(0, 4096 - h)), (0, max(0, 4096 - w))), mode="reflect")[:4096, :4096]
    codecs = ["openjpeg"] + ([] if args.no_jpegxl else ["jpegxl"])
    result = {
        "command": "python benchmarks/codec_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "image": f"{name}, centre 2048 x 2048 crop (8-bit)",
        "repeat": args.repeat,
        "rounds": args.rounds,
        "speed_2048": [],
        "memory_4096": [],
    }
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        p2048 = str(tmp / "px2048.npy")
        np.save(p2048, crop)
        for q in [int(v) for v in args.qualities.split(",")]:
            first = measure("rsc3", q, p2048, 8, tmp, args.repeat)
            jobs = {"rsc3": ("rsc3", q, None)}
            if args.baseline_src:
                jobs["rsc3_baseline"] = ("rsc3", q, args.baseline_src)
            for c in codecs:
                jobs[c] = (c, match_psnr(c, crop, 8, first["psnr"]), None)
            # rounds interleave the codecs, so that each sees the machine's load of the same minutes
            runs = {k: [first] if k == "rsc3" else [] for k in jobs}
            for rnd in range(args.rounds):
                for k, (c, param, src) in jobs.items():
                    if rnd or k != "rsc3":
                        runs[k].append(measure(c, param, p2048, 8, tmp, args.repeat, src=src))
            row = {"quality": q, **{k: combine(v) for k, v in runs.items()}}
            rs = row["rsc3"]
            row["time_ratio_rsc3_over"] = {c: (rs["encode_s"] + rs["decode_s"]) / (row[c]["encode_s"] + row[c]["decode_s"]) for c in codecs}
            row["cpu_ratio_rsc3_over"] = {c: (rs["encode_cpu_s"] + rs["decode_cpu_s"]) / (row[c]["encode_cpu_s"] + row[c]["decode_cpu_s"]) for c in codecs}
            print(json.dumps({k: (v if not isinstance(v, dict) or "codec" not in v else
                                  {kk: v[kk] for kk in ("param", "bpp", "psnr", "encode_s", "decode_s")}) for k, v in row.items()}), flush=True)
            result["speed_2048"].append(row)
        if not args.no_4096:
            ref = result["speed_2048"][-1]
            for bits in (8, 16):
                px = big.astype(np.uint16) * 257 if bits == 16 else big
                path = str(tmp / f"px4096_{bits}.npy")
                np.save(path, np.ascontiguousarray(px))
                idle = run_child("idle", "none", 0, bits, {"pixels": path, "stream": "", "out": ""}, 1, None)
                rows = {"idle": idle["peak_rss_mb"]}
                rows["rsc3"] = measure("rsc3", ref["quality"], path, bits, tmp, 1)
                if args.baseline_src:
                    rows["rsc3_baseline"] = measure("rsc3", ref["quality"], path, bits, tmp, 1, src=args.baseline_src)
                for c in codecs:
                    rows[c] = measure(c, ref[c]["param"], path, bits, tmp, 1)
                print(json.dumps({k: v if isinstance(v, float) else {kk: v[kk] for kk in ("encode_peak_rss_mb", "decode_peak_rss_mb")} for k, v in rows.items()}), flush=True)
                result["memory_4096"].append({"bits": bits, **rows})
    result["baseline_label"] = args.baseline_label
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "codec_speed.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    names = {"rsc3": "rsc3 (radseal)", "rsc3_baseline": f"rsc3, {r.get('baseline_label') or 'baseline source'}",
             "openjpeg": "OpenJPEG (JPEG 2000 9/7, 1 thread)", "jpegxl": "JPEG XL e7 (1 thread)"}
    lines = [
        "# rsc3 speed and memory against OpenJPEG and JPEG XL",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Run {r['started']} on {r['machine']} (shared, noisy: compare rows of the same run only). "
        f"Image: {r['image']}. Seconds: in each of {r.get('rounds', 1)} rounds, every codec runs in a fresh process per direction, "
        f"{r['repeat']} times after a warm-up on a 256 x 256 crop (median); the table gives the median over the rounds, which "
        "interleave the codecs so that they share the machine's load. Wall seconds, and CPU seconds of the process (every codec "
        "runs one thread, so CPU time is the less load-dependent figure). The other codecs at the setting whose PSNR is "
        "closest to rsc3's from at or above.",
        "",
        "## 2048 x 2048, encode + decode",
        "",
        "| quality | codec | setting | bpp | PSNR dB | encode s | decode s | encode + decode s | rsc3 / this | encode + decode CPU s | rsc3 / this (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["speed_2048"]:
        t_rs = row["rsc3"]["encode_s"] + row["rsc3"]["decode_s"]
        c_rs = row["rsc3"].get("encode_cpu_s", 0) + row["rsc3"].get("decode_cpu_s", 0)
        for k in ("rsc3", "rsc3_baseline", "openjpeg", "jpegxl"):
            if k not in row:
                continue
            e = row[k]
            t = e["encode_s"] + e["decode_s"]
            c = e.get("encode_cpu_s", 0) + e.get("decode_cpu_s", 0)
            lines.append(f"| {row['quality']} | {names[k]} | {e['param']:g} | {e['bpp']:.3f} | {e['psnr']:.2f} | {e['encode_s']:.3f} | "
                         f"{e['decode_s']:.3f} | {t:.3f} | {'' if k == 'rsc3' else f'{t_rs / t:.2f}x'} | {c:.3f} | "
                         f"{'' if k == 'rsc3' or not c else f'{c_rs / c:.2f}x'} |")
    if r["memory_4096"]:
        lines += ["", "## 4096 x 4096, peak resident memory (MB, whole process)", "",
                  "The radiograph reflect-padded to 4096 x 4096; 16-bit: values x 257. One encode and one decode, each in a fresh process "
                  "(rsc3 at the last quality above; the others at their matched setting for it).", "",
                  "Bytes per pixel (8-bit): the growth of the peak from the 2048 x 2048 run of the same setting to 4096 x 4096, "
                  "divided by the pixels added; what a larger image costs per pixel.", "",
                  "| bits | codec | encode MB | decode MB | encode s | decode s | rsc3 / this (encode, decode) | bytes per pixel (encode, decode) |",
                  "|---|---|---|---|---|---|---|---|"]
        small = r["speed_2048"][-1]
        added = (4096 * 4096 - 2048 * 2048) / 2**20
        for m in r["memory_4096"]:
            rs = m["rsc3"]
            lines.append(f"| {m['bits']} | python + numpy + image only | {m['idle']:.0f} | | | | | |")
            for k in ("rsc3", "rsc3_baseline", "openjpeg", "jpegxl"):
                if k not in m:
                    continue
                e = m[k]
                ratio = "" if k == "rsc3" else f"{rs['encode_peak_rss_mb'] / e['encode_peak_rss_mb']:.2f}x, {rs['decode_peak_rss_mb'] / e['decode_peak_rss_mb']:.2f}x"
                bpp = ""
                if m["bits"] == 8 and k in small:
                    bpp = ", ".join(f"{(e[f'{d}_peak_rss_mb'] - small[k][f'{d}_peak_rss_mb']) / added:.1f}" for d in ("encode", "decode"))
                lines.append(f"| {m['bits']} | {names[k]} | {e['encode_peak_rss_mb']:.0f} | {e['decode_peak_rss_mb']:.0f} | "
                             f"{e['encode_s']:.2f} | {e['decode_s']:.2f} | {ratio} | {bpp} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
