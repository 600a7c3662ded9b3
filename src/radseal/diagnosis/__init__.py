"""Diagnostic fidelity: the shipped pneumonia classifier, classifier metrics and plots.

Everything loads lazily: the classifier runs in numpy (core install), the
metrics need scikit-learn and the plots matplotlib (``radseal[evaluate]``).
"""

__all__ = ["Classifier", "Prediction", "bootstrap_ci", "classification_metrics"]

_HOMES = {
    "Classifier": "radseal.diagnosis.classifier",
    "Prediction": "radseal.diagnosis.classifier",
    "bootstrap_ci": "radseal.diagnosis.metrics",
    "classification_metrics": "radseal.diagnosis.metrics",
}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'radseal.diagnosis' has no attribute {name!r}")
