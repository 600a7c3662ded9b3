"""Plots of classifier results: ROC curves and confusion matrices (PNG).

matplotlib with the Agg backend (no display needed); every file is written
through ``atomic_write`` so a crash never leaves half a PNG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from radseal.extras import require

matplotlib = require("matplotlib", "evaluate", "classifier plots")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from radseal.io.files import atomic_write  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to PNG bytes, write them atomically, close the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def plot_roc(curves: Mapping[str, tuple[Sequence[float], Sequence[float], float | None]], path: str | Path, title: str = "ROC") -> Path:
    """One ROC curve per entry ``name -> (fpr, tpr, auc)`` on shared axes."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    for name, (fpr, tpr, auc) in curves.items():
        label = name if auc is None else f"{name} (AUC {auc:.3f})"
        ax.plot(fpr, tpr, lw=1.4, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def plot_confusion(cm, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """A confusion matrix (rows true, columns predicted) with counts in the cells."""
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > threshold else "black")
    return save_figure(fig, path)
