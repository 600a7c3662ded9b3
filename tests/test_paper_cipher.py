"""The paper's square-add cipher and its breaks (radseal.paper.insecure_cipher)."""

from __future__ import annotations

import torch

from radseal.paper import insecure_cipher as pc
from radseal.paper.autoencoder import AutoencoderConfig, PaperAutoencoder


def _images(n: int, seed: int, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g, dtype=torch.float64)


def _encoder(activation: str) -> PaperAutoencoder:
    torch.manual_seed(0)
    return PaperAutoencoder(AutoencoderConfig(depth=3, activation=activation)).double().eval()


@torch.no_grad()
def test_decrypt_inverts_encrypt_for_a_relu_encoder():
    model = _encoder("relu")
    z, k = model.encode(_images(2, 1)), model.encode(_images(1, 2))
    assert (z >= 0).all()
    assert torch.allclose(pc.decrypt(pc.encrypt(z, k), k), z, atol=1e-6)


@torch.no_grad()
def test_known_plaintext_recovers_key_and_decrypts_later_messages():
    model = _encoder("relu")
    key = model.encode(_images(1, 99))
    # The attacker sees one image the device sent (e.g. a public test phantom) and its ciphertext.
    known_z = model.encode(_images(1, 3))
    known_e = pc.encrypt(known_z, key)
    key_square = pc.recover_key_square(known_z, known_e)
    assert torch.allclose(key_square, key.square(), atol=1e-9)
    # Every later message now decrypts without the key image.
    later = _images(4, 4)
    later_e = pc.encrypt(model.encode(later), key)
    stolen = model.decode(pc.decrypt_with_key_square(later_e, key_square))
    legit = model.decode(pc.decrypt(later_e, key))
    assert torch.allclose(stolen, legit, atol=1e-6)


@torch.no_grad()
def test_ciphertext_difference_leaks_without_any_key():
    model = _encoder("relu")
    key = model.encode(_images(1, 7))
    z1, z2 = model.encode(_images(1, 8)), model.encode(_images(1, 9))
    e1, e2 = pc.encrypt(z1, key), pc.encrypt(z2, key)
    leak = pc.keyless_difference(e1, e2)
    assert torch.allclose(leak, z1.square() - z2.square(), atol=1e-9)
    # Consequences: identical images give identical ciphertexts (deterministic), and knowing
    # one plaintext reveals the other's latent from the difference alone.
    assert torch.equal(pc.encrypt(z1, key), e1)
    z2_recovered = (z1.square() - leak).clamp_min(0).sqrt()
    assert torch.allclose(z2_recovered, z2, atol=1e-6)


@torch.no_grad()
def test_sign_of_latent_is_lost_when_encoder_allows_negatives():
    model = _encoder("tanh")  # tanh, like any activation with negative outputs
    z, key = model.encode(_images(1, 11)), model.encode(_images(1, 12))
    assert (z < 0).any()
    z_back = pc.decrypt(pc.encrypt(z, key), key)
    assert torch.allclose(z_back, z.abs(), atol=1e-6)
    assert not torch.allclose(z_back, z, atol=1e-3)
    # The decoded image therefore differs from what the decoder makes of the true latent.
    assert (model.decode(z_back) - model.decode(z)).abs().max() > 1e-3
