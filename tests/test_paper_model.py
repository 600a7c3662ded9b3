"""Paper autoencoder shapes, weights I/O, and the sweep's permutation set."""

from __future__ import annotations

import pytest
import torch

from radseal.paper.autoencoder import AutoencoderConfig, PaperAutoencoder, PaperModelError, load_autoencoder, save_autoencoder, shipped_weights_path
from radseal.paper.sweep import PAPER_NAMED, permutations
from radseal.paper.training import LOSSES


@pytest.mark.parametrize("depth, channels", [(3, 128), (2, 64)])
def test_shapes_follow_the_paper(depth, channels):
    model = PaperAutoencoder(AutoencoderConfig(depth=depth)).eval()
    x = torch.rand(1, 1, 200, 200)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
    assert tuple(z.shape) == (1, channels, 50, 50) == (1, *model.latent_shape())
    assert tuple(y.shape) == (1, 1, 200, 200)
    assert 0 <= float(y.min()) and float(y.max()) <= 1  # sigmoid output


def test_save_load_roundtrip(tmp_path):
    model = PaperAutoencoder(AutoencoderConfig(depth=2, activation="tanh"))
    path = save_autoencoder(model, tmp_path / "ae.pt", extra={"note": "x"})
    loaded, meta = load_autoencoder(path)
    assert loaded.config == model.config and meta == {"note": "x"}
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=5e-3)  # stored as float16


def test_bad_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PaperModelError, match="bad.pt"):
        load_autoencoder(bad)
    with pytest.raises(PaperModelError, match="not found"):
        load_autoencoder(tmp_path / "missing.pt")
    with pytest.raises(PaperModelError, match="depth"):
        AutoencoderConfig(depth=4)


def test_shipped_weights_load():
    model, meta = load_autoencoder(shipped_weights_path())
    assert model.config == AutoencoderConfig(depth=3, activation="relu")
    assert "train" in meta["data"] and "test/ never used" in meta["data"]


def test_sixteen_permutations_cover_the_papers_combinations():
    perms = permutations()
    keys = {(p.loss, p.optimizer, p.depth, p.activation) for p in perms}
    assert len(perms) == len(keys) == 16
    assert PAPER_NAMED <= keys
    assert sum(p.paper_named for p in perms) == len(PAPER_NAMED) == 5


def test_keras_losses_on_known_values():
    p, t = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    assert float(LOSSES["mse"](p, t)) == pytest.approx(0.5)
    assert float(LOSSES["hinge"](p, t)) == pytest.approx(0.5)  # mean(max(1 - t*p, 0)) = (1 + 0) / 2
    assert float(LOSSES["msle"](p, t)) == pytest.approx(torch.log(torch.tensor(2.0)).item() ** 2 / 2)
