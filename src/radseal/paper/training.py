"""Training the paper autoencoder: the losses and optimizers of its sweep.

Losses and optimizers follow the Keras definitions the paper used (Keras
defaults for learning rates), so names in the sweep mean what they meant
there. ``hinge`` is Keras' ``mean(max(1 - y*y_hat, 0))`` applied to pixel
intensities in [0, 1]: a classification loss on a regression target, and it
behaves accordingly (it rewards saturating bright).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from radseal.paper.autoencoder import PaperAutoencoder, PaperModelError


def _msle(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (torch.log1p(pred.clamp_min(0)) - torch.log1p(target.clamp_min(0))).square().mean()


def _hinge(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - target * pred).clamp_min(0).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda p, t: (p - t).square().mean(),
    "mae": lambda p, t: (p - t).abs().mean(),
    "msle": _msle,
    "hinge": _hinge,
}

# Keras 2 defaults (learning rate 0.001 for all three; RMSprop rho 0.9).
OPTIMIZERS: dict[str, Callable[[list], torch.optim.Optimizer]] = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, eps=1e-7),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.9, eps=1e-7),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-3, initial_accumulator_value=0.1, eps=1e-7),
}


def get_loss(name: str):
    if name not in LOSSES:
        raise PaperModelError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
    return LOSSES[name]


def get_optimizer(name: str, params) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise PaperModelError(f"unknown optimizer '{name}' (choose from {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](list(params))


@torch.no_grad()
def evaluate_autoencoder(model: PaperAutoencoder, x: np.ndarray, loss: str, batch_size: int = 16) -> dict:
    """Mean loss, MSE and MAE over ``x`` (N, H, W) in [0, 1] (image-weighted)."""
    model.eval()
    fn = get_loss(loss)
    totals = {"loss": 0.0, "mse": 0.0, "mae": 0.0}
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).unsqueeze(1)
        yb = model(xb)
        n = len(xb)
        totals["loss"] += float(fn(yb, xb)) * n
        totals["mse"] += float((yb - xb).square().mean()) * n
        totals["mae"] += float((yb - xb).abs().mean()) * n
    return {k: v / max(len(x), 1) for k, v in totals.items()}


@torch.no_grad()
def reconstruct(model: PaperAutoencoder, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch_size]).unsqueeze(1)).squeeze(1).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros_like(x)


def train_one_epoch(
    model: PaperAutoencoder,
    opt: torch.optim.Optimizer,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_train: np.ndarray,
    x_val: np.ndarray,
    loss: str,
    rng: np.random.Generator,
    batch_size: int,
    epoch: int,
) -> dict:
    """One pass over ``x_train`` in an order drawn from ``rng``; the epoch's record.

    Callers that checkpoint between epochs keep ``opt`` and ``rng`` with the
    model, so a resumed run draws the same batches as an uninterrupted one.
    """
    model.train()
    start = time.perf_counter()
    order = rng.permutation(len(x_train))
    sums = {"loss": 0.0, "mse": 0.0, "mae": 0.0}
    for i in range(0, len(order), batch_size):
        xb = torch.from_numpy(x_train[order[i : i + batch_size]]).unsqueeze(1)
        opt.zero_grad(set_to_none=True)
        yb = model(xb)
        batch_loss = fn(yb, xb)
        batch_loss.backward()
        opt.step()
        with torch.no_grad():
            n = len(xb)
            sums["loss"] += float(batch_loss) * n
            sums["mse"] += float((yb - xb).square().mean()) * n
            sums["mae"] += float((yb - xb).abs().mean()) * n
    seconds = time.perf_counter() - start
    record = {"epoch": epoch, "seconds": seconds}
    record.update({f"train_{k}": v / len(order) for k, v in sums.items()})
    if len(x_val):
        record.update({f"val_{k}": v for k, v in evaluate_autoencoder(model, x_val, loss).items()})
    return record


def train_autoencoder(
    model: PaperAutoencoder,
    x_train: np.ndarray,
    x_val: np.ndarray,
    loss: str,
    optimizer: str,
    epochs: int,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    desc: str = "autoencoder",
    on_epoch_end: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Train in place; returns one record per epoch with train/val loss, MSE, MAE and seconds.

    Train metrics are running means over the epoch's batches (what Keras
    reports as ``loss``/``mse``/``mae``, so they match the paper's tables);
    validation metrics are measured after the epoch on the held-out images.
    ``seconds`` is the training time of the epoch alone. ``on_epoch_end``
    (called with the history so far) lets a caller checkpoint every epoch.
    """
    fn = get_loss(loss)
    opt = get_optimizer(optimizer, model.parameters())
    rng = np.random.default_rng(seed)
    history = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False)
    for epoch in range(1, epochs + 1):
        record = train_one_epoch(model, opt, fn, x_train, x_val, loss, rng, batch_size, epoch)
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(history)
        if bar is not None:
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", mse=f"{record['train_mse']:.4f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    return history
