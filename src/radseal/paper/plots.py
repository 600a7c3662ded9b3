"""Figures of the paper reproduction: Fig. 5-like panels, loss curves, confusion grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radseal.diagnosis.plots import plt, save_figure


def latent_mosaic(latent: np.ndarray, max_channels: int = 16) -> np.ndarray:
    """(C, h, w) -> a square mosaic of the first channels, each scaled to [0, 1]."""
    c = min(max_channels, latent.shape[0])
    side = int(np.ceil(np.sqrt(c)))
    h, w = latent.shape[1:]
    mosaic = np.zeros((side * h, side * w), np.float32)
    for i in range(c):
        ch = latent[i].astype(np.float32)
        span = float(ch.max() - ch.min())
        ch = (ch - ch.min()) / span if span > 0 else np.zeros_like(ch)
        r, q = divmod(i, side)
        mosaic[r * h : (r + 1) * h, q * w : (q + 1) * w] = ch
    return mosaic


def plot_fig5(original: np.ndarray, encrypted_latent: np.ndarray, retrieved: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Like the paper's Fig. 5: original, the encrypted latent E (first channels), retrieved."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    panels = [
        (original, "original (200x200)"),
        (latent_mosaic(encrypted_latent), f"encrypted latent E = Z²+K²\n(first {min(16, encrypted_latent.shape[0])} of {encrypted_latent.shape[0]} channels, {encrypted_latent.shape[1]}x{encrypted_latent.shape[2]})"),
        (retrieved, "retrieved (decrypt + decode)"),
    ]
    for ax, (img, label) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_loss_grid(runs: Sequence[dict], path: str | Path) -> Path:
    """One panel per sweep permutation: train and validation loss per epoch."""
    n = len(runs)
    cols = 4 if n > 2 else n
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax, run in zip(axes.ravel(), runs):
        epochs = [h["epoch"] for h in run["history"]]
        ax.plot(epochs, [h["train_loss"] for h in run["history"]], marker="o", ms=3, label="train")
        if "val_loss" in run["history"][0]:
            ax.plot(epochs, [h["val_loss"] for h in run["history"]], marker="s", ms=3, label="validation")
        ax.set_title(run["name"], fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel(f"{run['loss']} loss", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion_grid(items: Sequence[tuple[str, list]], labels: Sequence[str], path: str | Path) -> Path:
    """Many 2x2 confusion matrices (rows true, columns predicted) in one figure."""
    n = len(items)
    cols = 4 if n > 2 else n
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    for ax, (name, cm) in zip(axes.ravel(), items):
        cm = np.asarray(cm)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.sum() / 2))
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9)
        ax.set_xticks([0, 1], [f"pred {l[:4]}" for l in labels], fontsize=6)
        ax.set_yticks([0, 1], [f"true {l[:4]}" for l in labels], fontsize=6)
        ax.set_title(name, fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)
