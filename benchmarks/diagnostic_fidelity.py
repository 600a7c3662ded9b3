"""Diagnostic fidelity benchmark: the shipped classifier on the test split, and ``radseal evaluate``.

    python benchmarks/diagnostic_fidelity.py classifier [--data DIR]
        -> docs/results/evaluate/classifier.json + classifier.md
           (accuracy and AUC with bootstrap CIs; leak probes)
    python benchmarks/diagnostic_fidelity.py evaluate [--limit N] [-- extra radseal evaluate args]
        -> docs/results/evaluate/ (report.html, report.md, results.json, PNGs) + README.md

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["classifier", "evaluate"])
    ap.add_argument("--data")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="extra arguments for radseal evaluate (after --)")
    invoked = list(argv if argv is not None else sys.argv[1:])
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
