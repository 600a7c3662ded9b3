"""``radseal train-codec`` / ``export-codec`` (the neural hyperprior) and ``fit-codec`` (the default wavelet codec)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from radseal.io.files import check_output


def register(sub) -> None:
    p = sub.add_parser(
        "train-codec",
        help="train the neural hyperprior codec, rsc1 (resumable; data-parallel under torchrun)",
        description=(
            "Train the variable-rate neural hyperprior codec (rsc1; the default codec is fitted with fit-codec instead) on random crops of DATA/train plus the left halves "
            "of the pydicom-data radiographs RG1 and RG3. Checkpoints (with optimizer state) go to "
            "OUT/last.pt every few minutes and a JSON line per --log-every steps to OUT/train.log; "
            "--resume continues from OUT/last.pt. Under torchrun each process trains on its own crops "
            "and gradients are averaged (gloo on CPU, nccl on GPU)."
        ),
        epilog=(
            "examples:\n"
            "  radseal train-codec --data ../shared/data/cxr --out runs/codec --steps 50000\n"
            "  radseal train-codec --out runs/codec --resume --steps 80000\n"
            "  torchrun --nproc_per_node 4 -m radseal train-codec --out runs/codec --steps 50000\n"
            "  radseal export-codec runs/codec/last.pt --out src/radseal/weights/codec"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="folder with train/{NORMAL,PNEUMONIA} images (default: ../shared/data/cxr)")
    p.add_argument("--out", default="runs/codec", help="checkpoint and log folder (default: runs/codec)")
    p.add_argument("--steps", type=int, default=100_000, help="total optimizer steps to reach (default: 100000)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (architecture from the checkpoint)")
    p.add_argument("--batch", type=int, default=8, help="crops per step and process (default: 8)")
    p.add_argument("--crop", type=int, default=128, help="crop side in pixels, a multiple of 64 (default: 128)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: 2e-4)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per process (default: 2)")
    p.add_argument("--checkpoint-every", type=float, default=180.0, help="seconds between checkpoints (default: 180)")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines (default: 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true", help="train on small generated images (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="start afresh over an existing OUT/last.pt (it is replaced)")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "export-codec",
        help="turn a training checkpoint into shipped codec weights",
        description=(
            "Build the integer probability tables and the integer hyper-synthesis from a training "
            "checkpoint and write weights + a JSON record (steps, time, data, command) to OUT."
        ),
        epilog="example:\n  radseal export-codec runs/codec/last.pt --out src/radseal/weights/codec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("checkpoint", help="training checkpoint (OUT/last.pt of train-codec)")
    e.add_argument("--out", default=None, help="weights folder (default: the package's shipped weights folder)")
    e.add_argument("--model-id", default=None, help="model id to record (default: the registry's current id)")
    e.add_argument("--force", action="store_true", help="replace an existing model of that id in OUT")
    e.set_defaults(func=run_export)

    f = sub.add_parser(
        "fit-codec",
        help="learn the default (wavelet) codec's context model, tables and reconstruction points",
        description=(
            "Fit the wavelet codec rsc2 (CDF 9/7 wavelet + learned integer context model; the default rsc3 codes its quantized coefficients with its own adaptive model and takes rsc2's weights) on chest X-rays "
            "from DATA/train plus the left halves of the pydicom-data radiographs RG1 and RG3: contexts are "
            "sampled from every band at several quality levels, the context model is fitted by maximum "
            "likelihood, then the tables and reconstruction points are measured. The weights, a JSON record "
            "(command, data, samples, time) and the registry entry go to OUT. "
            "Takes about 8 minutes for 60 images on 2 CPU cores."
        ),
        epilog=(
            "examples:\n"
            "  radseal fit-codec --data ../shared/data/cxr\n"
            "  radseal fit-codec --images 20 --iterations 100 --out /tmp/weights   # quick experiment"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--data", help="folder with train/{NORMAL,PNEUMONIA} images (default: ../shared/data/cxr)")
    f.add_argument("--out", default=None, help="weights folder (default: the package's shipped weights folder)")
    f.add_argument("--model-id", default=None, help="model id to register (default: the current recipe's id)")
    f.add_argument("--images", type=int, default=60, help="training chest X-rays to sample (default: 60)")
    f.add_argument("--qualities-per-image", type=int, default=6, help="quality levels sampled per image (default: 6)")
    f.add_argument("--per-unit", type=int, default=600, help="coefficients sampled per band phase (default: 600)")
    f.add_argument("--iterations", type=int, default=250, help="optimizer iterations of the context model (default: 250)")
    f.add_argument("--rounding", type=float, default=0.4,
                   help="dead-zone quantizer rounding offset: q = floor(|c|/step + R); 0.5 is plain rounding (default: 0.4)")
    f.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--force", action="store_true", help="replace an existing model of that id in OUT")
    f.add_argument("--native", action="store_true",
                   help="instead, learn the lossless / max-error coder's initial probabilities (DATA/train, plus the left "
                        "halves of RG1, RG3 and of the radiographs in --native-data; --images defaults to 20)")
    f.add_argument("--native-data", default=None, help="native-depth radiographs for --native (default: DATA/../native)")
    f.set_defaults(func=run_fit)


def _check_model_files(folder: Path, model_id: str, inputs: list, force: bool) -> None:
    """A model's files (<id>.npz, <id>.json) are replaced only with --force; the registry is updated in place."""
    from radseal.io.files import check_outputs

    check_outputs(folder, [f"{model_id}.npz", f"{model_id}.json"], inputs=inputs, force=force,
                  hint="pass --model-id NEW_ID, --out another folder, or --force to replace that model")


def run_train(args) -> int:
    from radseal.codec.errors import CodecError
    from radseal.codec.train import TrainConfig, train

    if args.crop < 64 or args.crop % 64:
        raise CodecError(f"--crop must be a positive multiple of 64, got {args.crop}")
    for name in ("steps", "batch", "threads", "log_every"):
        if getattr(args, name) < 1:
            raise CodecError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("lr", "checkpoint_every"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise CodecError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if not args.resume:
        check_output(Path(args.out) / "last.pt", force=args.force,
                     hint="pass --resume to continue that training, or --force to start afresh and replace it")
    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        steps=args.steps,
        batch=args.batch,
        crop=args.crop,
        lr=args.lr,
        threads=args.threads,
        seed=args.seed,
        checkpoint_every_s=args.checkpoint_every,
        log_every=args.log_every,
        synthetic=args.synthetic,
    )
    path = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"checkpoint: {path}")
    return 0


def run_export(args) -> int:
    from radseal.codec.export import CURRENT_MODEL_ID, export_checkpoint
    from radseal.codec.weights import weights_dir

    _check_model_files(Path(args.out) if args.out else weights_dir(), args.model_id or CURRENT_MODEL_ID,
                       [args.checkpoint], args.force)
    info = export_checkpoint(args.checkpoint, out_dir=args.out, model_id=args.model_id)
    print(json.dumps(info, indent=2))
    return 0


def run_fit(args) -> int:
    if args.native:
        from radseal.codec.native_fit import MODEL_ID as NATIVE_MODEL_ID, fit_native
        from radseal.codec.weights import weights_dir

        _check_model_files(Path(args.out) if args.out else weights_dir(), args.model_id or NATIVE_MODEL_ID, [], args.force)
        record = fit_native(data=args.data, native_dir=args.native_data, out_dir=args.out,
                            images=20 if args.images == 60 else args.images, seed=args.seed,
                            progress=not args.no_progress, **({"model_id": args.model_id} if args.model_id else {}))
        print(json.dumps(record, indent=2))
        return 0
    from radseal.codec.subband_fit import CURRENT_MODEL_ID, train_subband
    from radseal.codec.weights import weights_dir

    _check_model_files(Path(args.out) if args.out else weights_dir(), args.model_id or CURRENT_MODEL_ID, [], args.force)
    record = train_subband(
        data=args.data,
        out_dir=args.out,
        model_id=args.model_id or CURRENT_MODEL_ID,
        images=args.images,
        qualities_per_image=args.qualities_per_image,
        per_unit=args.per_unit,
        iterations=args.iterations,
        seed=args.seed,
        threads=args.threads,
        rounding=args.rounding,
        progress=not args.no_progress,
    )
    print(json.dumps(record, indent=2))
    return 0
