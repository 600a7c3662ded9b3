"""``radseal paper roundtrip|sweep``: the 2022 paper's system, reproduced (insecure)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radseal.cli.demo import PAPER_OUTPUTS
from radseal.errors import RadsealError
from radseal.io.files import check_outputs

#: What ``paper sweep`` writes into OUT (radseal.paper.sweep, stem "paper_sweep").
SWEEP_OUTPUTS = tuple(f"paper_sweep{s}" for s in (
    ".json", ".md", "_loss.png", "_roc.png", "_confusion.png", "_confusion_reference.png", "_fig5.png"))


class InsecureCipherRefused(RadsealError):
    """The paper's cipher was asked for without --insecure-paper-cipher."""


def register(sub) -> None:
    paper = sub.add_parser(
        "paper",
        help="reproduce the 2022 paper's autoencoder + square-add cipher (insecure baseline)",
        description=(
            "The system of El-kafrawy et al., CMES 2022 (doi 10.32604/cmes.2022.021713), reproduced as a "
            "baseline: a convolutional autoencoder whose latent is 'encrypted' as E = Z^2 + K^2. "
            "That cipher is broken (see docs/paper.md); use radseal encode/decode for real protection."
        ),
        epilog=(
            "examples:\n"
            "  radseal paper roundtrip chest.dcm --key-image other.jpeg --insecure-paper-cipher --out rt\n"
            "  radseal paper sweep --smoke --out /tmp/sweep\n"
            "  radseal paper sweep --data ../shared/data/cxr --out docs/results\n"
            "  radseal paper roundtrip --help      # each subcommand has its own options"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    psub = paper.add_subparsers(dest="paper_command", metavar="PAPER_COMMAND")
    psub.required = True

    r = psub.add_parser(
        "roundtrip",
        help="encode, 'encrypt', decrypt and decode one image; print sizes and errors",
        description=(
            "Run one image through the paper's pipeline with a key image: encoder -> E = Z^2 + K^2 -> "
            "Z = sqrt(E - K^2) -> decoder (--cipher squares, the paper's algorithm box; the default), or "
            "E = (Z + K)^2 -> Z = sqrt(E) - K (--cipher square-of-sum, the paper's prose). Prints the size of the encrypted latent as it would be sent "
            "(float32 values) against the input file, its pixels and the 200x200 8-bit network input, "
            "the expansion factor, MSE/MAE/PSNR (pixel values in [0, 1]) and timings, and writes "
            "original.png, retrieved.png, encrypted_latent.npy and fig5.png to OUT. Refuses to run "
            "without --insecure-paper-cipher."
        ),
        epilog=(
            "examples:\n"
            "  radseal paper roundtrip chest.dcm --key-image other.jpeg --insecure-paper-cipher\n"
            "  radseal paper roundtrip x.png --key-image k.png --insecure-paper-cipher --out rt --weights my.pt\n"
            "  radseal paper roundtrip x.png --key-image k.png --insecure-paper-cipher --cipher square-of-sum"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("image", help="image to send (DICOM, PNG, JPEG or TIFF)")
    r.add_argument("--key-image", required=True, help="the second image whose encoding is the key K")
    r.add_argument("--insecure-paper-cipher", action="store_true", help="acknowledge that the paper's cipher is insecure and run it")
    r.add_argument(
        "--cipher",
        choices=("squares", "square-of-sum"),
        default="squares",
        help="which reading of the paper's cipher: squares, E = Z^2 + K^2 (default), or square-of-sum, E = (Z + K)^2",
    )
    r.add_argument("--weights", default=None, help="paper autoencoder weights (default: the shipped 3-layer ReLU model)")
    r.add_argument("--out", default="radseal-paper-roundtrip", help="output folder (default: ./radseal-paper-roundtrip)")
    r.add_argument("--force", action="store_true", help="replace the outputs of an earlier run in OUT")
    r.set_defaults(func=run_roundtrip_cmd)

    s = psub.add_parser(
        "sweep",
        help="the paper's 16-permutation hyper-parameter sweep with classifier metrics",
        description=(
            "Train the paper autoencoder for 16 permutations of (loss, optimizer, depth, activation), "
            "including every combination the paper names, then the paper classifier on each model's "
            "reconstructions (and on the originals as reference). Writes OUT/paper_sweep.json, .md and "
            "PNG figures (loss curves, ROC, confusion matrices, Fig. 5-like). --protocol full is the "
            "paper's 50 epochs on all data (needs an accelerator or hours); the default 'reduced' "
            "protocol fits in about 35 minutes on two CPU cores; --smoke runs two permutations for a "
            "few seconds. --protocol paper-epochs trains instead the paper's three detailed cases to 10, 25 and "
            "50 epochs on 60 of the train/ images (64 others for the classifier), saving its state after every epoch: run again with the same "
            "OUT, it continues where it stopped (see docs/paper.md)."
        ),
        epilog=(
            "examples:\n"
            "  radseal paper sweep --out docs/results\n"
            "  radseal paper sweep --protocol full --data ../shared/data/cxr --out runs/sweep-full\n"
            "  radseal paper sweep --smoke --out /tmp/sweep\n"
            "  nice -n 19 radseal paper sweep --protocol paper-epochs --threads 1 --out runs/paper-epochs"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--data", default=None, help="data folder with train/ and test/ (default: ../shared/data/cxr)")
    s.add_argument("--out", default="radseal-paper-sweep", help="output folder (default: ./radseal-paper-sweep)")
    s.add_argument(
        "--protocol",
        choices=("reduced", "full", "paper-epochs"),
        default="reduced",
        help="reduced (default), the paper's full protocol, or paper-epochs (the three detailed cases at 10/25/50 epochs, resumable)",
    )
    s.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs (checkpoints at 1/5, 1/2 and all of them)")
    s.add_argument("--smoke", action="store_true", help="two permutations, one epoch, a few images (for CI); with --protocol paper-epochs: the three cases to 1 and 2 epochs")
    s.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--force", action="store_true", help="replace the paper_sweep.* files of an earlier sweep in OUT")
    s.set_defaults(func=run_sweep_cmd)


def _fmt_bytes(n: int) -> str:
    return f"{n:,} bytes"


def run_roundtrip_cmd(args) -> int:
    from radseal.paper.insecure_cipher import FORMULAS

    if not args.insecure_paper_cipher:
        raise InsecureCipherRefused(
            f"the paper's cipher ({FORMULAS[args.cipher]}) is insecure; pass --insecure-paper-cipher to run it for reproduction only"
        )
    from radseal.io import read_image
    from radseal.paper.autoencoder import load_autoencoder, shipped_weights_path
    from radseal.paper.insecure_cipher import DECRYPTIONS, warning
    from radseal.paper.roundtrip import run_roundtrip, save_outputs

    image_path, key_path = Path(args.image), Path(args.key_image)
    check_outputs(args.out, PAPER_OUTPUTS, inputs=[image_path, key_path, args.weights], force=args.force)
    img, key = read_image(image_path), read_image(key_path)
    weights = Path(args.weights) if args.weights else shipped_weights_path()
    model, _ = load_autoencoder(weights)
    print(warning(args.cipher), file=sys.stderr)  # after the inputs load, so a bad input stays a one-line error
    result = run_roundtrip(model, img, key, args.cipher)
    paths = save_outputs(result, args.out, f"{image_path.name} (key: {key_path.name})")
    m = result.metrics()
    c, h, w = result.encrypted_latent.shape
    sent, file_bytes, net_in = result.sent_bytes, image_path.stat().st_size, result.network_input_bytes
    print("radseal paper roundtrip (the paper's INSECURE cipher)")
    print(f"  image             {image_path}  {img.width}x{img.height}, {img.bits_stored} bits stored")
    print(f"  key image         {key_path}")
    print(f"  cipher            {args.cipher}: {FORMULAS[args.cipher]}, decrypted as {DECRYPTIONS[args.cipher]}")
    print(f"  weights           {weights} ({model.config.depth}-layer, {model.config.activation})")
    print(f"  input file        {_fmt_bytes(file_bytes)}")
    print(f"  input pixels      {_fmt_bytes(img.raw_bytes)} ({img.width}x{img.height} at {img.pixels.itemsize} byte(s) per pixel)")
    print(f"  network input     {_fmt_bytes(net_in)} (200x200 at 8 bits)")
    print(f"  sent (E)          {_fmt_bytes(sent)} ({c}x{h}x{w} = {c * h * w:,} float32 values)")
    print(f"  expansion         {sent / net_in:.1f}x the 200x200 8-bit input; {sent / file_bytes:.2f}x the input file; {sent / img.raw_bytes:.2f}x the input pixels")
    print(f"  MSE / MAE         {m['mse']:.5f} / {m['mae']:.5f} (pixel values in [0, 1], at 200x200)")
    print(f"  PSNR              {m['psnr_db']:.2f} dB (peak 1)")
    if result.latent_sign_lost:
        where = "Z < 0" if args.cipher == "squares" else "Z + K < 0"
        print(f"  note              sign lost on {100 * result.sign_lost_fraction:.1f} % of the latent ({where}): the square root cannot restore it")
    t = result.seconds
    print(f"  time              encode+encrypt {t['encode_encrypt'] * 1000:.0f} ms, decrypt+decode {t['decrypt_decode'] * 1000:.0f} ms, resize {t['preprocess'] * 1000:.0f} ms")
    print(f"  wrote             {', '.join(str(p) for p in paths.values())}")
    return 0


def _checkpoints(epochs: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(epochs / 5)), max(1, round(epochs / 2)), epochs}))


def run_sweep_cmd(args) -> int:
    from dataclasses import replace

    from radseal.extras import require

    torch = require("torch", "paper", "radseal paper sweep")

    from radseal.io.dataset import resolve_data_dir
    from radseal.paper.data import data_label
    from radseal.paper.sweep import PROTOCOLS

    torch.set_num_threads(max(1, args.threads))
    if args.protocol == "paper-epochs":
        return _run_paper_epochs(args)
    protocol = PROTOCOLS["smoke" if args.smoke else args.protocol]
    if args.epochs is not None:
        if args.epochs < 1:
            raise RadsealError("--epochs must be at least 1")
        protocol = replace(protocol, epochs=args.epochs, checkpoints=_checkpoints(args.epochs))
    data = resolve_data_dir(args.data)
    check_outputs(args.out, SWEEP_OUTPUTS, force=args.force)
    from radseal.paper.sweep import run_sweep

    command = "radseal paper sweep " + _args_text(args)  # rebuilt from the parsed options: exact and reproducible
    result = run_sweep(data, args.out, protocol, command=command, progress=not args.no_progress, data_label=data_label(args.data))
    print(f"paper sweep ({protocol.name}): {len(result['runs'])} permutations in {result['seconds_total'] / 60:.1f} min")
    print(f"  wrote {Path(args.out) / 'paper_sweep.md'} (+ .json and paper_sweep_*.png)")
    for r in result["runs"]:
        last = r["history"][-1]
        print(f"  {r['name']:<28} val MSE {last.get('val_mse', float('nan')):.4f}  test acc {r['classifier']['test']['accuracy']:.3f}  AUC {r['classifier']['test']['auc'] or float('nan'):.3f}")
    return 0


def _run_paper_epochs(args) -> int:
    from radseal.io.dataset import resolve_data_dir
    from radseal.paper.data import data_label
    from radseal.paper.paper_epochs import PAPER_EPOCHS, PAPER_EPOCHS_SMOKE, run_paper_epochs

    if args.epochs is not None:
        raise RadsealError("--epochs does not apply to --protocol paper-epochs (its epochs are the paper's 10, 25 and 50)")
    data = resolve_data_dir(args.data)
    command = "radseal paper sweep " + _args_text(args)
    protocol = PAPER_EPOCHS_SMOKE if args.smoke else PAPER_EPOCHS
    s = run_paper_epochs(data, args.out, protocol, command=command, data_label=data_label(args.data), progress=not args.no_progress)
    print(f"paper epochs: {s['epochs_done']} of {s['epochs_planned']} epochs done; complete: {s['complete']}")
    print(f"  wrote {Path(args.out) / 'paper_epochs.md'} (+ .json, progress.jsonl, state/)")
    return 0


def _args_text(args) -> str:
    parts = []
    for flag in ("data", "out", "protocol", "epochs", "threads"):
        v = getattr(args, flag)
        if v is not None:
            parts.append(f"--{flag} {v}")
    if args.smoke:
        parts.append("--smoke")
    return " ".join(parts)
