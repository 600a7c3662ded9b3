"""The paper's square-add cipher and its breaks (radseal.paper.insecure_cipher)."""

from __future__ import annotations

import pytest
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


# --- both readings of the paper's cipher ------------------------------------------------

VARIANTS = ("squares", "square-of-sum")


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_each_variant_inverts_for_a_relu_encoder_and_computes_its_formula(variant):
    model = _encoder("relu")
    z, k = model.encode(_images(2, 1)), model.encode(_images(1, 2))
    e = pc.encrypt(z, k, variant)
    expected = z.square() + k.square() if variant == "squares" else (z + k).square()
    assert torch.equal(e, expected)
    assert torch.allclose(pc.decrypt(e, k, variant), z, atol=1e-6)
    assert not pc.sign_lost(z, k, variant).any()


def test_the_two_variants_differ():
    z, k = torch.tensor([0.5, 2.0]), torch.tensor([1.0, 3.0])
    assert pc.encrypt(z, k, "squares").tolist() == [1.25, 13.0]
    assert pc.encrypt(z, k, "square-of-sum").tolist() == [2.25, 25.0]


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_known_plaintext_breaks_each_variant(variant):
    model = _encoder("relu")
    key = model.encode(_images(1, 99))
    known_z = model.encode(_images(1, 3))
    known_e = pc.encrypt(known_z, key, variant)
    material = pc.recover_key_material(known_z, known_e, variant)
    # squares: the receiver's secret is K^2; square-of-sum: it is K itself. Both come out exactly.
    expected = key.square() if variant == "squares" else key
    assert torch.allclose(material, expected, atol=1e-9)
    later = _images(4, 4)
    later_z = model.encode(later)
    later_e = pc.encrypt(later_z, key, variant)
    stolen = pc.decrypt_with_key_material(later_e, material, variant)
    assert torch.allclose(stolen, later_z, atol=1e-6)  # the plaintext latents of every later image
    assert torch.allclose(model.decode(stolen), model.decode(pc.decrypt(later_e, key, variant)), atol=1e-6)


@torch.no_grad()
def test_square_of_sum_key_from_two_known_pairs_whatever_the_signs():
    model = _encoder("tanh")
    key = model.encode(_images(1, 21))
    z1, z2 = model.encode(_images(1, 22)), model.encode(_images(1, 23))
    e1, e2 = pc.encrypt(z1, key, "square-of-sum"), pc.encrypt(z2, key, "square-of-sum")
    # One pair: sqrt(E) - Z is the key exactly where Z + K >= 0, and the other root elsewhere.
    one = pc.recover_key_material(z1, e1, "square-of-sum")
    wrong = pc.sign_lost(z1, key, "square-of-sum")
    assert wrong.any() and (~wrong).any()
    assert torch.allclose(one[~wrong], key[~wrong], atol=1e-9)
    assert torch.allclose(one[wrong], -2 * z1[wrong] - key[wrong], atol=1e-9)
    # A second known pair settles the root.
    two = pc.recover_key_square_of_sum([z1, z2], [e1, e2])
    settled = (two - key).abs() < 1e-9
    assert settled.float().mean() > 0.999
    # The attacker then decrypts later messages exactly as the receiver does.
    later_e = pc.encrypt(model.encode(_images(2, 24)), key, "square-of-sum")
    assert torch.allclose(pc.decrypt_with_key_material(later_e, two, "square-of-sum")[..., settled[0]], pc.decrypt(later_e, key, "square-of-sum")[..., settled[0]], atol=1e-9)


@torch.no_grad()
def test_square_of_sum_ciphertexts_leak_plaintext_differences_without_a_key():
    model = _encoder("relu")
    key = model.encode(_images(1, 7))
    z1, z2 = model.encode(_images(1, 8)), model.encode(_images(1, 9))
    e1, e2 = pc.encrypt(z1, key, "square-of-sum"), pc.encrypt(z2, key, "square-of-sum")
    leak = pc.keyless_difference(e1, e2, "square-of-sum")
    assert torch.allclose(leak, z1 - z2, atol=1e-9)
    assert torch.allclose(z1 - leak, z2, atol=1e-9)  # one known plaintext gives the other's latent


@torch.no_grad()
def test_where_each_variant_loses_the_sign():
    model = _encoder("tanh")
    z = model.encode(_images(1, 31))
    key = model.encode(_images(1, 32))
    # squares: decryption returns |Z|, wrong exactly where Z < 0, whatever the key.
    back = pc.decrypt(pc.encrypt(z, key, "squares"), key, "squares")
    lost = pc.sign_lost(z, key, "squares")
    assert torch.equal(lost, z < 0) and lost.any()
    assert torch.allclose(back, z.abs(), atol=1e-6)
    assert torch.allclose(back[~lost], z[~lost], atol=1e-6)
    assert ((back[lost] - z[lost]).abs() > 1e-9).all()
    # square-of-sum: decryption returns sqrt((Z + K)^2) - K = |Z + K| - K: right where Z + K >= 0, -Z - 2K elsewhere.
    back = pc.decrypt(pc.encrypt(z, key, "square-of-sum"), key, "square-of-sum")
    lost = pc.sign_lost(z, key, "square-of-sum")
    assert torch.equal(lost, z + key < 0) and lost.any()
    assert torch.allclose(back[~lost], z[~lost], atol=1e-6)
    assert torch.allclose(back[lost], -z[lost] - 2 * key[lost], atol=1e-6)
    # With a non-negative key (a ReLU key encoder) square-of-sum loses the sign only where Z < -K:
    # a subset of where squares loses it.
    relu_key = key.clamp_min(0)
    sos = pc.sign_lost(z, relu_key, "square-of-sum")
    sq = pc.sign_lost(z, relu_key, "squares")
    assert (sos & ~sq).sum() == 0 and sos.sum() < sq.sum()


def test_unknown_variant_is_refused():
    with pytest.raises(pc.UnknownCipherVariant):
        pc.encrypt(torch.zeros(1), torch.zeros(1), "xor")
