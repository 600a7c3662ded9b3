"""One image through the paper's system: encode, "encrypt", decrypt, decode.

Sizes are reported honestly: what would cross the wire is the encrypted
latent E as float32 values (the paper sends the vector; it has no entropy
coding), compared with the input file, the input's own pixel bytes and the
200x200 8-bit image the network actually sees.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radseal.evaluate.metrics import mae, mse, psnr
from radseal.image import Image
from radseal.io.dataset import fixed_size
from radseal.io.files import atomic_write
from radseal.paper import insecure_cipher
from radseal.paper.autoencoder import INPUT_SIZE, PaperAutoencoder


@dataclass
class RoundtripResult:
    original: np.ndarray  # 200x200 float32 in [0, 1]
    encrypted_latent: np.ndarray  # (C, 50, 50) float32: E as sent
    retrieved: np.ndarray  # 200x200 float32 in [0, 1]
    latent_sign_lost: bool  # True when decryption could not restore some values of Z (see sign_lost_fraction)
    seconds: dict = field(default_factory=dict)
    cipher: str = insecure_cipher.DEFAULT_VARIANT
    sign_lost_fraction: float = 0.0  # share of latent values the cipher's square root returned wrongly

    @property
    def sent_bytes(self) -> int:
        return len(self.encrypted_latent.astype("<f4").tobytes())

    @property
    def network_input_bytes(self) -> int:
        return INPUT_SIZE * INPUT_SIZE  # one byte per pixel at 8 bits

    def metrics(self) -> dict:
        a, b = self.original.astype(np.float64), self.retrieved.astype(np.float64)
        return {"mse": mse(a, b), "mae": mae(a, b), "psnr_db": psnr(a, b, 1.0)}


def run_roundtrip(model: PaperAutoencoder, image: Image, key_image: Image, cipher: str = insecure_cipher.DEFAULT_VARIANT) -> RoundtripResult:
    """The paper's steps a-g on one image with a key image, timed; ``cipher`` names the variant."""
    t0 = time.perf_counter()
    x, k = fixed_size(image, INPUT_SIZE), fixed_size(key_image, INPUT_SIZE)
    result = roundtrip_arrays(model, x, k, cipher)
    result.seconds = {"preprocess": time.perf_counter() - t0 - sum(result.seconds.values()), **result.seconds}
    return result


@torch.no_grad()
def roundtrip_arrays(model: PaperAutoencoder, image: np.ndarray, key_image: np.ndarray, cipher: str = insecure_cipher.DEFAULT_VARIANT) -> RoundtripResult:
    """Steps a-g on two fixed-size float arrays in [0, 1]."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    k_img = torch.from_numpy(np.ascontiguousarray(key_image, dtype=np.float32))[None, None]
    t1 = time.perf_counter()
    z = model.encode(x)
    k = model.encode(k_img)
    e = insecure_cipher.encrypt(z, k, cipher)
    t2 = time.perf_counter()
    z_dec = insecure_cipher.decrypt(e, k, cipher)
    x_hat = model.decode(z_dec)
    t3 = time.perf_counter()
    lost = insecure_cipher.sign_lost(z, k, cipher)
    return RoundtripResult(
        original=x[0, 0].numpy(),
        encrypted_latent=e[0].numpy().astype(np.float32),
        retrieved=x_hat[0, 0].numpy(),
        latent_sign_lost=bool(lost.any()),
        seconds={"encode_encrypt": t2 - t1, "decrypt_decode": t3 - t2},
        cipher=cipher,
        sign_lost_fraction=float(lost.double().mean()),
    )


def save_outputs(result: RoundtripResult, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """original.png, retrieved.png (8-bit), encrypted_latent.npy (float32 as sent), fig5.png."""
    from radseal.io import write_image
    from radseal.paper.plots import plot_fig5

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    to8 = lambda a: Image(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8), bits_stored=8)  # noqa: E731
    paths = {
        "original": write_image(to8(result.original), out / "original.png"),
        "retrieved": write_image(to8(result.retrieved), out / "retrieved.png"),
    }
    buf = io.BytesIO()
    np.save(buf, result.encrypted_latent.astype("<f4"))
    paths["encrypted_latent"] = atomic_write(out / "encrypted_latent.npy", buf.getvalue())
    paths["figure"] = plot_fig5(result.original, result.encrypted_latent, result.retrieved, out / "fig5.png", title)
    return paths


@torch.no_grad()
def reconstruct_through_cipher(model: PaperAutoencoder, x: np.ndarray, key_image: np.ndarray, batch_size: int = 16, cipher: str = insecure_cipher.DEFAULT_VARIANT) -> tuple[np.ndarray, float]:
    """What the paper's receiver sees for each image of ``x``: decode(decrypt(encrypt(encode(x)))).

    Returns the reconstructions and the fraction of latent values whose sign
    the cipher loses (``squares``: Z < 0; ``square-of-sum``: Z + K < 0; 0 for
    a ReLU encoder with either).
    """
    model.eval()
    k = model.encode(torch.from_numpy(np.ascontiguousarray(key_image, dtype=np.float32))[None, None])
    out, negative, total = [], 0, 0
    for i in range(0, len(x), batch_size):
        z = model.encode(torch.from_numpy(x[i : i + batch_size]).unsqueeze(1))
        negative += int(insecure_cipher.sign_lost(z, k, cipher).sum())
        total += z.numel()
        z_received = insecure_cipher.decrypt(insecure_cipher.encrypt(z, k, cipher), k, cipher)
        out.append(model.decode(z_received).squeeze(1).numpy())
    return (np.concatenate(out) if out else np.zeros_like(x)), negative / max(total, 1)
