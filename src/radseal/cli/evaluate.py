"""``radseal evaluate`` and ``radseal train-classifier``: diagnostic fidelity."""

from __future__ import annotations

import argparse
import shlex
import sys

TRAIN_EXAMPLES = """examples:
  radseal train-classifier                       # ../shared/data/cxr/train -> shipped weights
  radseal train-classifier --data DIR --out /tmp/clf --epochs 10
"""


def register(sub) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train the pneumonia classifier whose weights radseal ships",
        description=(
            "Train the normal-vs-pneumonia CNN on DATA/train (a seeded, stratified fifth is "
            "held out to choose the epoch; the test split is never read). Writes "
            "pneumonia_cnn.pt and training.json (command, data, epochs, time, held-out scores)."
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
    p.set_defaults(func=_train_classifier)


def _train_classifier(args) -> int:
    from radseal.diagnosis.train import TrainConfig, train_classifier
    from radseal.errors import RadsealError

    if args.epochs < 1 or args.size < 32:
        raise RadsealError("--epochs must be >= 1 and --size >= 32")
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
