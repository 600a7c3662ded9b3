"""Diagnostic fidelity: the shipped pneumonia classifier, classifier metrics and plots.

``Classifier`` and ``Prediction`` load lazily (they import torch), so the
metrics can be used without paying for it.
"""

from radseal.diagnosis.metrics import bootstrap_ci, classification_metrics

__all__ = ["Classifier", "Prediction", "bootstrap_ci", "classification_metrics"]


def __getattr__(name: str):
    if name in ("Classifier", "Prediction"):
        from radseal.diagnosis import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'radseal.diagnosis' has no attribute {name!r}")
