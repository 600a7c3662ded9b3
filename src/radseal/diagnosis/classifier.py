"""The shipped pneumonia classifier: load weights, predict on images (numpy only, no PyTorch).

    clf = Classifier.pretrained()
    pred = clf.predict(img)          # Prediction(probability=0.93, label=1)
    preds = clf.predict_batch(imgs)

The classifier sees :func:`radseal.diagnosis.view.classifier_view` of an
image (centred square crop at a fixed size), so it can be run on a
reconstruction at any resolution exactly as on the original.

Weights are one ``.npz`` (loaded with ``allow_pickle=False``, so a weights
file cannot run code): ``state.<name>`` holds the tensors of
:class:`radseal.diagnosis.model.PneumoniaNet` by their PyTorch names (float16),
``meta`` the format, architecture, input size, threshold and training facts
as UTF-8 JSON. Training (``radseal[train]``) writes this file; inference runs
:class:`radseal.diagnosis.inference.PneumoniaNetNumpy`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radseal.diagnosis.inference import PneumoniaNetNumpy
from radseal.diagnosis.view import DEFAULT_SIZE, classifier_view
from radseal.errors import RadsealError
from radseal.image import Image

LABELS = ("NORMAL", "PNEUMONIA")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "classifier"
WEIGHTS_FILE = "pneumonia_cnn.npz"
FORMAT = "radseal-classifier-npz-1"
STATE_PREFIX = "state."


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
    """The pneumonia network (numpy) with its input size and decision threshold."""

    def __init__(self, state: dict[str, np.ndarray], config: dict | None = None, size: int = DEFAULT_SIZE,
                 threshold: float = 0.5, info: dict | None = None) -> None:
        try:
            self.net = PneumoniaNetNumpy(state)
        except ValueError as exc:
            raise ClassifierError(f"classifier weights do not fit the network: {exc}") from None
        self.state = dict(state)
        self.config = dict(config or {})
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
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception as exc:  # zipfile, numpy and OS errors for a bad file
            raise ClassifierError(f"{path}: not readable as classifier weights ({type(exc).__name__})") from None
        try:
            meta = json.loads(bytes(arrays["meta"]).decode("utf-8"))
        except (KeyError, UnicodeDecodeError, ValueError, TypeError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ClassifierError(f"{path}: not a {FORMAT} weights file")
        state = {k[len(STATE_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
        try:
            return cls(state, config=meta.get("config"), size=meta["size"], threshold=meta["threshold"], info=meta.get("info", {}))
        except ClassifierError as exc:
            raise ClassifierError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ClassifierError(f"{path}: classifier weights lack or garble {exc}") from None

    def save(self, path: str | Path) -> Path:
        """Write the weights (float16, as shipped) atomically."""
        return save_weights(path, self.state, self.config, self.size, self.threshold, self.info)

    # -- prediction ----------------------------------------------------
    def view(self, img: Image) -> np.ndarray:
        return classifier_view(img, self.size)

    def probabilities(self, views: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Pneumonia probability for each ``(size, size)`` view in ``views``."""
        views = np.asarray(views, dtype=np.float32)
        if views.ndim != 3 or views.shape[1:] != (self.size, self.size):
            raise ClassifierError(f"views must be (N, {self.size}, {self.size}), got {views.shape}")
        out = [self.net(views[i : i + batch_size]) for i in range(0, len(views), batch_size)]
        logits = np.concatenate(out) if out else np.zeros(0)
        return 1.0 / (1.0 + np.exp(-logits))

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


def save_weights(path: str | Path, state: dict[str, np.ndarray], config: dict, size: int, threshold: float,
                 info: dict | None = None) -> Path:
    """Write a classifier ``.npz``: float tensors as float16 (half the bytes, same decisions)."""
    import io as _io

    from radseal.io.files import atomic_write

    arrays = {}
    for k, v in state.items():
        v = np.asarray(v)
        arrays[STATE_PREFIX + k] = v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v
    meta = {"format": FORMAT, "config": dict(config), "size": int(size), "threshold": float(threshold), "info": dict(info or {})}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(path, buf.getvalue(), mode=0o644)
