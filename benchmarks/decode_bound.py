"""What one decode costs at the size limit: time and peak memory of the shipped codec's decoder.

For each side S, a constant S x S 12-bit image (the kind a tiny PNG expands
into) is encoded once; then a fresh process decodes the stream and reports
the wall time of ``Codec.decompress`` and the growth of its peak resident
size (``VmHWM`` after minus before the decode, codec already loaded).
``radseal serve`` refuses images over ``--max-pixels`` (default 25,000,000 =
5000 x 5000) before decoding; sizes above it are measured here with the
check off, to show what the limit avoids. Results:
docs/results/decode_bound.{json,md}.

    python benchmarks/decode_bound.py --sides 1760 4096 5000 8192
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
import numpy as np
from radseal.pipeline import default_codec

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024

mode, side, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
codec = default_codec()
if mode == "encode":
    from radseal.image import Image
    t0 = time.perf_counter()
    data = codec.compress(Image(np.full((side, side), 1000, np.uint16), bits_stored=12))
    open(path, "wb").write(data)
    print(json.dumps({"stream_bytes": len(data), "encode_s": time.perf_counter() - t0}))
else:
    data = open(path, "rb").read()
    codec.decompress(codec.compress(__import__("radseal.image").image.Image(np.zeros((16, 16), np.uint16), bits_stored=12)))
    before = hwm()
    t0 = time.perf_counter()
    out = codec.decompress(data)
    seconds = time.perf_counter() - t0
    assert out.pixels.shape == (side, side)
    print(json.dumps({"decode_s": seconds, "hwm_before_mib": before, "decode_peak_growth_mib": hwm() - before}))
"""


def child(mode: str, side: int, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(side), str(path)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[1760, 4096, 5000, 8192])
    args = parser.parse_args()
    from radseal.pipeline import DEFAULT_MAX_PIXELS

    work = Path(tempfile.mkdtemp(prefix="radseal-decode-"))
    rows = []
    for side in args.sides:
        path = work / f"s{side}.rslc"
        enc = child("encode", side, path)
        dec = child("decode", side, path)
        row = {"side": side, "pixels": side * side, "accepted": side * side <= DEFAULT_MAX_PIXELS, **enc, **dec}
        rows.append(row)
        print(row, flush=True)
        path.unlink()
    command = "python benchmarks/decode_bound.py --sides " + " ".join(map(str, args.sides))
    out = ROOT / "docs" / "results"
    (out / "decode_bound.json").write_text(json.dumps({"command": command, "python": platform.python_version(),
                                                      "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    lines = [
        "# Decoder cost at the size limit",
        "",
        f"Command: `{command}` (Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other jobs, "
        f"load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        "A constant 12-bit S x S image, encoded once with the shipped codec; a fresh process decodes it. "
        "Peak growth is `VmHWM` after the decode minus before it (codec loaded, one small warm-up decode). "
        f"`radseal serve` and `radseal decode` refuse images over {DEFAULT_MAX_PIXELS} pixels before decoding "
        "(`--max-pixels`); larger rows were measured with that check off.",
        "",
        "| side | megapixels | accepted by default | stream (bytes) | decode (s) | peak growth (MiB) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['side']} | {r['pixels'] / 1e6:.1f} | {'yes' if r['accepted'] else 'no (refused)'} | "
                     f"{r['stream_bytes']} | {r['decode_s']:.1f} | {r['decode_peak_growth_mib']:.0f} |")
    (out / "decode_bound.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
