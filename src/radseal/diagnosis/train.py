"""Training the pneumonia classifier (``radseal train-classifier``).

Only the ``train`` split is read. A stratified, seeded fifth of it is held
out for model selection (the epoch with the best held-out AUC is kept); the
``test`` split is never touched here, so test numbers stay honest.
Augmentation is geometric and photometric only (small rotation, scale,
shift, horizontal flip, gamma), applied on the fly to the cached views.
"""

from __future__ import annotations

import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radseal.extras import require

torch = require("torch", "train", "radseal train-classifier")
F = torch.nn.functional

from radseal.diagnosis.classifier import WEIGHTS_DIR, WEIGHTS_FILE, Classifier, save_weights  # noqa: E402
from radseal.diagnosis.model import PneumoniaNet, numpy_state, torch_probabilities  # noqa: E402
from radseal.diagnosis.view import DEFAULT_SIZE, load_views  # noqa: E402
from radseal.io.dataset import Sample, list_samples, recorded_path, resolve_data_dir  # noqa: E402


@dataclass
class TrainConfig:
    epochs: int = 40
    size: int = DEFAULT_SIZE
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    width: int = 16
    seed: int = 0
    threads: int = 1


@dataclass
class TrainResult:
    classifier: Classifier
    weights_path: Path
    info: dict = field(default_factory=dict)


def split_holdout(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Stratified split of ``samples`` into (fit, held-out), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for label in sorted({s.label for s in samples}):
        group = [s for s in samples if s.label == label]
        order = rng.permutation(len(group))
        n_held = max(1, round(len(group) * fraction))
        held += [group[i] for i in order[:n_held]]
        fit += [group[i] for i in order[n_held:]]
    return fit, held


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (+-7 deg), scale (0.9-1.15), shift (+-5%), h-flip and gamma (0.8-1.25)."""
    n = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = u(-7, 7) * math.pi / 180
    scale = 1.0 / u(0.9, 1.15)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, u(-0.05, 0.05)], 1), torch.stack([sin * flip, cos, u(-0.05, 0.05)], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gamma = torch.exp(u(math.log(0.8), math.log(1.25))).view(n, 1, 1, 1)
    return x.clamp(0, 1) ** gamma


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    roc_auc_score = require("sklearn.metrics", "train", "radseal train-classifier").roc_auc_score

    return float(roc_auc_score(y, p))


def train_classifier(
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train on ``DATA/train``, select on a held-out fifth, write weights + ``training.json``."""
    import json

    from tqdm import tqdm

    from radseal.io.files import atomic_write

    cfg = config or TrainConfig()
    root = resolve_data_dir(data)
    out = Path(out_dir) if out_dir else WEIGHTS_DIR
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    started = time.time()

    samples = list_samples(root, "train")
    fit, held = split_holdout(samples, cfg.val_fraction, cfg.seed)
    x_fit, y_fit = load_views(fit, cfg.size, progress=progress)
    x_val, y_val = load_views(held, cfg.size, progress=progress)
    xf, yf = torch.from_numpy(x_fit).unsqueeze(1), torch.from_numpy(y_fit).float()

    net = PneumoniaNet(width=cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(fit) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15)
    history, best = [], None
    bar = tqdm(range(cfg.epochs), desc="training classifier", unit="epoch", disable=not progress)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(fit), generator=gen)
        losses = []
        for i in range(0, len(fit), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            logits = net(augment(xf[idx], gen))
            loss = F.binary_cross_entropy_with_logits(logits, yf[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        net.eval()
        p_val = torch_probabilities(net, x_val)
        val_loss = float(F.binary_cross_entropy(torch.from_numpy(p_val).clamp(1e-6, 1 - 1e-6), torch.from_numpy(y_val).double()))
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_auc": _auc(y_val, p_val),
            "val_accuracy": float(np.mean((p_val >= 0.5) == y_val)),
        }
        history.append(row)
        if best is None or (row["val_auc"], -row["val_loss"]) > (best[0]["val_auc"], -best[0]["val_loss"]):
            best = (row, {k: v.detach().clone() for k, v in net.state_dict().items()})
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_auc=f"{row['val_auc']:.3f}", best=best[0]["epoch"])

    net.load_state_dict(best[1])
    elapsed = time.time() - started
    info = {
        "command": command or " ".join(shlex.quote(a) for a in ["radseal", *sys.argv[1:]]),
        "data": recorded_path(root),
        "train_images": len(fit),
        "heldout_images": len(held),
        "heldout_files": [str(s.path.relative_to(root)) for s in held],
        "config": cfg.__dict__,
        "selected_epoch": best[0]["epoch"],
        "heldout_at_selected_epoch": best[0],
        "history": history,
        "seconds": round(elapsed, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "view": "centred square crop, resized (area filter) to size x size, see radseal.diagnosis.view",
    }
    clf_info = {k: info[k] for k in ("command", "train_images", "heldout_images", "selected_epoch", "seconds")}
    out.mkdir(parents=True, exist_ok=True)
    weights = save_weights(out / WEIGHTS_FILE, numpy_state(net), net.config, cfg.size, 0.5, clf_info)
    info["weights_file"] = WEIGHTS_FILE
    # Score the held-out fifth again with the float16 weights as shipped, by the numpy inference.
    shipped = Classifier.load(weights)
    p_shipped = shipped.probabilities(x_val)
    info["heldout_shipped_weights"] = {"auc": _auc(y_val, p_shipped), "accuracy": float(np.mean((p_shipped >= 0.5) == y_val))}
    info["weights_bytes"] = weights.stat().st_size
    atomic_write(out / "training.json", (json.dumps(info, indent=2) + "\n").encode(), mode=0o644)
    return TrainResult(classifier=shipped, weights_path=weights, info=info)
