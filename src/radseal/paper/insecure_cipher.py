"""HAZARDOUS: the paper's square-and-add "cipher". Broken; for reproduction only.

El-kafrawy et al. (CMES 2022, section 4) "encrypt" an encoder output Z with
the encoder output K of a second ("key") image. The paper describes the
operation two ways, and both are implemented as named variants:

``squares`` (the default; the algorithm box, steps c-f)::

    E = Z**2 + K**2            decryption:  Z = sqrt(E - K**2)

``square-of-sum`` (the prose: add the other vector, then square)::

    E = (Z + K)**2             decryption:  Z = sqrt(E) - K

Neither is encryption. Both are deterministic and keyless relations leak
(``squares``: E1 - E2 = Z1**2 - Z2**2; ``square-of-sum``: sqrt(E1) - sqrt(E2)
= Z1 - Z2); one known (Z, E) pair reveals the key material (K**2, or K) and
with it every later message; and the square root destroys a sign
(``squares``: the sign of every negative Z; ``square-of-sum``: wherever
Z + K < 0, decryption returns -Z - 2K). The attacks are implemented below
and demonstrated by tests/test_paper_cipher.py. Nothing in radseal uses this
module to protect data; the real path is HPKE sealing (radseal.seal). The
CLI reaches it only behind ``--insecure-paper-cipher``.
"""

from __future__ import annotations

import torch

from radseal.errors import RadsealError

SQUARES = "squares"
SQUARE_OF_SUM = "square-of-sum"
VARIANTS = (SQUARES, SQUARE_OF_SUM)
DEFAULT_VARIANT = SQUARES
FORMULAS = {SQUARES: "E = Z^2 + K^2", SQUARE_OF_SUM: "E = (Z + K)^2"}
DECRYPTIONS = {SQUARES: "Z = sqrt(E - K^2)", SQUARE_OF_SUM: "Z = sqrt(E) - K"}


class UnknownCipherVariant(RadsealError):
    """A cipher variant name that is not one of VARIANTS."""


def _check(variant: str) -> str:
    if variant not in VARIANTS:
        raise UnknownCipherVariant(f"unknown cipher variant '{variant}' (choose from {', '.join(VARIANTS)})")
    return variant


def warning(variant: str = DEFAULT_VARIANT) -> str:
    return (
        f"WARNING: the paper's cipher ({FORMULAS[_check(variant)]}) is NOT encryption: one known image reveals the key, "
        "ciphertexts leak their differences without any key, and the latent's sign is lost. Reproduction only."
    )


WARNING = warning(DEFAULT_VARIANT)


def encrypt(z: torch.Tensor, k: torch.Tensor, variant: str = DEFAULT_VARIANT) -> torch.Tensor:
    """``squares``: E = Z^2 + K^2; ``square-of-sum``: E = (Z + K)^2. ``k`` broadcasts over a batch of ``z``."""
    if _check(variant) == SQUARES:
        return z.square() + k.square()
    return (z + k).square()


def decrypt(e: torch.Tensor, k: torch.Tensor, variant: str = DEFAULT_VARIANT) -> torch.Tensor:
    """``squares``: sqrt(E - K^2), a tiny negative rounding residue clamped to 0; ``square-of-sum``: sqrt(E) - K."""
    if _check(variant) == SQUARES:
        return (e - k.square()).clamp_min(0).sqrt()
    return e.clamp_min(0).sqrt() - k


def sign_lost(z: torch.Tensor, k: torch.Tensor, variant: str = DEFAULT_VARIANT) -> torch.Tensor:
    """Where decryption does not return Z: ``squares`` where Z < 0 (it returns |Z|),
    ``square-of-sum`` where Z + K < 0 (it returns -Z - 2K). Boolean, shaped like ``z``."""
    if _check(variant) == SQUARES:
        return z < 0
    return (z + k) < 0


# --- attacks -------------------------------------------------------------


def recover_key_material(known_z: torch.Tensor, known_e: torch.Tensor, variant: str = DEFAULT_VARIANT) -> torch.Tensor:
    """Known-plaintext attack on one (Z, E) pair: what the receiver uses to decrypt.

    ``squares``: K^2 = E - Z^2, exactly, whatever the signs. ``square-of-sum``:
    K = sqrt(E) - Z, exact wherever Z + K >= 0 (everywhere for a ReLU encoder,
    whose Z and K are both >= 0); elsewhere the other root -sqrt(E) - Z is the
    key, which a second known pair settles (:func:`recover_key_square_of_sum`).
    """
    if _check(variant) == SQUARES:
        return known_e - known_z.square()
    return known_e.clamp_min(0).sqrt() - known_z


def decrypt_with_key_material(e: torch.Tensor, material: torch.Tensor, variant: str = DEFAULT_VARIANT) -> torch.Tensor:
    """Decrypt any later message with the recovered material; the key image is never needed."""
    if _check(variant) == SQUARES:
        return (e - material).clamp_min(0).sqrt()
    return e.clamp_min(0).sqrt() - material


def recover_key_square_of_sum(known_z: list[torch.Tensor], known_e: list[torch.Tensor]) -> torch.Tensor:
    """K of ``square-of-sum`` from several known pairs, whatever the signs.

    Each pair leaves two candidates per value, sqrt(E) - Z and -sqrt(E) - Z;
    the key is the candidate of the first pair that the other pairs also
    allow. Two pairs with different plaintexts settle almost every value.
    """
    if not known_z or len(known_z) != len(known_e):
        raise ValueError("need one or more (Z, E) pairs")
    s0 = known_e[0].clamp_min(0).sqrt()
    plus, minus = s0 - known_z[0], -s0 - known_z[0]
    if len(known_z) == 1:
        return plus
    miss_plus = torch.zeros_like(plus)
    miss_minus = torch.zeros_like(minus)
    for z, e in zip(known_z[1:], known_e[1:]):
        s = e.clamp_min(0).sqrt()
        # A candidate c is allowed by a pair when (z + c)^2 == e, i.e. |z + c| == sqrt(e).
        miss_plus += ((z + plus).abs() - s).abs()
        miss_minus += ((z + minus).abs() - s).abs()
    return torch.where(miss_minus < miss_plus, minus, plus)


def keyless_difference(e1: torch.Tensor, e2: torch.Tensor, variant: str = DEFAULT_VARIANT) -> torch.Tensor:
    """Without any key. ``squares``: E1 - E2 = Z1^2 - Z2^2. ``square-of-sum``:
    sqrt(E1) - sqrt(E2) = Z1 - Z2 (wherever Z + K >= 0 for both). The key cancels."""
    if _check(variant) == SQUARES:
        return e1 - e2
    return e1.clamp_min(0).sqrt() - e2.clamp_min(0).sqrt()


# Names kept from the first version (``squares`` only).
def recover_key_square(known_z: torch.Tensor, known_e: torch.Tensor) -> torch.Tensor:
    """Known-plaintext attack on ``squares``: one (Z, E) pair gives K^2 = E - Z^2 exactly."""
    return recover_key_material(known_z, known_e, SQUARES)


def decrypt_with_key_square(e: torch.Tensor, key_square: torch.Tensor) -> torch.Tensor:
    """Decrypt any later ``squares`` message with the recovered K^2."""
    return decrypt_with_key_material(e, key_square, SQUARES)
