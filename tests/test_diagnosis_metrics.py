"""Classifier metrics against small cases computed by hand."""

from __future__ import annotations

import pytest

from radseal.diagnosis.metrics import MetricsError, bootstrap_ci, classification_metrics
from radseal.diagnosis.plots import plot_confusion, plot_roc

# y:    0    0    1    1    1
# p:  0.1  0.6  0.4  0.8  0.9   -> predicted at 0.5: 0 1 0 1 1
# tn=1 fp=1 fn=1 tp=2; accuracy 3/5; precision 2/3; recall 2/3; F1 2/3.
# AUC = P(score_pos > score_neg) over 3x2 pairs: 0.4 beats 0.1 only; 0.8, 0.9 beat both -> 5/6.
Y = [0, 0, 1, 1, 1]
P = [0.1, 0.6, 0.4, 0.8, 0.9]


def test_hand_computed_case():
    m = classification_metrics(Y, P)
    assert m["n"] == 5
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(5 / 6)
    fpr, tpr = m["roc"]["fpr"], m["roc"]["tpr"]
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert all(a <= b for a, b in zip(fpr, fpr[1:])) and all(a <= b for a, b in zip(tpr, tpr[1:]))


def test_threshold_moves_predictions():
    # At 0.35 every score but 0.1 is positive: tn=1 fp=1 fn=0 tp=3.
    m = classification_metrics(Y, P, threshold=0.35)
    assert m["confusion_matrix"] == [[1, 1], [0, 3]]
    assert m["recall"] == 1.0
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["auc"] == pytest.approx(5 / 6)  # threshold-free


def test_single_class_has_no_auc_and_no_division_error():
    m = classification_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert m["auc"] is None and m["roc"] is None
    assert m["confusion_matrix"] == [[2, 1], [0, 0]]
    assert m["precision"] == 0.0 and m["recall"] == 0.0


@pytest.mark.parametrize(
    "y, p, words",
    [([0, 1], [0.5], "2 labels but 1 scores"), ([0, 2], [0.1, 0.9], "labels must be 0"), ([], [], "no samples"), ([0, 1], [0.1, float("nan")], "NaN")],
)
def test_bad_inputs_raise_one_line_errors(y, p, words):
    with pytest.raises(MetricsError, match=words):
        classification_metrics(y, p)


def test_bootstrap_ci_brackets_point_and_is_reproducible():
    y = [0, 1] * 20
    p = [0.3 + 0.4 * v + 0.05 * (i % 5) for i, v in enumerate(y)]
    a = bootstrap_ci(y, p, "accuracy", n=200, seed=1)
    b = bootstrap_ci(y, p, "accuracy", n=200, seed=1)
    assert a == b
    point, low, high = a
    assert low <= point <= high
    # A perfectly separating scorer has AUC 1 in every resample.
    assert bootstrap_ci(y, [float(v) for v in y], "auc", n=50) == (1.0, 1.0, 1.0)


def test_plots_write_png(tmp_path):
    m = classification_metrics(Y, P)
    roc = plot_roc({"toy": (m["roc"]["fpr"], m["roc"]["tpr"], m["auc"])}, tmp_path / "roc.png")
    cm = plot_confusion(m["confusion_matrix"], ["NORMAL", "PNEUMONIA"], tmp_path / "cm.png", "toy")
    for path in (roc, cm):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.part"))
