"""The shipped pneumonia classifier: loading, prediction, its view, training, and (with the data) its test score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radseal.diagnosis.classifier import Classifier, ClassifierError, Prediction
from radseal.diagnosis.model import PneumoniaNet
from radseal.diagnosis.train import TrainConfig, split_holdout, train_classifier
from radseal.diagnosis.view import center_square, classifier_view
from radseal.image import Image
from radseal.io import read_image, write_png
from radseal.io.dataset import Sample


@pytest.fixture(scope="module")
def clf():
    return Classifier.pretrained()


def test_pretrained_predicts_on_a_real_radiograph(clf, rg1_path):
    img = read_image(rg1_path)  # 15-bit MONOCHROME1 chest CR
    pred = clf.predict(img)
    assert isinstance(pred, Prediction)
    assert 0.0 <= pred.probability <= 1.0
    assert pred.label == int(pred.probability >= clf.threshold)
    assert pred.name in ("NORMAL", "PNEUMONIA")


def test_predict_batch_matches_predict(clf, rg1_path, rg3_path):
    imgs = [read_image(rg1_path), read_image(rg3_path)]
    batch = clf.predict_batch(imgs)
    single = [clf.predict(i) for i in imgs]
    assert [b.label for b in batch] == [s.label for s in single]
    assert np.allclose([b.probability for b in batch], [s.probability for s in single], atol=1e-5)


def test_view_is_a_centre_crop_so_aspect_cannot_leak():
    x = np.zeros((100, 160), np.uint8)
    x[:, 30:130] = 200  # the centred 100x100 square is bright, the sides dark
    img = Image(x, bits_stored=8)
    sq = center_square(img)
    assert sq.shape == (100, 100) and sq.pixels.min() == 200
    v = classifier_view(img, 32)
    assert v.shape == (32, 32) and v.min() > 0.7  # no padding band anywhere
    # Two images that differ only outside the centre square look the same to the classifier.
    y = x.copy()
    y[:, :30] = 90
    assert np.array_equal(classifier_view(img, 32), classifier_view(Image(y, bits_stored=8), 32))


def test_monochrome1_is_seen_bright_dense():
    x = np.full((40, 40), 100, np.uint16)
    m2 = classifier_view(Image(x, bits_stored=10, photometric="MONOCHROME2"), 16)
    m1 = classifier_view(Image(1023 - x, bits_stored=10, photometric="MONOCHROME1"), 16)
    assert np.allclose(m1, m2)


def test_save_load_round_trip_float16(tmp_path, clf):
    path = clf.save(tmp_path / "w.pt")
    again = Classifier.load(path)
    views = np.random.default_rng(0).random((3, clf.size, clf.size), dtype=np.float32)
    assert np.allclose(again.probabilities(views), clf.probabilities(views), atol=1e-6)
    assert path.stat().st_size < 2_000_000


def test_bad_weights_are_a_clear_error(tmp_path):
    with pytest.raises(ClassifierError, match="not found"):
        Classifier.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ClassifierError, match="not readable"):
        Classifier.load(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ClassifierError, match="not a radseal-classifier"):
        Classifier.load(tmp_path / "other.pt")


def test_shipped_training_record_is_complete():
    from radseal.diagnosis.classifier import WEIGHTS_DIR

    info = json.loads((WEIGHTS_DIR / "training.json").read_text())
    for key in ("command", "data", "train_images", "heldout_images", "config", "selected_epoch", "seconds", "history"):
        assert key in info
    assert info["command"].startswith("radseal train-classifier")
    assert "test" not in {f.split("/")[0] for f in info["heldout_files"]}  # selection never used the test split
    assert len(info["history"]) == info["config"]["epochs"]


def test_holdout_split_is_stratified_and_disjoint(tmp_path):
    samples = [Sample(tmp_path / f"{lab}_{i}", lab, "train") for lab in (0, 1) for i in range(10)]
    fit, held = split_holdout(samples, 0.2, seed=0)
    assert len(held) == 4 and sorted(s.label for s in held) == [0, 0, 1, 1]
    assert not {s.path for s in fit} & {s.path for s in held}
    assert split_holdout(samples, 0.2, seed=0) == (fit, held)


def test_training_runs_end_to_end_on_a_tiny_set(tmp_path):
    rng = np.random.default_rng(0)
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        d = tmp_path / "data" / "train" / cls
        d.mkdir(parents=True)
        for i in range(5):
            x = rng.integers(0, 120, (60 + 7 * i, 50), dtype=np.uint8) + (100 if label else 0)
            write_png(Image(x.astype(np.uint8), bits_stored=8), d / f"{i}.png")
    result = train_classifier(tmp_path / "data", tmp_path / "w", TrainConfig(epochs=2, size=64, batch_size=4, width=4), progress=False, command="test")
    assert result.weights_path.is_file()
    info = json.loads((tmp_path / "w" / "training.json").read_text())
    assert info["train_images"] == 8 and info["heldout_images"] == 2
    assert len(info["history"]) == 2 and info["command"] == "test"
    loaded = Classifier.load(result.weights_path)
    assert loaded.size == 64 and isinstance(loaded.net, PneumoniaNet)


@pytest.mark.slow
@pytest.mark.shared_data
def test_score_on_the_test_split(clf, cxr_dir):
    """A regression floor for the shipped weights on the untouched test split (measured: docs/diagnosis.md)."""
    from radseal.diagnosis.metrics import classification_metrics
    from radseal.diagnosis.view import load_views
    from radseal.io.dataset import list_samples

    x, y = load_views(list_samples(cxr_dir, "test"), clf.size)
    m = classification_metrics(y, clf.probabilities(x))
    assert m["auc"] > 0.9
    assert m["accuracy"] > 0.7
