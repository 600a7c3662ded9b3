"""The paper's hyper-parameter sweep: 16 permutations of (loss, optimizer, depth, activation).

The 16 are a full factorial of the four (loss, optimizer) pairs the paper
names x depth {2, 3} x activation {ReLU, tanh}; this contains every
combination the paper reports (``paper_named``). For each: autoencoder loss,
MSE and MAE per epoch on train and on validation (a held-out part of
``train/``), time per epoch, and the paper classifier trained on the
autoencoder's reconstructions of training images and scored on its
reconstructions of ``test/``. A reference classifier is trained on the
original images. Results: JSON, Markdown and PNG figures.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from radseal.diagnosis.plots import plot_confusion, plot_roc
from radseal.io.dataset import CLASSES
from radseal.io.files import atomic_write
from radseal.paper.autoencoder import AutoencoderConfig, PaperAutoencoder
from radseal.paper.classifier import fit_and_score
from radseal.paper.data import holdout_split, load_split, stratified_subset
from radseal.paper.plots import plot_confusion_grid, plot_fig5, plot_loss_grid
from radseal.paper.roundtrip import reconstruct_through_cipher, roundtrip_arrays
from radseal.paper.training import reconstruct, train_autoencoder

PAPER_NAMED = {
    ("msle", "adagrad", 2, "relu"),
    ("mse", "rmsprop", 3, "relu"),
    ("hinge", "rmsprop", 3, "relu"),
    ("msle", "adam", 2, "relu"),
    ("msle", "adam", 3, "relu"),
}
LOSS_OPTIMIZER_PAIRS = (("msle", "adagrad"), ("msle", "adam"), ("mse", "rmsprop"), ("hinge", "rmsprop"))


@dataclass(frozen=True)
class Permutation:
    loss: str
    optimizer: str
    depth: int
    activation: str

    @property
    def name(self) -> str:
        return f"{self.loss.upper()}+{self.optimizer}+{self.depth}L+{self.activation}"

    @property
    def paper_named(self) -> bool:
        return (self.loss, self.optimizer, self.depth, self.activation) in PAPER_NAMED


def permutations() -> list[Permutation]:
    """The 16, paper-named ones first (the smoke sweep takes the first two)."""
    every = [Permutation(l, o, d, a) for l, o in LOSS_OPTIMIZER_PAIRS for d in (2, 3) for a in ("relu", "tanh")]
    return sorted(every, key=lambda p: not p.paper_named)


@dataclass(frozen=True)
class SweepProtocol:
    """How much data and how many epochs; ``None`` image counts mean all."""

    name: str
    epochs: int
    checkpoints: tuple[int, ...]
    ae_train_images: int | None  # autoencoder training images (from train/)
    val_images: int | None  # held out from train/ for validation
    classifier_train_images: int | None  # train/ images the classifier learns from
    test_images: int | None  # test/ images scored
    batch_size: int
    classifier_epochs: int
    seed: int = 0
    n_permutations: int = 16


# The paper's protocol: 50 epochs, checkpoints 10/25/50, all data (20% of train/ held out).
FULL = SweepProtocol("full", 50, (10, 25, 50), None, None, None, None, 16, 25)
# What fits in ~35 min on two shared CPU cores (see docs/paper.md for the measurement behind it).
REDUCED = SweepProtocol("reduced", 5, (1, 3, 5), 24, 8, 64, None, 4, 25)
# CI: two permutations, one epoch, a few images.
SMOKE = SweepProtocol("smoke", 1, (1,), 4, 2, 6, 6, 2, 2, n_permutations=2)
PROTOCOLS = {p.name: p for p in (FULL, REDUCED, SMOKE)}


def _select(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    return np.arange(len(y)) if n is None else stratified_subset(y, n, seed)


def run_sweep(data_dir: str | Path, out_dir: str | Path, protocol: SweepProtocol, command: str = "", progress: bool = True, stem: str = "paper_sweep", data_label: str | None = None) -> dict:
    """Run the sweep, write ``<stem>.json``, ``<stem>.md`` and ``<stem>_*.png`` into ``out_dir``.

    ``data_label`` is how the data folder is recorded (e.g. the relative path the
    user gave); by default the folder's path as given in ``data_dir``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    started = time.time()
    x_train, y_train = load_split(data_dir, "train", progress=progress)
    x_test, y_test = load_split(data_dir, "test", progress=progress)
    out.mkdir(parents=True, exist_ok=True)  # only once the data has loaded: a bad --data leaves nothing

    # Autoencoder data: a stratified pool from train/, split into train and validation.
    if protocol.ae_train_images is None:
        ae_tr, ae_val = holdout_split(y_train, 0.2, protocol.seed)
    else:
        pool = _select(y_train, protocol.ae_train_images + protocol.val_images, protocol.seed)
        tr, va = holdout_split(y_train[pool], protocol.val_images / len(pool), protocol.seed)
        ae_tr, ae_val = pool[tr], pool[va]
    cls_idx = _select(y_train, protocol.classifier_train_images, protocol.seed + 1)
    test_idx = _select(y_test, protocol.test_images, protocol.seed + 2)
    xc, yc, xt, yt = x_train[cls_idx], y_train[cls_idx], x_test[test_idx], y_test[test_idx]

    reference = fit_and_score(xc, yc, xt, yt, epochs=protocol.classifier_epochs, seed=protocol.seed)
    data_info = {
        "dir": data_label if data_label is not None else str(data_dir),
        "autoencoder_train": len(ae_tr),
        "validation (held out from train/)": len(ae_val),
        "classifier_train": len(cls_idx),
        "test": len(test_idx),
        "input": "200x200 fixed-size view, aspect kept, padded",
    }
    key_image = x_train[ae_val[0]]
    runs, best_model, best_mse = [], None, float("inf")
    perms = permutations()[: protocol.n_permutations]
    for perm in tqdm(perms, desc="paper sweep", unit="perm", disable=not progress):
        torch.manual_seed(protocol.seed)
        model = PaperAutoencoder(AutoencoderConfig(perm.depth, perm.activation))
        history = train_autoencoder(model, x_train[ae_tr], x_train[ae_val], perm.loss, perm.optimizer, protocol.epochs, protocol.batch_size, protocol.seed, progress, perm.name)
        # As in the paper, the classifier sees what the receiver decodes after the cipher
        # (one fixed key image, a validation image); the plain reconstruction is kept for comparison.
        rec_c, _ = reconstruct_through_cipher(model, xc, key_image)
        rec_t, negative_fraction = reconstruct_through_cipher(model, xt, key_image)
        plain_t = reconstruct(model, xt)
        classifier = fit_and_score(rec_c, yc, rec_t, yt, epochs=protocol.classifier_epochs, seed=protocol.seed)
        run = {
            "name": perm.name,
            **asdict(perm),
            "paper_named": perm.paper_named,
            "latent_shape": list(model.latent_shape()),
            "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
            "history": history,
            "checkpoints": {str(c): history[c - 1] for c in protocol.checkpoints if c <= len(history)},
            "test_reconstruction": {"mse": float(np.mean((rec_t - xt) ** 2)), "mae": float(np.mean(np.abs(rec_t - xt)))},
            "test_reconstruction_without_cipher": {"mse": float(np.mean((plain_t - xt) ** 2)), "mae": float(np.mean(np.abs(plain_t - xt)))},
            "test_latent_negative_fraction": negative_fraction,
            "classifier": classifier,
        }
        runs.append(run)
        if history[-1].get("val_mse", float("inf")) < best_mse:
            best_mse, best_model, best_name = history[-1]["val_mse"], model, perm.name
        # Partial results after every permutation: an interrupted run still leaves its numbers.
        partial = _result(command, protocol, data_info, started, reference, runs, complete=False)
        atomic_write(out / f"{stem}.json", json.dumps(partial, indent=1).encode())

    result = _result(command, protocol, data_info, started, reference, runs, complete=True)
    _write_outputs(result, out, stem, best_model, best_name, x_test[test_idx[0]], x_train[ae_val[0]])
    return result


def _result(command: str, protocol: SweepProtocol, data_info: dict, started: float, reference: dict, runs: list, complete: bool) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "command": command,
        "complete": complete,
        "protocol": asdict(protocol),
        "data": data_info,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
        "seconds_total": round(time.time() - started, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "reference_classifier_on_originals": reference,
        "runs": runs,
    }


def _write_outputs(result: dict, out: Path, stem: str, best_model, best_name: str, sample: np.ndarray, key: np.ndarray) -> None:
    runs = result["runs"]
    atomic_write(out / f"{stem}.json", json.dumps(result, indent=1).encode())
    atomic_write(out / f"{stem}.md", markdown_report(result, stem).encode())
    plot_loss_grid(runs, out / f"{stem}_loss.png")
    ref = result["reference_classifier_on_originals"]["test"]
    curves = {"originals (reference)": _curve(ref)}
    curves.update({r["name"]: _curve(r["classifier"]["test"]) for r in runs})
    plot_roc(curves, out / f"{stem}_roc.png", title="Paper classifier on test/: ROC per autoencoder")
    items = [("originals (reference)", ref["confusion_matrix"])] + [(r["name"], r["classifier"]["test"]["confusion_matrix"]) for r in runs]
    plot_confusion_grid(items, CLASSES, out / f"{stem}_confusion.png")
    plot_confusion(ref["confusion_matrix"], CLASSES, out / f"{stem}_confusion_reference.png", "classifier on original test images")
    rt = roundtrip_arrays(best_model, sample, key)
    plot_fig5(rt.original, rt.encrypted_latent, rt.retrieved, out / f"{stem}_fig5.png", f"{best_name} (lowest validation MSE); a test image, key = a train image")


def _curve(m: dict):
    roc = m.get("roc") or {"fpr": [0, 1], "tpr": [0, 1]}
    return roc["fpr"], roc["tpr"], m.get("auc")


def _f(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown_report(result: dict, stem: str = "paper_sweep") -> str:
    p = result["protocol"]
    d = result["data"]
    ck = [str(c) for c in p["checkpoints"]]
    lines = [
        "# Paper reproduction: autoencoder hyper-parameter sweep",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Protocol **{p['name']}**: {p['epochs']} epochs (checkpoints {', '.join(ck)}), batch {p['batch_size']}, "
        f"autoencoder trained on {d['autoencoder_train']} images of `train/`, validated on {d['validation (held out from train/)']} other `train/` images; "
        f"classifier ({p['classifier_epochs']} epochs) trained on {d['classifier_train']} `train/` images (reconstructed by each autoencoder) "
        f"and scored on {d['test']} `test/` images (reconstructed by the same autoencoder). Input {d['input']}. Seed {p['seed']}.",
        "",
        f"Environment: torch {result['environment']['torch']}, {result['environment']['threads']} threads, {result['environment']['cpus']} CPUs; "
        f"run {result['environment']['date']}, {result['seconds_total'] / 60:.1f} min wall-clock in all"
        + (f", {result['cpu_seconds'] / 60:.1f} min of CPU time." if result.get("cpu_seconds") else "."),
        "",
        "Pixel values are in [0, 1]. Train columns are running means over each epoch (as Keras reports them); ",
        "validation columns are measured after the epoch. `*` marks the combinations the paper names.",
        "Test columns are on `test/` images after encoder -> E = Z^2 + K^2 -> sqrt(E - K^2) -> decoder with one fixed key image",
        "(what the paper's receiver decodes, and what the classifier sees); 'without cipher' is the plain autoencoder;",
        "'negative latent' is the share of latent values below 0, whose sign the cipher destroys.",
        "",
        "## Autoencoder: loss, MSE and MAE at each checkpoint (train / validation)",
        "",
    ]
    head = "| # | permutation | s/epoch | " + " | ".join(f"ep{c} loss | ep{c} MSE | ep{c} MAE" for c in ck) + " | test MSE | test MAE | test MSE without cipher | negative latent |"
    lines += [head, "|" + "---|" * (3 + 3 * len(ck) + 4)]
    for i, r in enumerate(result["runs"], 1):
        cells = []
        for c in ck:
            h = r["checkpoints"].get(c, {})
            for m in ("loss", "mse", "mae"):
                cells.append(f"{_f(h.get('train_' + m))} / {_f(h.get('val_' + m))}")
        star = "*" if r["paper_named"] else ""
        plain = r.get("test_reconstruction_without_cipher", {}).get("mse")
        neg = r.get("test_latent_negative_fraction")
        neg_text = "n/a" if neg is None else f"{100 * neg:.1f} %"
        lines.append(f"| {i} | {r['name']}{star} | {r['seconds_per_epoch']:.1f} | " + " | ".join(cells) + f" | {_f(r['test_reconstruction']['mse'])} | {_f(r['test_reconstruction']['mae'])} | {_f(plain)} | {neg_text} |")
    lines += [
        "",
        "## Paper classifier on each autoencoder's reconstructions (after the cipher, as in the paper)",
        "",
        "Confusion matrix `[[tn, fp], [fn, tp]]` on `test/`, positive = PNEUMONIA, threshold 0.5.",
        "",
        "| # | trained on | train acc | test acc | precision | recall | F1 | AUC | confusion (test) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ref = result["reference_classifier_on_originals"]
    rows = [("ref", "original images", ref)] + [(str(i), r["name"] + ("*" if r["paper_named"] else ""), r["classifier"]) for i, r in enumerate(result["runs"], 1)]
    for i, name, c in rows:
        t = c["test"]
        lines.append(f"| {i} | {name} | {_f(c['train']['accuracy'], 3)} | {_f(t['accuracy'], 3)} | {_f(t['precision'], 3)} | {_f(t['recall'], 3)} | {_f(t['f1'], 3)} | {_f(t['auc'], 3)} | {t['confusion_matrix']} |")
    lines += [
        "",
        "## Figures",
        "",
        f"- `{stem}_loss.png`: train and validation loss per epoch, one panel per permutation",
        f"- `{stem}_roc.png`: ROC of the classifier on `test/` for every autoencoder and the reference",
        f"- `{stem}_confusion.png`, `{stem}_confusion_reference.png`: confusion matrices on `test/`",
        f"- `{stem}_fig5.png`: like the paper's Fig. 5: original, encrypted latent, retrieved image",
        "",
    ]
    return "\n".join(lines)
