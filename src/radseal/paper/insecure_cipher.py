"""HAZARDOUS: the paper's square-and-add "cipher". Broken; for reproduction only.

El-kafrawy et al. (CMES 2022, section 4, steps c-f) "encrypt" an encoder
output Z with the encoder output K of a second ("key") image::

    E = Z**2 + K**2            decryption:  Z = sqrt(E - K**2)

This is not encryption. It is deterministic, keyless relations leak
(E1 - E2 = Z1**2 - Z2**2), one known (Z, E) pair reveals K**2 and with it
every later message, and the sign of Z is destroyed, so decryption is only
correct when Z >= 0 (a ReLU encoder). The attacks are implemented below and
demonstrated by tests/test_paper_cipher.py. Nothing in radseal uses this
module to protect data; the real path is HPKE sealing (radseal.seal). The
CLI reaches it only behind ``--insecure-paper-cipher``.
"""

from __future__ import annotations

import torch

WARNING = (
    "WARNING: the paper's cipher (E = Z^2 + K^2) is NOT encryption: one known image reveals the key, "
    "differences of ciphertexts leak without any key, and the latent's sign is lost. Reproduction only."
)


def encrypt(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """E = Z^2 + K^2 (paper step d). ``k`` broadcasts over a batch of ``z``."""
    return z.square() + k.square()


def decrypt(e: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Z = sqrt(E - K^2) (paper step f); tiny negative rounding residue clamped to 0."""
    return (e - k.square()).clamp_min(0).sqrt()


# --- attacks -------------------------------------------------------------


def recover_key_square(known_z: torch.Tensor, known_e: torch.Tensor) -> torch.Tensor:
    """Known-plaintext attack: one (Z, E) pair gives K^2 = E - Z^2 exactly."""
    return known_e - known_z.square()


def decrypt_with_key_square(e: torch.Tensor, key_square: torch.Tensor) -> torch.Tensor:
    """Decrypt any later message with the recovered K^2; the key image is never needed."""
    return (e - key_square).clamp_min(0).sqrt()


def keyless_difference(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """Without any key: E1 - E2 = Z1^2 - Z2^2, the key cancels."""
    return e1 - e2
