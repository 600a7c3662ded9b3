"""The paper's second network: a small CNN telling NORMAL from PNEUMONIA.

The paper trains it on the autoencoder's reconstructions to show that the
diagnosis survives; we train it both on reconstructions and on the original
images (the reference). The paper does not give this network's layers; the
choice below (recorded in docs/paper.md) is a plain Keras-style CNN small
enough to train in seconds on a CPU. Inputs are the 200x200 images,
average-pooled to 50x50 inside the network (keeps
the sweep's 17 classifier trainings affordable on a CPU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from radseal.diagnosis.metrics import classification_metrics


class PaperClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(4),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of PNEUMONIA for (N, 1, 200, 200) images in [0, 1]."""
        return self.head(self.features(x)).squeeze(1)


@torch.no_grad()
def predict_proba(model: PaperClassifier, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(torch.from_numpy(x[i : i + batch_size]).unsqueeze(1))).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_classifier(x: np.ndarray, y: np.ndarray, epochs: int = 20, batch_size: int = 16, seed: int = 0, lr: float = 1e-3) -> PaperClassifier:
    """Adam + binary cross-entropy with light augmentation (horizontal flips)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PaperClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossf = nn.BCEWithLogitsLoss()
    yt = torch.from_numpy(y.astype(np.float32))
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            xb = torch.from_numpy(x[idx]).unsqueeze(1)
            if rng.random() < 0.5:
                xb = xb.flip(-1)
            opt.zero_grad(set_to_none=True)
            lossf(model(xb), yt[idx]).backward()
            opt.step()
    return model


def fit_and_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, epochs: int = 20, seed: int = 0) -> dict:
    """Train on one set, score on it (``train``) and on the held-apart test set (``test``)."""
    model = train_classifier(x_train, y_train, epochs=epochs, seed=seed)
    return {
        "train": classification_metrics(y_train, predict_proba(model, x_train)),
        "test": classification_metrics(y_test, predict_proba(model, x_test)),
        "epochs": epochs,
    }
