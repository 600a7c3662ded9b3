"""The pneumonia network: a small plain CNN on one-channel square views.

A stride-2 stem with a max-pool, four stages of two conv-BN-ReLU and a
max-pool, then global average pooling: about 0.47 M parameters, so the
shipped weights stay small (float16, under 1 MB) and a 224 x 224 view takes
about 5 ms on one CPU core.
Each view is standardised per image inside ``forward`` so that global
brightness and contrast (which vary with the X-ray unit, not the disease)
carry no signal.
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class PneumoniaNet(nn.Module):
    """``(N, 1, S, S)`` views in [0, 1] -> ``(N,)`` logits of pneumonia."""

    def __init__(self, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            _stage(w, 2 * w),
            _stage(2 * w, 4 * w),
            _stage(4 * w, 6 * w),
            _stage(6 * w, 8 * w),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * w, 1))
        self.config = {"width": width, "dropout": dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        x = (x - mean) / std
        x = self.features(x)
        return self.head(x.mean(dim=(2, 3))).squeeze(1)
