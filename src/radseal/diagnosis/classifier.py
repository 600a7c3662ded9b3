"""The shipped pneumonia classifier: load weights, predict on images.

    clf = Classifier.pretrained()
    pred = clf.predict(img)          # Prediction(probability=0.93, label=1)
    preds = clf.predict_batch(imgs)

The classifier sees :func:`radseal.diagnosis.view.classifier_view` of an
image (centred square crop at a fixed size), so it can be run on a
reconstruction at any resolution exactly as on the original.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radseal.diagnosis.model import PneumoniaNet
from radseal.diagnosis.view import DEFAULT_SIZE, classifier_view
from radseal.errors import RadsealError
from radseal.image import Image

LABELS = ("NORMAL", "PNEUMONIA")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "classifier"
WEIGHTS_FILE = "pneumonia_cnn.pt"
FORMAT = "radseal-classifier-1"


class ClassifierError(RadsealError):
    """Classifier weights missing, unreadable or of an unknown format."""


@dataclass(frozen=True)
class Prediction:
    """Probability of pneumonia and the label it implies (1 when >= threshold)."""

    probability: float
    label: int

    @property
    def name(self) -> str:
        return LABELS[self.label]

    def to_dict(self) -> dict:
        return {"probability": self.probability, "label": self.label, "name": self.name}


class Classifier:
    """A :class:`PneumoniaNet` with its input size and decision threshold."""

    def __init__(self, net: PneumoniaNet, size: int = DEFAULT_SIZE, threshold: float = 0.5, info: dict | None = None) -> None:
        self.net = net.eval()
        self.size = int(size)
        self.threshold = float(threshold)
        self.info = dict(info or {})

    # -- weights -------------------------------------------------------
    @classmethod
    def pretrained(cls) -> "Classifier":
        """The weights shipped in ``radseal/weights/classifier`` (offline)."""
        return _pretrained()

    @classmethod
    def load(cls, path: str | Path) -> "Classifier":
        path = Path(path)
        if not path.is_file():
            raise ClassifierError(f"{path}: classifier weights not found")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise ClassifierError(f"{path}: not readable as classifier weights ({type(exc).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ClassifierError(f"{path}: not a {FORMAT} weights file")
        net = PneumoniaNet(**blob["config"])
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()}
        net.load_state_dict(state)
        return cls(net, size=blob["size"], threshold=blob["threshold"], info=blob.get("info", {}))

    def save(self, path: str | Path) -> Path:
        """Write float16 weights atomically (half the bytes, same decisions)."""
        import io as _io

        from radseal.io.files import atomic_write

        state = {k: (v.half() if v.is_floating_point() else v) for k, v in self.net.state_dict().items()}
        blob = {"format": FORMAT, "config": self.net.config, "size": self.size, "threshold": self.threshold, "state_dict": state, "info": self.info}
        buf = _io.BytesIO()
        torch.save(blob, buf)
        return atomic_write(path, buf.getvalue(), mode=0o644)

    # -- prediction ----------------------------------------------------
    def view(self, img: Image) -> np.ndarray:
        return classifier_view(img, self.size)

    @torch.no_grad()
    def probabilities(self, views: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Pneumonia probability for each ``(size, size)`` view in ``views``."""
        views = np.asarray(views, dtype=np.float32)
        if views.ndim != 3 or views.shape[1:] != (self.size, self.size):
            raise ClassifierError(f"views must be (N, {self.size}, {self.size}), got {views.shape}")
        out = []
        for i in range(0, len(views), batch_size):
            x = torch.from_numpy(views[i : i + batch_size]).unsqueeze(1)
            out.append(torch.sigmoid(self.net(x)).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def to_prediction(self, probability: float) -> Prediction:
        p = float(probability)
        return Prediction(probability=p, label=int(p >= self.threshold))

    def predict(self, img: Image) -> Prediction:
        return self.to_prediction(self.probabilities(self.view(img)[None])[0])

    def predict_batch(self, imgs: Iterable[Image] | Sequence[Image], batch_size: int = 32) -> list[Prediction]:
        """Predictions for many images; views are made one image at a time to bound memory."""
        preds: list[Prediction] = []
        chunk: list[np.ndarray] = []
        for img in imgs:
            chunk.append(self.view(img))
            if len(chunk) == batch_size:
                preds += [self.to_prediction(p) for p in self.probabilities(np.stack(chunk))]
                chunk = []
        if chunk:
            preds += [self.to_prediction(p) for p in self.probabilities(np.stack(chunk))]
        return preds


@functools.lru_cache(maxsize=1)
def _pretrained() -> Classifier:
    path = WEIGHTS_DIR / WEIGHTS_FILE
    if not path.is_file():
        raise ClassifierError(f"{path}: shipped classifier weights are missing; run `radseal train-classifier`")
    return Classifier.load(path)
