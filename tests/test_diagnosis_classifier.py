"""The shipped pneumonia classifier: loading, prediction (numpy), agreement with the PyTorch
network, its view, training, and (with the data) its test score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radseal.diagnosis.classifier import Classifier, ClassifierError, Prediction
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
    path = clf.save(tmp_path / "w.npz")
    again = Classifier.load(path)
    for k, v in clf.state.items():
        assert again.state[k].dtype == v.dtype and np.array_equal(again.state[k], v)
    views = np.random.default_rng(0).random((3, clf.size, clf.size), dtype=np.float32)
    assert np.array_equal(again.probabilities(views), clf.probabilities(views))
    assert path.stat().st_size < 2_000_000


def test_bad_weights_are_a_clear_error(tmp_path, clf):
    with pytest.raises(ClassifierError, match="not found"):
        Classifier.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a weights file")
    with pytest.raises(ClassifierError, match="not readable"):
        Classifier.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", meta=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    with pytest.raises(ClassifierError, match="not a radseal-classifier"):
        Classifier.load(tmp_path / "other.npz")
    # Pickled objects are refused: loading weights never runs code.
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": "radseal-classifier-npz-1"}], dtype=object))
    with pytest.raises(ClassifierError, match="not readable|not a radseal-classifier"):
        Classifier.load(tmp_path / "pickled.npz")
    # A tensor of the wrong shape is named, not a numpy traceback.
    state = dict(clf.state)
    state["features.5.0.weight"] = state["features.5.0.weight"][:, :8]
    from radseal.diagnosis.classifier import save_weights

    save_weights(tmp_path / "bent.npz", state, clf.config, clf.size, clf.threshold)
    with pytest.raises(ClassifierError, match="do not fit the network"):
        Classifier.load(tmp_path / "bent.npz")
    del state["head.1.bias"]
    save_weights(tmp_path / "short.npz", state, clf.config, clf.size, clf.threshold)
    with pytest.raises(ClassifierError, match="head.1.bias"):
        Classifier.load(tmp_path / "short.npz")


# -- the numpy network against the PyTorch network with the same weights ---------------------
def _test_views(size: int, rg1_path, rg3_path) -> np.ndarray:
    """Views a classifier really sees (two radiographs, flipped and darkened) plus smooth synthetic ones."""
    from radseal.io import read_image

    real = [classifier_view(read_image(p), size) for p in (rg1_path, rg3_path)]
    real += [v[:, ::-1] for v in real] + [v**2 for v in real]
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    synthetic = []
    for _ in range(6):
        a, b, c = rng.uniform(-1, 1, 3)
        blob = np.exp(-((yy - rng.uniform(0.2, 0.8)) ** 2 + (xx - rng.uniform(0.2, 0.8)) ** 2) / rng.uniform(0.01, 0.1))
        v = 0.5 + 0.2 * (a * yy + b * xx) + c * 0.3 * blob + 0.05 * rng.standard_normal((size, size))
        synthetic.append(np.clip(v, 0, 1))
    synthetic.append(np.full((size, size), 0.4))  # a flat view: std floored, no division by zero
    return np.stack(real + synthetic).astype(np.float32)


def _torch_reference(clf: Classifier):
    pytest.importorskip("torch", reason="the PyTorch reference needs radseal[train]")
    from radseal.diagnosis.model import from_numpy_state

    return from_numpy_state(clf.state, clf.config)


def test_numpy_network_matches_pytorch_on_generated_views(clf, rg1_path, rg3_path):
    import torch

    from radseal.diagnosis.model import torch_probabilities

    net = _torch_reference(clf)
    views = _test_views(clf.size, rg1_path, rg3_path)
    p_np = clf.probabilities(views)
    p_torch = torch_probabilities(net, views)
    assert np.abs(p_np - p_torch).max() < 1e-4
    # Logits too (probabilities near 0 or 1 would hide a difference).
    with torch.no_grad():
        logits_torch = net(torch.from_numpy(views).unsqueeze(1)).double().numpy()
    assert np.abs(clf.net(views) - logits_torch).max() < 1e-3
    assert ((p_np > 0.05) & (p_np < 0.95)).sum() >= 2  # some views far from saturation, where a difference shows


def test_numpy_network_matches_pytorch_at_other_sizes_and_widths():
    """An untrained net of another width and input size (odd feature maps, floor pooling) agrees too."""
    pytest.importorskip("torch", reason="the PyTorch reference needs radseal[train]")
    import torch

    from radseal.diagnosis.model import PneumoniaNet, numpy_state, torch_probabilities

    torch.manual_seed(0)
    net = PneumoniaNet(width=4)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    clf = Classifier(numpy_state(net), net.config, size=100)
    views = np.random.default_rng(2).random((5, 100, 100), dtype=np.float32)
    assert np.abs(clf.probabilities(views) - torch_probabilities(net, views)).max() < 1e-5


@pytest.mark.slow
@pytest.mark.shared_data
def test_numpy_network_matches_pytorch_on_all_test_images(clf, cxr_dir):
    """All 126 images of the untouched test split: the numpy probabilities are PyTorch's within 1e-4."""
    from radseal.diagnosis.model import torch_probabilities
    from radseal.diagnosis.view import load_views
    from radseal.io.dataset import list_samples

    net = _torch_reference(clf)
    samples = list_samples(cxr_dir, "test")
    assert len(samples) == 126
    x, _ = load_views(samples, clf.size)
    diff = np.abs(clf.probabilities(x) - torch_probabilities(net, x))
    assert diff.max() < 1e-4, f"largest difference {diff.max():.2e} at {samples[int(diff.argmax())].path.name}"


def test_shipped_training_record_is_complete():
    from radseal.diagnosis.classifier import WEIGHTS_DIR

    info = json.loads((WEIGHTS_DIR / "training.json").read_text())
    for key in ("command", "data", "train_images", "heldout_images", "config", "selected_epoch", "seconds", "history"):
        assert key in info
    assert info["command"].startswith("radseal train-classifier")
    assert "test" not in {f.split("/")[0] for f in info["heldout_files"]}  # selection never used the test split
    assert len(info["history"]) == info["config"]["epochs"]


def test_shipped_weights_record_their_export():
    from radseal.diagnosis.classifier import WEIGHTS_DIR, WEIGHTS_FILE
    from radseal.codec.weights import sha256_file

    info = json.loads((WEIGHTS_DIR / "training.json").read_text())
    assert info["weights_file"] == WEIGHTS_FILE
    assert info["weights_sha256"] == sha256_file(WEIGHTS_DIR / WEIGHTS_FILE)
    assert info["export"]["command"].startswith("python -m radseal.diagnosis.export ")
    assert not info["data"].startswith("/")  # no path of the machine that trained it


def test_holdout_split_is_stratified_and_disjoint(tmp_path):
    pytest.importorskip("torch", reason="training needs radseal[train]")
    from radseal.diagnosis.train import split_holdout

    samples = [Sample(tmp_path / f"{lab}_{i}", lab, "train") for lab in (0, 1) for i in range(10)]
    fit, held = split_holdout(samples, 0.2, seed=0)
    assert len(held) == 4 and sorted(s.label for s in held) == [0, 0, 1, 1]
    assert not {s.path for s in fit} & {s.path for s in held}
    assert split_holdout(samples, 0.2, seed=0) == (fit, held)


def test_training_runs_end_to_end_on_a_tiny_set(tmp_path):
    pytest.importorskip("torch", reason="training needs radseal[train]")
    from radseal.diagnosis.train import TrainConfig, train_classifier

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
    assert info["data"] == "data"  # outside the checkout: its name, not an absolute path of this machine
    assert result.weights_path.suffix == ".npz"
    loaded = Classifier.load(result.weights_path)
    assert loaded.size == 64 and loaded.config["width"] == 4
    # The numpy inference of the written weights reproduces what training measured with PyTorch.
    assert info["heldout_shipped_weights"]["auc"] == pytest.approx(info["heldout_at_selected_epoch"]["val_auc"], abs=0.05)


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


def test_export_from_pytorch_weights_is_exact_and_refuses_its_input(tmp_path, clf):
    """The one-time converter from the old PyTorch file: every tensor bit for bit, same predictions."""
    torch = pytest.importorskip("torch", reason="reading a .pt needs radseal[train]")
    from radseal.diagnosis.export import OLD_FORMAT, export_pt, main

    state = {k: torch.from_numpy(np.array(v)) for k, v in clf.state.items()}
    blob = {"format": OLD_FORMAT, "config": clf.config, "size": clf.size, "threshold": clf.threshold, "state_dict": state, "info": {"x": 1}}
    torch.save(blob, tmp_path / "old.pt")
    path = export_pt(tmp_path / "old.pt", tmp_path / "new.npz")
    again = Classifier.load(path)
    assert again.info == {"x": 1} and again.size == clf.size
    for k, v in clf.state.items():
        assert again.state[k].dtype == v.dtype and np.array_equal(again.state[k], v)
    views = np.random.default_rng(3).random((2, clf.size, clf.size), dtype=np.float32)
    assert np.array_equal(again.probabilities(views), clf.probabilities(views))
    before = (tmp_path / "old.pt").read_bytes()
    assert main([str(tmp_path / "old.pt"), str(tmp_path / "old.pt")]) == 2
    assert (tmp_path / "old.pt").read_bytes() == before
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ClassifierError, match="not a radseal-classifier-1"):
        export_pt(tmp_path / "other.pt", tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()
