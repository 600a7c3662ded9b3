"""``radseal evaluate`` and ``radseal train-classifier``: diagnostic fidelity."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

EVALUATE_EXAMPLES = """examples:
  radseal evaluate --out /tmp/eval                          # every codec on ../shared/data/cxr/test
  radseal evaluate --data DIR --out /tmp/eval --limit 20 --codecs radseal,jpeg2000
  radseal evaluate --out /tmp/eval --codecs radseal --qualities 2,6,10,14 --bpp 0.1,0.267,0.5

Images are compressed at native resolution; the classifier sees its fixed-size
view of each reconstruction. A run resumes from OUT/records.jsonl unless --fresh,
and rewrites the report files in OUT; an OUT holding other files needs --force.
"""

TRAIN_EXAMPLES = """examples:
  radseal train-classifier                       # ../shared/data/cxr/train -> shipped weights
  radseal train-classifier --data DIR --out /tmp/clf --epochs 10
"""


def register(sub) -> None:
    e = sub.add_parser(
        "evaluate",
        help="measure rate, distortion and diagnostic fidelity of every codec; write an HTML report",
        description=(
            "Compress each image with radseal's codec at each quality level, each baseline codec at a "
            "ladder of matched bit rates, and the paper's autoencoder; measure bpp, compression ratio, "
            "PSNR, MS-SSIM, and whether the shipped pneumonia classifier still says the same thing "
            "(label agreement, probability change, accuracy and AUC against the originals). Writes "
            "report.html (self-contained), report.md, results.json, records.jsonl and PNG plots to OUT."
        ),
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--data", help="data folder: {train,test}/{NORMAL,PNEUMONIA}/ or a flat folder of images (default ../shared/data/cxr)")
    e.add_argument("--out", required=True, help="output folder for the report")
    e.add_argument("--split", default="test", help="split to evaluate when the folder has splits (default test); 'all' for a flat folder")
    e.add_argument("--limit", type=int, help="evaluate only N images (classes alternated so the subset stays balanced)")
    e.add_argument("--codecs", help="comma-separated: radseal, paper and baseline names (default: all available)")
    e.add_argument("--qualities", help="radseal codec quality levels, comma-separated (default: 5 spread over 1..16, the 8-bit range)")
    e.add_argument("--bpp", help="bit-rate ladder for the baselines, comma-separated (default 0.05,0.133,0.267,0.533: 160:1 to 15:1 at 8 bits)")
    e.add_argument("--samples", type=int, default=2, help="images shown in the sample panels (default 2)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for confidence intervals (default 1000)")
    e.add_argument("--fresh", action="store_true", help="ignore OUT/records.jsonl from an earlier run")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--force", action="store_true",
                   help="write into an OUT that holds files other than an earlier evaluation's (they may be replaced)")
    e.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "train-classifier",
        help="train the pneumonia classifier whose weights radseal ships",
        description=(
            "Train the normal-vs-pneumonia CNN on DATA/train (a seeded, stratified fifth is "
            "held out to choose the epoch; the test split is never read). Writes "
            "pneumonia_cnn.npz and training.json (command, data, epochs, time, held-out scores)."
        ),
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="data folder with train/{NORMAL,PNEUMONIA} (default ../shared/data/cxr)")
    p.add_argument("--out", help="folder for the weights (default: the package's weights/classifier)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    p.add_argument("--size", type=int, default=224, help="input view size in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="random seed for split, init and augmentation (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace existing weights in OUT (the shipped ones by default)")
    p.set_defaults(func=_train_classifier)


def _csv(text: str | None, kind, what: str) -> list | None:
    from radseal.evaluate.codecs import EvaluationError

    if not text:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EvaluationError(f"{what}: expected comma-separated {kind.__name__} values, got {text!r}") from None


def _evaluate(args) -> int:
    from radseal.extras import require

    # Say up front, in one line, what the core install lacks (not after minutes of work).
    for module in ("scipy", "sklearn", "matplotlib", "imagecodecs", "torch"):
        if module != "torch" or args.codecs is None or "paper" in args.codecs.split(","):
            require(module, "evaluate", "radseal evaluate")

    from radseal.evaluate.codecs import DEFAULT_BPP_LADDER, EvaluationError, build_codecs
    from radseal.evaluate.report import evaluate
    from radseal.evaluate.runner import EvalConfig

    ladder = _csv(args.bpp, float, "--bpp") or list(DEFAULT_BPP_LADDER)
    if not all(math.isfinite(b) and b > 0 for b in ladder):
        raise EvaluationError("--bpp values must be positive numbers")
    if args.bootstrap < 10:
        raise EvaluationError("--bootstrap must be at least 10")
    if args.samples < 0:
        raise EvaluationError("--samples must be 0 or more")
    names = _csv(args.codecs, str, "--codecs")
    if args.codecs is not None and not names:
        raise EvaluationError("--codecs: no codec named (omit the option to evaluate every codec)")
    _check_evaluate_out(args)
    codecs = build_codecs(names, _csv(args.qualities, int, "--qualities"), ladder)
    command = " ".join(shlex.quote(a) for a in ["radseal", *sys.argv[1:]])
    config = EvalConfig(
        data=args.data, out=args.out, split=None if args.split == "all" else args.split, limit=args.limit,
        samples=args.samples, fresh=args.fresh, progress=not args.quiet, command=command,
    )
    results = evaluate(config, codecs, n_boot=args.bootstrap)
    s = results["summary"]
    print(f"report: {args.out}/report.html ({s['images']} images, {len(s['codecs'])} codecs)")
    if s["original"]:
        o = s["original"]
        print(f"originals: accuracy {o['accuracy']:.3f}, AUC {o['auc']:.3f}")
    for c in s["codecs"]:
        t = c["at_target"]
        if t:
            auc = "" if t.get("auc_delta") is None else f", AUC change {t['auc_delta']:+.3f}"
            print(f"{c['name']:>10} near {s['target_ratio']:.0f}:1: {t['setting']} {t['bpp']:.3f} bpp, "
                  f"agreement {100 * t['agreement']:.1f}%{auc}, {'meets' if t['meets_targets'] else 'misses'} targets")
    return 0


def _check_evaluate_out(args) -> None:
    """OUT is evaluate's own folder: new, empty, or an earlier evaluation (records.jsonl), which it
    resumes and whose report it rewrites. Anything else needs --force; the data folder never."""
    from radseal.evaluate.codecs import EvaluationError
    from radseal.evaluate.runner import RECORDS
    from radseal.io.dataset import CLASSES, SPLITS, resolve_data_dir

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"{out}: --out must be a folder")
    data = resolve_data_dir(args.data)
    image_folders = {data.resolve()} | {(data / s / c).resolve() for s in SPLITS for c in CLASSES}
    if out.resolve() in image_folders:
        raise EvaluationError(f"{out}: is a folder of the images to evaluate; choose another --out")
    if out.is_dir() and not args.force and not (out / RECORDS).is_file() and any(out.iterdir()):
        raise EvaluationError(
            f"{out}: already holds files and no earlier evaluation ({RECORDS}); pass --out a new or empty folder, "
            "or --force to write there"
        )


def _train_classifier(args) -> int:
    from radseal.diagnosis.train import TrainConfig, train_classifier
    from radseal.errors import RadsealError

    if args.epochs < 1 or args.size < 64:
        raise RadsealError("--epochs must be >= 1 and --size >= 64 (the network pools by 64)")
    if args.threads < 1:
        raise RadsealError(f"--threads must be at least 1, got {args.threads}")
    from radseal.diagnosis.classifier import WEIGHTS_DIR, WEIGHTS_FILE
    from radseal.io.files import check_outputs

    check_outputs(Path(args.out) if args.out else WEIGHTS_DIR, [WEIGHTS_FILE, "training.json"], force=args.force,
                  hint="pass --out another folder, or --force to replace them")
    cfg = TrainConfig(epochs=args.epochs, size=args.size, seed=args.seed, threads=args.threads)
    command = " ".join(shlex.quote(a) for a in ["radseal", *sys.argv[1:]])
    result = train_classifier(args.data, args.out, cfg, progress=not args.quiet, command=command)
    info = result.info
    best = info["heldout_at_selected_epoch"]
    print(f"weights: {result.weights_path} ({info['weights_bytes']} bytes)")
    print(
        f"trained on {info['train_images']} images, selected epoch {info['selected_epoch']}/{cfg.epochs} "
        f"on {info['heldout_images']} held-out train images: AUC {best['val_auc']:.3f}, "
        f"accuracy {best['val_accuracy']:.3f} ({info['seconds']:.0f} s)"
    )
    return 0
