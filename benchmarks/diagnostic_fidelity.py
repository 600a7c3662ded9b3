"""Diagnostic fidelity benchmark: the shipped classifier on the test split, and ``radseal evaluate``.

    python benchmarks/diagnostic_fidelity.py classifier [--data DIR]
        -> docs/results/evaluate/classifier.json + classifier.md
           (accuracy and AUC with bootstrap CIs; leak probes)
    python benchmarks/diagnostic_fidelity.py evaluate [--limit N] [-- extra radseal evaluate args]
        -> docs/results/evaluate/ (report.html, report.md, results.json, PNGs) + README.md
    python benchmarks/diagnostic_fidelity.py at30 [--data DIR] [--limit N] [--resume]
        -> docs/results/evaluate/at30.{json,md} (+ at30.jsonl, one record per image)
           every test chest X-ray (offset by 4 pixels): radseal's default rate against
           JPEG 2000 at exactly 30:1 (PSNR), and the classifier on radseal, JPEG XL e7
           at radseal's own bytes per image, and JPEG 2000 at 30:1
    python benchmarks/diagnostic_fidelity.py native30 [--native DIR]
        -> docs/results/evaluate/at30_native.{json,md}: the same PSNR check on the
           right halves of RG1, RG3 and ../shared/data/native (benchmarks/native_depth.py)

Leak probes (why they matter: the classes of the Kermany data differ in image
size and shape, so a classifier can score well without looking at lungs):

* metadata only: AUC of the native pixel count and of the aspect ratio alone;
* views: AUC of the padding fraction of the padded fixed-size view (what a
  padded view would leak) against the centre-crop view radseal uses;
* resolution: the test images re-sampled to the other class's typical size
  (NORMAL shrunk to 0.65x, PNEUMONIA enlarged to 1.5x); if the classifier
  read resolution, its probabilities would move towards the other class.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "evaluate"


def _auc_either_way(y, score) -> float:
    from sklearn.metrics import roc_auc_score

    a = roc_auc_score(y, score)
    return float(max(a, 1 - a))


def classifier_benchmark(data: str | None, n_boot: int = 2000) -> dict:
    from PIL import Image as PILImage
    from tqdm import tqdm

    from radseal.diagnosis.classifier import Classifier
    from radseal.diagnosis.metrics import bootstrap_ci, classification_metrics
    from radseal.io import read_image
    from radseal.io.dataset import fixed_size, list_samples, resolve_data_dir

    clf = Classifier.pretrained()
    root = resolve_data_dir(data)
    samples = list_samples(root, "test")
    t0 = time.time()
    views, padded, sizes, y = [], [], [], []
    resampled = []  # probability after re-sampling to the other class's typical size
    for s in tqdm(samples, desc="test images", unit="img"):
        img = read_image(s.path)
        views.append(clf.view(img))
        padded.append(fixed_size(img, clf.size))
        sizes.append(img.shape)
        y.append(s.label)
        factor = 0.65 if s.label == 0 else 1.5
        h, w = img.shape
        px = np.asarray(PILImage.fromarray(img.pixels).resize((round(w * factor), round(h * factor)), PILImage.Resampling.LANCZOS))
        resampled.append(clf.predict(img.with_pixels(px)).probability)
    y = np.array(y)
    p = clf.probabilities(np.stack(views))
    m = classification_metrics(y, p)
    acc = bootstrap_ci(y, p, "accuracy", n=n_boot)
    auc = bootstrap_ci(y, p, "auc", n=n_boot)
    h = np.array([s[0] for s in sizes], float)
    w = np.array([s[1] for s in sizes], float)
    pads = np.array([(np.abs(v - v.min()) < 1e-6).mean() for v in padded])
    q = np.array(resampled)
    probe = {}
    for label, name, factor in ((0, "NORMAL shrunk to 0.65x", 0.65), (1, "PNEUMONIA enlarged to 1.5x", 1.5)):
        sel = y == label
        dp = q[sel] - p[sel]
        probe[name] = {
            "images": int(sel.sum()),
            "mean_dp": float(dp.mean()),
            "mean_abs_dp": float(np.abs(dp).mean()),
            "max_abs_dp": float(np.abs(dp).max()),
            "label_flips": int(((q[sel] >= clf.threshold) != (p[sel] >= clf.threshold)).sum()),
        }
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "data": str(root),
        "split": "test",
        "images": int(len(y)),
        "normal": int((y == 0).sum()),
        "pneumonia": int((y == 1).sum()),
        "classifier": {"size": clf.size, "threshold": clf.threshold, **clf.info},
        "metrics": {k: m[k] for k in ("accuracy", "precision", "recall", "f1", "auc", "confusion_matrix")},
        "accuracy_ci95": [acc[1], acc[2]],
        "auc_ci95": [auc[1], auc[2]],
        "bootstrap_resamples": n_boot,
        "leak_probes": {
            "auc_native_pixel_count_alone": _auc_either_way(y, h * w),
            "auc_aspect_ratio_alone": _auc_either_way(y, w / h),
            "auc_padding_fraction_of_padded_view": _auc_either_way(y, pads),
            "resolution_resampling": probe,
        },
        "roc": m["roc"],
        "seconds": round(time.time() - t0, 1),
    }


def classifier_markdown(r: dict) -> str:
    m = r["metrics"]
    lp = r["leak_probes"]
    cm = m["confusion_matrix"]
    lines = [
        "# Pneumonia classifier on the test split",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Data: `{r['data']}` test split, {r['images']} images ({r['normal']} NORMAL, {r['pneumonia']} PNEUMONIA), never used in training or selection.",
        f"Weights: `src/radseal/weights/classifier/pneumonia_cnn.npz` (trained by `{r['classifier'].get('command')}`, epoch {r['classifier'].get('selected_epoch')} "
        f"chosen on {r['classifier'].get('heldout_images')} held-out train images).",
        "",
        "| metric | value | 95% bootstrap CI |",
        "|---|---|---|",
        f"| accuracy (threshold {r['classifier']['threshold']}) | {m['accuracy']:.3f} | [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}] |",
        f"| AUC | {m['auc']:.3f} | [{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}] |",
        f"| precision | {m['precision']:.3f} | |",
        f"| recall (sensitivity) | {m['recall']:.3f} | |",
        f"| F1 | {m['f1']:.3f} | |",
        "",
        f"Confusion matrix (rows true NORMAL, PNEUMONIA; columns predicted): [[{cm[0][0]}, {cm[0][1]}], [{cm[1][0]}, {cm[1][1]}]].",
        "",
        "## Leak probes",
        "",
        "| probe | value |",
        "|---|---|",
        f"| AUC of native pixel count alone | {lp['auc_native_pixel_count_alone']:.3f} |",
        f"| AUC of aspect ratio alone | {lp['auc_aspect_ratio_alone']:.3f} |",
        f"| AUC of the padding fraction of a padded fixed-size view | {lp['auc_padding_fraction_of_padded_view']:.3f} |",
    ]
    for name, v in lp["resolution_resampling"].items():
        lines.append(
            f"| {name}: mean Δp / mean abs Δp / max abs Δp / label flips | {v['mean_dp']:+.4f} / {v['mean_abs_dp']:.4f} / {v['max_abs_dp']:.3f} / {v['label_flips']} of {v['images']} |"
        )
    lines += ["", f"Run time {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- at 30:1


def _pillow_j2k_30(pixels: np.ndarray, bits: int) -> tuple[int, np.ndarray]:
    """OpenJPEG at 30:1 of the stored size through Pillow (a second build of OpenJPEG, as a cross-check)."""
    import io

    from PIL import Image as PILImage

    from radseal.codec.default_rate import REFERENCE_RATIO, bits_allocated

    buf = io.BytesIO()
    im = PILImage.fromarray(pixels)  # mode L for uint8, I;16 for uint16
    # Pillow's ratio counts 8 or 16 bits per sample by mode, i.e. bits allocated.
    assert bits_allocated(bits) == (8 if im.mode == "L" else 16), im.mode
    im.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[REFERENCE_RATIO],
                                               irreversible=True, no_jp2=True)
    back = np.asarray(PILImage.open(io.BytesIO(buf.getvalue()))).astype(pixels.dtype)
    return len(buf.getvalue()), back


def _fixed_rate_rule(codec, img) -> bytes:
    """The rule the default replaced in design: the highest quality within bits allocated / 30 bpp."""
    from radseal.codec.default_rate import reference_bpp

    return codec.compress(img, bpp=reference_bpp(img.bits_stored))


def _setting(decoded) -> str:
    meta = decoded.metadata or {}
    if "quality" in meta:
        return f"q{meta['quality']}"
    return f"k{meta.get('max_error')}"


def _psnr_record(img, data_len: int, out_pixels) -> dict:
    from radseal.evaluate.metrics import psnr

    return {"bytes": int(data_len), "bpp": 8 * data_len / img.pixels.size, "psnr": psnr(img.pixels, out_pixels, img.max_value)}


def rate_check(codec, img) -> dict:
    """radseal's default, the fixed-rate rule, and JPEG 2000 at 30:1 (two OpenJPEG builds) on one image."""
    from radseal.codec.default_rate import jpeg2000_at_ratio

    t = time.perf_counter()
    data = codec.compress(img)
    enc_s = time.perf_counter() - t
    out = codec.decompress(data)
    rec = {"radseal": {**_psnr_record(img, len(data), out.pixels), "setting": _setting(out), "encode_s": enc_s}}
    fixed = _fixed_rate_rule(codec, img)
    fo = codec.decompress(fixed)
    rec["fixed_rate_rule"] = {**_psnr_record(img, len(fixed), fo.pixels), "setting": _setting(fo)}
    j2k, back = jpeg2000_at_ratio(img.pixels, img.bits_stored)
    rec["jpeg2000"] = _psnr_record(img, len(j2k), back)
    n, back2 = _pillow_j2k_30(np.ascontiguousarray(img.pixels), img.bits_stored)
    rec["jpeg2000_pillow"] = _psnr_record(img, n, back2)
    rec["margin_db"] = rec["radseal"]["psnr"] - rec["jpeg2000"]["psnr"]
    rec["margin_pillow_db"] = rec["radseal"]["psnr"] - rec["jpeg2000_pillow"]["psnr"]
    rec["fixed_rate_margin_db"] = rec["fixed_rate_rule"]["psnr"] - rec["jpeg2000"]["psnr"]
    return rec, out, back


def _jxl_at_bytes(img, budget_bytes: int, ctl):
    """JPEG XL e7, the highest-rate distance whose stream is at most ``budget_bytes`` (radseal's)."""
    from radseal.baselines import get_baseline

    b = get_baseline("jpegxl")
    data, distance = ctl.encode_at_bpp(lambda d: b.compress(img, d), img.pixels.size, 8 * budget_bytes / img.pixels.size)
    return data, distance, b.decompress(data)


def at30_benchmark(data_dir: str | None, limit: int | None, jsonl: Path, resume: bool = False) -> dict:
    from tqdm import tqdm

    from radseal.codec import Codec
    from radseal.diagnosis.classifier import Classifier
    from radseal.evaluate.ratecontrol import Knob, RateController
    from radseal.io import read_image
    from radseal.io.dataset import list_samples, resolve_data_dir

    codec = Codec.pretrained()
    clf = Classifier.pretrained()
    root = resolve_data_dir(data_dir)
    samples = list_samples(root, "test")
    if limit:
        samples = samples[:limit]
    done = {}
    if jsonl.is_file() and not resume:
        jsonl.unlink()
    if jsonl.is_file():  # resume an interrupted run (same code: records are reused as they are)
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            done[r["image"]] = r
    ctl = RateController(Knob(low=25.0, high=0.1, log=True), max_encodes=8, close_enough=0.97)
    t0 = time.time()
    with jsonl.open("a") as log:
        for s in tqdm(samples, desc="test images", unit="img"):
            name = f"{s.path.parent.name}/{s.path.name}"
            if name in done:
                continue
            img = read_image(s.path)
            img = img.with_pixels(np.ascontiguousarray(img.pixels[4:, 4:]))
            rec, out, j2k = rate_check(codec, img)
            jxl, distance, jout = _jxl_at_bytes(img, rec["radseal"]["bytes"], ctl)
            rec["jpegxl"] = {**_psnr_record(img, len(jxl), jout.pixels), "distance": distance}
            views = np.stack([clf.view(x) for x in (img, out, img.with_pixels(j2k), jout)])
            p = clf.probabilities(views)
            rec.update({"image": name, "label": int(s.label), "bits": img.bits_stored, "height": img.height, "width": img.width,
                        "p": {"original": float(p[0]), "radseal": float(p[1]), "jpeg2000": float(p[2]), "jpegxl": float(p[3])}})
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[name] = rec
    records = [done[f"{s.path.parent.name}/{s.path.name}"] for s in samples]
    return summarize_at30(records, clf.threshold, root, time.time() - t0)


CODECS_AT30 = (("radseal", "radseal default"), ("jpegxl", "JPEG XL e7 at radseal's bytes"), ("jpeg2000", "JPEG 2000 at 30:1"))


def summarize_at30(records: list, threshold: float, root, seconds: float) -> dict:
    from scipy.stats import wilcoxon

    y = np.array([r["label"] for r in records])
    p0 = np.array([r["p"]["original"] for r in records])
    summary = {}
    for key, _ in CODECS_AT30:
        pk = np.array([r["p"][key] for r in records])
        dp = np.abs(pk - p0)
        agree = (pk >= threshold) == (p0 >= threshold)
        summary[key] = {
            "mean_bpp": float(np.mean([r[key]["bpp"] for r in records])),
            "mean_ratio_of_stored": float(np.mean([8 * (1 if r.get("bits", 8) <= 8 else 2) / r[key]["bpp"] for r in records])),
            "mean_psnr": float(np.mean([r[key]["psnr"] for r in records])),
            "agreement": float(agree.mean()),
            "flips": int((~agree).sum()),
            "mean_abs_dp": float(dp.mean()),
            "median_abs_dp": float(np.median(dp)),
            "max_abs_dp": float(dp.max()),
            "accuracy": float(((pk >= threshold) == y).mean()),
        }
    dr = np.abs(np.array([r["p"]["radseal"] for r in records]) - p0)
    dj = np.abs(np.array([r["p"]["jpegxl"] for r in records]) - p0)
    margins = np.array([r["margin_db"] for r in records])
    pil = np.array([r["margin_pillow_db"] for r in records])
    fixed = np.array([r["fixed_rate_margin_db"] for r in records])
    worst = int(np.argmin(margins))
    return {
        "data": os.path.relpath(root, ROOT) if Path(root).is_absolute() else str(root),
        "split": "test",
        "images": len(records),
        "offset": "first 4 rows and columns cut",
        "threshold": threshold,
        "accuracy_original": float(((p0 >= threshold) == y).mean()),
        "codecs": summary,
        "paired_abs_dp_radseal_vs_jpegxl": {
            "radseal_smaller": int((dr < dj).sum()),
            "jpegxl_smaller": int((dj < dr).sum()),
            "ties": int((dr == dj).sum()),
            "wilcoxon_p": float(wilcoxon(dr, dj).pvalue) if np.any(dr != dj) else 1.0,
        },
        "default_rate": {
            "min_margin_db": float(margins.min()),
            "min_margin_image": records[worst]["image"],
            "median_margin_db": float(np.median(margins)),
            "failures": [r["image"] for r in records if r["margin_db"] < 0],
            "min_margin_pillow_db": float(pil.min()),
            "failures_pillow": [r["image"] for r in records if r["margin_pillow_db"] < 0],
            "settings": {k: sum(r["radseal"]["setting"] == k for r in records) for k in sorted({r["radseal"]["setting"] for r in records})},
            "fixed_rate_rule_failures": int((fixed < 0).sum()),
            "fixed_rate_rule_min_margin_db": float(fixed.min()),
            "mean_bpp_jxl_over_radseal": float(np.mean([r["jpegxl"]["bpp"] / r["radseal"]["bpp"] for r in records])),
        },
        "seconds": round(seconds, 1),
    }


def native30_benchmark(native_dir: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from native_depth import images

    from radseal.codec import Codec

    codec = Codec.pretrained()
    rows = []
    t0 = time.time()
    for name, img in images(native_dir):
        print(f"{name}: {img.height}x{img.width}, {img.bits_stored} bits", file=sys.stderr, flush=True)
        rec, _, _ = rate_check(codec, img)
        rows.append({"image": name, "bits": img.bits_stored, "height": img.height, "width": img.width, **rec})
    margins = np.array([r["margin_db"] for r in rows])
    return {
        "native_dir": os.path.relpath(native_dir, ROOT) if native_dir.is_absolute() else str(native_dir),
        "images": len(rows),
        "min_margin_db": float(margins.min()),
        "failures": [r["image"] for r in rows if r["margin_db"] < 0],
        "min_margin_pillow_db": float(min(r["margin_pillow_db"] for r in rows)),
        "fixed_rate_rule_failures": int(sum(r["fixed_rate_margin_db"] < 0 for r in rows)),
        "per_image": rows,
        "seconds": round(time.time() - t0, 1),
    }


def _f(v: float, d: int = 2) -> str:
    return "inf" if v == float("inf") else f"{v:.{d}f}"


def at30_markdown(r: dict, command: str) -> str:
    d = r["default_rate"]
    pd = r["paired_abs_dp_radseal_vs_jpegxl"]
    lines = [
        "# The default rate and diagnostic fidelity at 30:1, every test chest X-ray",
        "",
        f"Command: `{command}`",
        "",
        f"Data: `{r['data']}` split `{r['split']}`, all {r['images']} images, {r['offset']} (no codec lines up with the "
        f"source JPEG's 8x8 grid). 30:1 is of the stored size: bits allocated / 30 = 0.267 bpp for these 8-bit images.",
        "",
        "## Default rate against JPEG 2000 at 30:1 (PSNR)",
        "",
        "radseal's default (`radseal encode` without `--quality`/`--bpp`) against OpenJPEG at 30:1 "
        "(pylibjpeg-openjpeg, 9/7, one layer; the same reference the rule uses) and, as a cross-check, "
        "OpenJPEG at 30:1 through Pillow (its own bundled OpenJPEG, rate set by `quality_mode=rates`).",
        "",
        "| | value |",
        "|---|---|",
        f"| images where radseal's PSNR < JPEG 2000's | {len(d['failures'])} of {r['images']} {d['failures'] or ''} |",
        f"| minimum margin (radseal - JPEG 2000) | {_f(d['min_margin_db'], 3)} dB ({d['min_margin_image']}) |",
        f"| median margin | {_f(d['median_margin_db'], 3)} dB |",
        f"| against Pillow's OpenJPEG at 30:1: failures, minimum margin | {len(d['failures_pillow'])}, {_f(d['min_margin_pillow_db'], 3)} dB |",
        f"| settings chosen (quality q, or native max error k) | {', '.join(f'{k}: {v}' for k, v in d['settings'].items())} |",
        f"| the fixed-rate rule (highest quality within 0.267 bpp): images below JPEG 2000, minimum margin | "
        f"{d['fixed_rate_rule_failures']} of {r['images']}, {_f(d['fixed_rate_rule_min_margin_db'], 3)} dB |",
        "",
        "## Classifier on the reconstructions",
        "",
        f"Agreement: the label on the reconstruction equals the label on the original (threshold {r['threshold']}). "
        f"Δp: change of the pneumonia probability. Accuracy on the originals: {r['accuracy_original']:.3f}. "
        f"JPEG XL e7's distance is searched per image for the largest stream within radseal's bytes "
        f"(mean bpp ratio JPEG XL / radseal {d['mean_bpp_jxl_over_radseal']:.3f}).",
        "",
        "| codec | mean bpp | mean ratio | mean PSNR dB | agree % | flips | mean abs Δp | median abs Δp | max abs Δp | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in CODECS_AT30:
        c = r["codecs"][key]
        lines.append(f"| {label} | {c['mean_bpp']:.3f} | {c['mean_ratio_of_stored']:.1f}:1 | {_f(c['mean_psnr'])} | {100 * c['agreement']:.1f} | "
                     f"{c['flips']} | {c['mean_abs_dp']:.4f} | {c['median_abs_dp']:.4f} | {c['max_abs_dp']:.4f} | {c['accuracy']:.3f} |")
    lines += [
        "",
        f"Per image, abs Δp smaller with radseal: {pd['radseal_smaller']}, with JPEG XL: {pd['jpegxl_smaller']}, "
        f"equal: {pd['ties']} (Wilcoxon signed-rank p = {pd['wilcoxon_p']:.3g}).",
        "",
        f"Per-image records: [at30.jsonl](at30.jsonl). Run time {r['seconds']:.0f} s (resumed runs count only the last part).",
        "",
    ]
    return "\n".join(lines)


def native30_markdown(r: dict, command: str) -> str:
    lines = [
        "# The default rate against JPEG 2000 at 30:1 on native-depth radiographs",
        "",
        f"Command: `{command}`",
        "",
        f"Right halves of RG1, RG3 (pydicom-data) and of `{r['native_dir']}` at their stored depth; 30:1 of the "
        "stored size = 16/30 = 0.533 bpp (9- to 16-bit pixels are stored in 16 bits). The learned models never saw a right half.",
        "",
        f"Images where radseal's default has a lower PSNR than OpenJPEG at 30:1: {len(r['failures'])} of {r['images']} "
        f"{r['failures'] or ''}; minimum margin {_f(r['min_margin_db'], 3)} dB (Pillow's OpenJPEG: {_f(r['min_margin_pillow_db'], 3)} dB). "
        f"The fixed-rate rule (highest quality within 0.533 bpp) falls below JPEG 2000 on {r['fixed_rate_rule_failures']}.",
        "",
        "| image | bits | radseal setting | radseal bpp | radseal PSNR | J2K bpp | J2K PSNR | margin dB | Pillow J2K PSNR | fixed-rate bpp | fixed-rate PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["per_image"]:
        lines.append(
            f"| {x['image']} | {x['bits']} | {x['radseal']['setting']} | {x['radseal']['bpp']:.3f} | {_f(x['radseal']['psnr'])} | "
            f"{x['jpeg2000']['bpp']:.3f} | {_f(x['jpeg2000']['psnr'])} | {_f(x['margin_db'])} | {_f(x['jpeg2000_pillow']['psnr'])} | "
            f"{x['fixed_rate_rule']['bpp']:.3f} | {_f(x['fixed_rate_rule']['psnr'])} |")
    lines += ["", "PSNR against 2^bits - 1. Setting: qN lossy quality, kN native-depth coder with max error N.", "",
              f"Run time {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["classifier", "evaluate", "at30", "native30"])
    ap.add_argument("--data")
    ap.add_argument("--native", default=str(ROOT.parent / "shared" / "data" / "native"),
                    help="native-depth DICOM folder for native30 (default: ../shared/data/native)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--resume", action="store_true", help="at30: keep the records of an interrupted run in at30.jsonl")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="extra arguments for radseal evaluate (after --)")
    invoked = list(argv if argv is not None else sys.argv[1:])
    if invoked[:1] in (["at30"], ["native30"]):  # no pass-through arguments: options may follow the step
        ap._actions = [a for a in ap._actions if a.dest != "rest"]
        ap._positionals._group_actions = [a for a in ap._positionals._group_actions if a.dest != "rest"]
    args = ap.parse_args(argv)
    from radseal.io.files import atomic_write

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "classifier":
        r = classifier_benchmark(args.data)
        atomic_write(out / "classifier.json", (json.dumps(r, indent=1) + "\n").encode(), mode=0o644)
        atomic_write(out / "classifier.md", classifier_markdown(r).encode(), mode=0o644)
        print(classifier_markdown(r))
        return 0
    command = "python benchmarks/diagnostic_fidelity.py " + " ".join(shlex.quote(a) for a in invoked)
    if args.step == "at30":
        jsonl = out / "at30.jsonl"
        r = at30_benchmark(args.data, args.limit, jsonl, resume=args.resume)
        r["command"] = command
        atomic_write(out / "at30.json", (json.dumps(r, indent=1) + "\n").encode(), mode=0o644)
        atomic_write(out / "at30.md", at30_markdown(r, command).encode(), mode=0o644)
        print(at30_markdown(r, command))
        return 0
    if args.step == "native30":
        r = native30_benchmark(Path(args.native))
        r["command"] = command
        atomic_write(out / "at30_native.json", (json.dumps(r, indent=1) + "\n").encode(), mode=0o644)
        atomic_write(out / "at30_native.md", native30_markdown(r, command).encode(), mode=0o644)
        print(native30_markdown(r, command))
        return 0
    from radseal.cli import main as radseal_main

    cmd = ["evaluate", "--out", os.path.relpath(out)]
    if args.data:
        cmd += ["--data", args.data]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    cmd += [a for a in args.rest if a != "--"]
    sys.argv = ["radseal", *cmd]
    rc = radseal_main(cmd)
    if rc == 0:
        report = (out / "report.md").read_text()
        head = f"Made by `python benchmarks/diagnostic_fidelity.py {' '.join(shlex.quote(a) for a in invoked)}`, which runs the command below.\n\n"
        extra = "\nFull report: [report.html](report.html) (self-contained). Per-image measurements: [records.jsonl](records.jsonl).\n"
        if (out / "classifier.md").is_file():
            extra += "The classifier's own test score and leak probes: [classifier.md](classifier.md).\n"
        atomic_write(out / "README.md", (report.replace("\n\n", "\n\n" + head, 1) + extra).encode(), mode=0o644)
    return rc


if __name__ == "__main__":
    sys.exit(main())
