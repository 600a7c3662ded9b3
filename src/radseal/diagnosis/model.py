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

import numpy as np

from radseal.extras import require

torch = require("torch", "train", "training the pneumonia classifier")
nn = torch.nn


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


def numpy_state(net: PneumoniaNet) -> dict[str, np.ndarray]:
    """The network's tensors by name, as numpy arrays (what the shipped ``.npz`` holds)."""
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def from_numpy_state(state: dict[str, np.ndarray], config: dict | None = None) -> PneumoniaNet:
    """A :class:`PneumoniaNet` in eval mode with ``state`` (float tensors loaded as float32)."""
    net = PneumoniaNet(**(config or {}))
    tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating) else np.asarray(v))
               for k, v in state.items()}
    net.load_state_dict(tensors)
    return net.eval()


@torch.no_grad()
def torch_probabilities(net: PneumoniaNet, views: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pneumonia probability of each ``(S, S)`` view with the PyTorch network (training, reference)."""
    views = np.asarray(views, dtype=np.float32)
    out = []
    for i in range(0, len(views), batch_size):
        x = torch.from_numpy(views[i : i + batch_size]).unsqueeze(1)
        out.append(torch.sigmoid(net(x)).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
