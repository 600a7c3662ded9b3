"""The paper's three detailed cases at its own epochs (10, 25, 50), resumable.

The body of the paper (section 5.2) details three autoencoder cases and
reports each at 10, 25 and 50 epochs (Tables 1, 3, 5) with the classifier's
results (Tables 2, 4, 6):

- Case 1: MSE + RMSprop + 3 layers + ReLU (the loss is not named in the body;
  Table 1's "Loss" column equals its MSE column, so MSE)
- Case 2: MSLE + Adagrad + 2 layers + ReLU
- Case 3: hinge + RMSprop + 3 layers + ReLU

One model per case is trained to 50 epochs; 10 and 25 are checkpoints of the
same run. The unit of work is one epoch of one case, or one classifier
training at a checkpoint. Work runs stage by stage (every case to epoch 10 and
its classifier, then every case to 25, then to 50), so a run stopped early
still has every case at the earlier epochs.

After every unit the state is saved atomically in ``OUT/state/<case>.pt``
(model, optimizer, the shuffling generator, the history and the classifier
results so far) and a line is appended to ``OUT/progress.jsonl``. Started
again with the same OUT, the run continues from the last saved unit and draws
the same batches as an uninterrupted run would. The summary
(``paper_epochs.json`` / ``.md``) is rewritten after every unit, marking
what has not been reached.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from radseal.errors import RadsealError
from radseal.io.files import atomic_write
from radseal.paper.autoencoder import AutoencoderConfig, PaperAutoencoder
from radseal.paper.classifier import fit_and_score
from radseal.paper.data import holdout_split, load_split, stratified_subset
from radseal.paper.roundtrip import reconstruct_through_cipher
from radseal.paper.training import get_loss, get_optimizer, train_one_epoch

STEM = "paper_epochs"


@dataclass(frozen=True)
class Case:
    key: str  # "case1"
    title: str
    loss: str
    optimizer: str
    depth: int
    activation: str = "relu"

    @property
    def name(self) -> str:
        return f"{self.loss.upper()}+{self.optimizer}+{self.depth}L+{self.activation}"


CASES = (
    Case("case1", "body Case 1 (Tables 1, 2)", "mse", "rmsprop", 3),
    Case("case2", "Case 2 (Tables 3, 4)", "msle", "adagrad", 2),
    Case("case3", "Case 3 (Tables 5, 6)", "hinge", "rmsprop", 3),
)

# The paper's numbers, as printed (Tables 1-6 of the article).
PAPER_TABLES = {
    "case1": {
        "autoencoder": {10: (0.0033, 0.0478, 0.0033), 25: (0.0021, 0.0387, 0.0021), 50: (0.0012, 0.0221, 0.0012)},
        "classifier": {"train_accuracy": 0.7977, "test_accuracy": 0.7507, "recall": 0.447, "precision": 0.487, "f1": 0.466, "auc": 0.626},
    },
    "case2": {
        "autoencoder": {10: (9.3314e-04, 0.052, 9.3314e-04), 25: (4.7267e-04, 0.045, 2.2814e-04), 50: (2.5894e-04, 0.031, 1.2790e-04)},
        "classifier": {"train_accuracy": 0.7008, "test_accuracy": 0.6574, "recall": 0.478, "precision": 0.461, "f1": 0.154, "auc": 0.523},
    },
    "case3": {
        "autoencoder": {10: (0.299, 0.485, 0.485), 25: (0.299, 0.485, 0.485), 50: (0.299, 0.485, 0.485)},
        "classifier": {"train_accuracy": 0.4076, "test_accuracy": 0.2032, "recall": 0.0, "precision": 0.0, "f1": 0.0, "auc": 0.5},
    },
}


@dataclass(frozen=True)
class EpochsProtocol:
    name: str
    stages: tuple[int, ...]  # the epochs at which results are reported (and the classifier trained)
    ae_train_images: int  # autoencoder training images (stratified, from train/)
    val_images: int  # other train/ images held out for validation
    classifier_train_images: int  # train/ images the classifier learns from (reconstructed)
    test_images: int | None  # test/ images scored (None: all)
    batch_size: int
    classifier_epochs: int
    seed: int = 0
    cases: tuple[str, ...] = ("case1", "case2", "case3")


# 48 + 12 of the 260 train/ images (64 others for the classifier): what three
# 50-epoch runs fit into in about 90 minutes at one thread and nice 19 on the
# shared 2-core machine, where one 3-layer epoch over 80 images took 22-220 s
# depending on the other jobs (docs/paper.md).
PAPER_EPOCHS = EpochsProtocol("paper-epochs", (10, 25, 50), 48, 12, 64, None, 8, 25)
# Tests: a few images, stages of one and two epochs.
PAPER_EPOCHS_SMOKE = EpochsProtocol("paper-epochs-smoke", (1, 2), 2, 2, 4, 4, 2, 1)
EPOCH_PROTOCOLS = {p.name: p for p in (PAPER_EPOCHS, PAPER_EPOCHS_SMOKE)}


class ResumeMismatch(RadsealError):
    """OUT holds a run of a different protocol or data; it is not continued."""


def _case(key: str) -> Case:
    return next(c for c in CASES if c.key == key)


def _select(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    return np.arange(len(y)) if n is None else stratified_subset(y, n, seed)


def _fingerprint(protocol: EpochsProtocol, indices: dict) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps({"protocol": asdict(protocol), "indices": indices}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _save_state(path: Path, model, opt, rng, state: dict) -> None:
    blob = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": json.dumps(rng.bit_generator.state),
        "meta": json.dumps(state),
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, buf.getvalue())


def _load_state(path: Path, model, opt, rng) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    rng.bit_generator.state = json.loads(blob["rng"])
    return json.loads(blob["meta"])


def _log(out: Path, record: dict) -> None:
    with open(out / "progress.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_paper_epochs(
    data_dir: str | Path,
    out_dir: str | Path,
    protocol: EpochsProtocol = PAPER_EPOCHS,
    command: str = "",
    data_label: str | None = None,
    progress: bool = True,
    stop_after_units: int | None = None,
) -> dict:
    """Run (or continue) the three cases; returns the summary written to OUT.

    ``stop_after_units`` stops after that many units of new work (tests use it
    to interrupt a run and resume it).
    """
    out = Path(out_dir)
    x_train, y_train = load_split(data_dir, "train", progress=progress)
    x_test, y_test = load_split(data_dir, "test", progress=progress)
    pool = _select(y_train, protocol.ae_train_images + protocol.val_images, protocol.seed)
    tr, va = holdout_split(y_train[pool], protocol.val_images / len(pool), protocol.seed)
    ae_tr, ae_val = pool[tr], pool[va]
    # The paper trains the classifier on other images than the autoencoder ("We used 5000 images
    # to train the auto-encoder and another 5000 to predict and train the classifier").
    rest = np.setdiff1d(np.arange(len(y_train)), pool)
    cls_idx = rest[_select(y_train[rest], protocol.classifier_train_images, protocol.seed + 1)]
    test_idx = _select(y_test, protocol.test_images, protocol.seed + 2)
    if len(ae_tr) == 0 or len(ae_val) == 0 or len(np.unique(y_train[cls_idx])) < 2 or len(np.unique(y_test[test_idx])) < 2:
        raise RadsealError(f"{data_dir}: too few images for protocol {protocol.name} (needs {protocol.ae_train_images} + {protocol.val_images} in train/, both classes in test/)")
    indices = {"ae_train": ae_tr.tolist(), "ae_val": ae_val.tolist(), "classifier_train": cls_idx.tolist(), "test": test_idx.tolist()}
    fingerprint = _fingerprint(protocol, indices)

    (out / "state").mkdir(parents=True, exist_ok=True)  # only once the data has loaded
    run_file = out / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise ResumeMismatch(f"{out}: holds a run of another protocol or data set; use a new --out")
        run_info = previous
    else:
        run_info = {
            "fingerprint": fingerprint,
            "command": command,
            "protocol": asdict(protocol),
            "data": {
                "dir": data_label if data_label is not None else str(data_dir),
                "train_images_available": int(len(y_train)),
                "autoencoder_train": len(ae_tr),
                "validation (held out from train/)": len(ae_val),
                "classifier_train (none of them seen by the autoencoder)": len(cls_idx),
                "test": len(test_idx),
                "input": "200x200 fixed-size view, aspect kept, padded",
            },
            "sessions": [],
        }
    run_info["sessions"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "threads": torch.get_num_threads()})
    atomic_write(run_file, json.dumps(run_info, indent=1).encode())

    xa, xv = x_train[ae_tr], x_train[ae_val]
    xc, yc, xt, yt = x_train[cls_idx], y_train[cls_idx], x_test[test_idx], y_test[test_idx]
    key_image = x_train[ae_val[0]]
    units = 0

    def budget_left() -> bool:
        return stop_after_units is None or units < stop_after_units

    ref_file = out / "state" / "reference.json"
    if not ref_file.exists() and budget_left():
        t0 = time.perf_counter()
        reference = fit_and_score(xc, yc, xt, yt, epochs=protocol.classifier_epochs, seed=protocol.seed)
        reference["seconds"] = time.perf_counter() - t0
        atomic_write(ref_file, json.dumps(reference).encode())
        _log(out, {"unit": "reference classifier", "seconds": reference["seconds"], "test_accuracy": reference["test"]["accuracy"], "time": time.strftime("%H:%M:%S")})
        units += 1

    for stage in protocol.stages:
        for key in protocol.cases:
            if not budget_left():
                break
            case = _case(key)
            torch.manual_seed(protocol.seed)
            model = PaperAutoencoder(AutoencoderConfig(case.depth, case.activation))
            opt = get_optimizer(case.optimizer, model.parameters())
            rng = np.random.default_rng(protocol.seed)
            fn = get_loss(case.loss)
            path = out / "state" / f"{key}.pt"
            state = _load_state(path, model, opt, rng) if path.exists() else {"history": [], "classifier": {}}
            while len(state["history"]) < stage and budget_left():
                epoch = len(state["history"]) + 1
                record = train_one_epoch(model, opt, fn, xa, xv, case.loss, rng, protocol.batch_size, epoch)
                state["history"].append(record)
                _save_state(path, model, opt, rng, state)
                _log(out, {"unit": "epoch", "case": key, **record, "time": time.strftime("%H:%M:%S")})
                units += 1
                if progress:
                    print(f"{key} epoch {epoch}: train MSE {record['train_mse']:.5f} val MSE {record['val_mse']:.5f} ({record['seconds']:.0f} s)", flush=True)
            if len(state["history"]) == stage and str(stage) not in state["classifier"] and budget_left():
                t0 = time.perf_counter()
                rec_c, _ = reconstruct_through_cipher(model, xc, key_image)
                rec_t, negative = reconstruct_through_cipher(model, xt, key_image)
                result = fit_and_score(rec_c, yc, rec_t, yt, epochs=protocol.classifier_epochs, seed=protocol.seed)
                result["test_reconstruction"] = {"mse": float(np.mean((rec_t - xt) ** 2)), "mae": float(np.mean(np.abs(rec_t - xt)))}
                result["test_latent_negative_fraction"] = negative
                result["seconds"] = time.perf_counter() - t0
                state["classifier"][str(stage)] = result
                _save_state(path, model, opt, rng, state)
                _log(out, {"unit": "classifier", "case": key, "epoch": stage, "seconds": result["seconds"], "test_accuracy": result["test"]["accuracy"], "time": time.strftime("%H:%M:%S")})
                units += 1
                if progress:
                    print(f"{key} classifier at epoch {stage}: test accuracy {result['test']['accuracy']:.3f}", flush=True)
            write_summary(out, out)
    return write_summary(out, out)


def collect(run_dir: str | Path) -> dict:
    """Everything a run folder holds, as one summary (complete or not)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    protocol = info["protocol"]
    ref_file = run_dir / "state" / "reference.json"
    reference = json.loads(ref_file.read_text()) if ref_file.exists() else None
    cases, unit_seconds, epochs_done = [], 0.0, 0
    for key in protocol["cases"]:
        case = _case(key)
        path = run_dir / "state" / f"{key}.pt"
        state = json.loads(torch.load(path, map_location="cpu", weights_only=True)["meta"]) if path.exists() else {"history": [], "classifier": {}}
        hist = state["history"]
        unit_seconds += sum(h["seconds"] for h in hist) + sum(c.get("seconds", 0.0) for c in state["classifier"].values())
        epochs_done += len(hist)
        cases.append({
            "case": key,
            "title": case.title,
            "name": case.name,
            **{k: getattr(case, k) for k in ("loss", "optimizer", "depth", "activation")},
            "epochs_done": len(hist),
            "checkpoints": {str(s): hist[s - 1] for s in protocol["stages"] if s <= len(hist)},
            "classifier": state["classifier"],
            "history": hist,
            "paper": PAPER_TABLES.get(key),
        })
    if reference is not None:
        unit_seconds += reference.get("seconds", 0.0)
    progress_lines = (run_dir / "progress.jsonl").read_text().splitlines() if (run_dir / "progress.jsonl").exists() else []
    wall = _wall_seconds(info["sessions"], progress_lines)
    final = max(protocol["stages"])
    complete = all(c["epochs_done"] >= final and str(final) in c["classifier"] for c in cases) and reference is not None
    return {
        "command": info["command"],
        "complete": complete,
        "protocol": protocol,
        "data": info["data"],
        "sessions": info["sessions"],
        "environment": {"torch": torch.__version__, "cpus": os.cpu_count(), "machine": platform.machine()},
        "epochs_done": epochs_done,
        "epochs_planned": final * len(cases),
        "seconds_in_units": round(unit_seconds, 1),
        "wall_seconds_first_start_to_last_unit": wall,
        "first_and_last_unit": [json.loads(progress_lines[0]).get("time"), json.loads(progress_lines[-1]).get("time")] if progress_lines else None,
        "reference_classifier_on_originals": reference,
        "cases": cases,
    }


def _wall_seconds(sessions: list, progress_lines: list[str]) -> float | None:
    """From the first session's start to the last logged unit (same UTC day, or the next)."""
    import datetime as dt

    if not sessions or not progress_lines:
        return None
    start = dt.datetime.strptime(sessions[0]["started"][:19], "%Y-%m-%d %H:%M:%S")
    last = dt.datetime.strptime(json.loads(progress_lines[-1])["time"], "%H:%M:%S").time()
    end = dt.datetime.combine(start.date(), last)
    if end < start:
        end += dt.timedelta(days=1)
    return (end - start).total_seconds()


def write_summary(run_dir: str | Path, results_dir: str | Path, stem: str = STEM, extra: dict | None = None) -> dict:
    """Write ``<stem>.json`` and ``<stem>.md`` for the run in ``run_dir`` into ``results_dir``."""
    summary = collect(run_dir)
    if extra:
        summary.update(extra)
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(summary))
    if slim["reference_classifier_on_originals"]:
        slim["reference_classifier_on_originals"]["test"].pop("roc", None)
        slim["reference_classifier_on_originals"]["train"].pop("roc", None)
    for c in slim["cases"]:
        for r in c["classifier"].values():
            r["train"].pop("roc", None)
    atomic_write(results / f"{stem}.json", json.dumps(slim, indent=1).encode())
    atomic_write(results / f"{stem}.md", markdown_report(summary).encode())
    return summary


def _f(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.{digits}f}"


def markdown_report(s: dict) -> str:
    p, d = s["protocol"], s["data"]
    stages = p["stages"]
    state = "complete" if s["complete"] else f"**not complete**: {s['epochs_done']} of {s['epochs_planned']} epochs ran"
    lines = [
        "# Paper reproduction: the three detailed cases at 10, 25 and 50 epochs",
        "",
        f"Command: `{s['command']}`",
        "",
        f"Status: {state}. Wall time from the first start to the last completed unit: "
        + (f"{s['wall_seconds_first_start_to_last_unit'] / 60:.1f} min" if s.get("wall_seconds_first_start_to_last_unit") is not None else "n/a")
        + f" (started {s['sessions'][0]['started'] if s['sessions'] else 'n/a'}, {len(s['sessions'])} session(s)); "
        f"time inside the units of work (training epochs with validation, classifier runs): {s['seconds_in_units'] / 60:.1f} min.",
        "",
        f"Data: `{d['dir']}`. Autoencoder trained on {d['autoencoder_train']} of the {d['train_images_available']} `train/` images "
        f"(stratified), validated on {d['validation (held out from train/)']} other `train/` images, batch {p['batch_size']}, seed {p['seed']}. "
        f"Classifier ({p['classifier_epochs']} epochs) trained on {d['classifier_train (none of them seen by the autoencoder)']} other `train/` images (none used by the autoencoder, as in the paper) and scored on {d['test']} `test/` images, "
        "both as the receiver decodes them (encoder -> E = Z^2 + K^2 -> sqrt(E - K^2) -> decoder, one fixed key image). "
        f"In all {d['autoencoder_train'] + d['validation (held out from train/)'] + d['classifier_train (none of them seen by the autoencoder)']} of the {d['train_images_available']} `train/` images are used. "
        f"One model per case; the earlier stages ({', '.join(str(x) for x in stages[:-1])}) are checkpoints of the {max(stages)}-epoch run. Pixel values in [0, 1].",
        "",
    ]
    ref = s["reference_classifier_on_originals"]
    if ref:
        t = ref["test"]
        lines += [f"Reference classifier on the original images: train accuracy {_f(ref['train']['accuracy'], 3)}, test accuracy {_f(t['accuracy'], 3)}, "
                  f"recall {_f(t['recall'], 3)}, precision {_f(t['precision'], 3)}, F1 {_f(t['f1'], 3)}, AUC {_f(t['auc'], 3)}, confusion {t['confusion_matrix']}.", ""]
    for c in s["cases"]:
        paper = c["paper"] or {}
        lines += [f"## {c['title']}: {c['name']}", "", f"Epochs run: {c['epochs_done']} of {max(stages)}."
                  + (f" Mean time per epoch {np.mean([h['seconds'] for h in c['history']]):.1f} s." if c["history"] else ""), "",
                  "| epoch | paper MSE | paper MAE | paper loss | ours MSE (train / val) | ours MAE (train / val) | ours loss (train / val) |",
                  "|---|---|---|---|---|---|---|"]
        for st in stages:
            pm = paper.get("autoencoder", {}).get(st) or paper.get("autoencoder", {}).get(str(st))
            pcells = [_f(v) for v in pm] if pm else ["-", "-", "-"]
            h = c["checkpoints"].get(str(st))
            ours = [f"{_f(h['train_' + m])} / {_f(h['val_' + m])}" for m in ("mse", "mae", "loss")] if h else ["not reached"] * 3
            lines.append(f"| {st} | " + " | ".join(pcells + ours) + " |")
        lines += ["", "| classifier | train acc | test acc | recall | precision | F1 | AUC | confusion `[[tn, fp], [fn, tp]]` | test MSE / MAE after cipher |", "|---|---|---|---|---|---|---|---|---|"]
        pc = paper.get("classifier")
        if pc:
            lines.append(f"| paper | {_f(pc['train_accuracy'], 3)} | {_f(pc['test_accuracy'], 3)} | {_f(pc['recall'], 3)} | {_f(pc['precision'], 3)} | {_f(pc['f1'], 3)} | {_f(pc['auc'], 3)} | not printed | - |")
        for st in stages:
            r = c["classifier"].get(str(st))
            if r is None:
                lines.append(f"| ours, epoch {st} | not reached | | | | | | | |")
                continue
            t = r["test"]
            lines.append(f"| ours, epoch {st} | {_f(r['train']['accuracy'], 3)} | {_f(t['accuracy'], 3)} | {_f(t['recall'], 3)} | {_f(t['precision'], 3)} | {_f(t['f1'], 3)} | {_f(t['auc'], 3)} | {t['confusion_matrix']} | {_f(r['test_reconstruction']['mse'])} / {_f(r['test_reconstruction']['mae'])} |")
        lines.append("")
    return "\n".join(lines)
