"""Binary classification metrics (normal = 0 vs pneumonia = 1).

One function returns everything a report needs, as plain JSON-ready Python
values, so every classifier in radseal (the paper's and the shipped one) is
scored the same way. Computation is delegated to scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from radseal.errors import RadsealError
from radseal.extras import require

skm = require("sklearn.metrics", "evaluate", "classifier metrics")


class MetricsError(RadsealError):
    """Labels or scores that cannot be scored (wrong shape, values or length)."""


def _check(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise MetricsError(f"{y.size} labels but {p.size} scores")
    if y.size == 0:
        raise MetricsError("no samples to score")
    if not np.isin(y, (0, 1)).all():
        raise MetricsError("labels must be 0 (normal) or 1 (pneumonia)")
    if not np.isfinite(p).all():
        raise MetricsError("scores contain NaN or infinity")
    return y.astype(np.int64), p


def classification_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, AUC, confusion matrix and ROC curve.

    ``prob`` is the score for class 1; a sample is predicted positive when
    ``prob >= threshold``. The confusion matrix is ``[[tn, fp], [fn, tp]]``.
    AUC (and the ROC curve) are ``None`` when only one class is present, since
    they are undefined there. Precision/recall/F1 with an empty denominator are 0.
    """
    y, p = _check(y_true, prob)
    pred = (p >= threshold).astype(np.int64)
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    both_classes = len(np.unique(y)) == 2
    if both_classes:
        fpr, tpr, _ = skm.roc_curve(y, p)
        auc: float | None = float(skm.roc_auc_score(y, p))
        roc = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    else:
        auc, roc = None, None
    return {
        "n": int(y.size),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "auc": auc,
        "confusion_matrix": cm.astype(int).tolist(),
        "roc": roc,
    }


def _metric_fn(metric: str | Callable) -> Callable[[np.ndarray, np.ndarray], float]:
    if callable(metric):
        return metric
    if metric == "auc":
        return lambda y, p: float(skm.roc_auc_score(y, p))
    if metric in ("accuracy", "precision", "recall", "f1"):
        return lambda y, p: classification_metrics(y, p)[metric]
    raise MetricsError(f"unknown metric '{metric}' (use accuracy, precision, recall, f1, auc or a callable)")


def bootstrap_ci(
    y_true, prob, metric: str | Callable = "auc", n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval: ``(point, low, high)``.

    Resamples cases with replacement ``n`` times (seeded, so reproducible).
    ``metric`` is a name from :func:`classification_metrics` or a callable
    ``f(y_true, prob) -> float``. Resamples holding a single class are
    skipped for AUC-like metrics that are undefined there.
    """
    y, p = _check(y_true, prob)
    fn = _metric_fn(metric)
    point = float(fn(y, p))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        idx = rng.integers(0, y.size, y.size)
        yb = y[idx]
        if len(np.unique(yb)) < 2:
            continue
        stats.append(float(fn(yb, p[idx])))
    if not stats:
        raise MetricsError("every bootstrap resample held a single class; need both classes")
    alpha = (1.0 - level) / 2
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return point, float(low), float(high)
