"""Diagnostic fidelity: classifier metrics and their plots."""

from radseal.diagnosis.metrics import bootstrap_ci, classification_metrics

__all__ = ["bootstrap_ci", "classification_metrics"]
