"""The neural codec family: a mean-scale hyperprior with integer hyper-synthesis (``rsc1``).

Networks and training live in ``model.py``, ``runtime.py`` and ``train.py``;
this module is its :class:`~radseal.codec.api.Codec`.
"""

from __future__ import annotations

import numpy as np

from radseal.codec.api import Codec, normalized
from radseal.codec.entropy import Z_RANGE, scale_index
from radseal.codec.errors import BitstreamError
from radseal.codec.integer import ACT_BITS
from radseal.codec.layout import LATENT_STRIDE, PAD_MULTIPLE
from radseal.image import Image

__all__ = ["HyperpriorCodec"]


class HyperpriorCodec(Codec):
    family = "hyperprior"

    def __init__(self, runtime, model_id: str, info: dict | None = None):
        super().__init__(model_id, info)
        self._rt = runtime

    @classmethod
    def from_state(cls, state, model_id: str, info: dict | None = None) -> "HyperpriorCodec":
        from radseal.codec.runtime import Runtime

        return cls(Runtime.from_state(state), model_id, info)

    @property
    def num_qualities(self) -> int:
        return self._rt.num_qualities

    # -- hooks -------------------------------------------------------------------------------
    def _analyse(self, x01: np.ndarray):
        h, w = x01.shape
        x = np.pad(x01, ((0, _padded(h) - h), (0, _padded(w) - w)), mode="edge")
        return self._rt.analysis(x)

    def _encode(self, y_raw, height: int, width: int, quality: int) -> bytes:
        z_sym, y_sym, idx = self._symbols(y_raw, quality)
        return self._rt.tables.encode(z_sym, y_sym, idx)

    def _decode(self, payload: bytes, height: int, width: int, quality: int) -> np.ndarray:
        hp, wp = _padded(height), _padded(width)
        y_hat = self._decode_latent(payload, quality, hp // LATENT_STRIDE, wp // LATENT_STRIDE)
        return self._rt.synthesis(y_hat)[:height, :width]

    # -- latent coding ---------------------------------------------------------------------
    def _symbols(self, y_raw, quality: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z symbols, y symbols, y table indices) the encoder writes for one quality."""
        gain, _ = self._rt.gains(quality)
        y = y_raw * gain
        z = self._rt.hyper_analysis(y).numpy()
        z_sym = np.clip(np.rint(z), -Z_RANGE, Z_RANGE).astype(np.int64)
        mean_fx, idx = self.hyper_synthesis(z_sym)
        mean = mean_fx.astype(np.float64) / (1 << ACT_BITS)
        half = self._rt.tables.y_half[idx]
        y_sym = np.clip(np.rint(y.numpy().astype(np.float64) - mean), -half, half).astype(np.int64)
        return z_sym, y_sym, idx

    def encoder_symbols(self, img: Image, quality: int) -> tuple[np.ndarray, np.ndarray]:
        """(z symbols, y symbols) that :meth:`compress` writes for ``img`` (for checks)."""
        low, high = int(img.pixels.min()), int(img.pixels.max())
        x = normalized(img.pixels, low, high)
        z_sym, y_sym, _ = self._symbols(self._analyse(x), quality)
        return z_sym, y_sym

    def _decode_latent(self, payload: bytes, quality: int, hl: int, wl: int):
        tables = self._rt.tables
        coder = tables.open_stream(payload)
        nz = tables.z_counts.shape[0]
        try:
            z_sym = tables.decode_z(coder, (nz, hl // 4, wl // 4))
            mean_fx, idx = self.hyper_synthesis(z_sym)
            y_sym = tables.decode_y(coder, idx)
            clean = coder.is_empty()
        except BitstreamError:
            raise
        except Exception as exc:  # constriction refuses a payload it cannot parse
            raise BitstreamError(f"entropy decoding failed: {exc}") from None
        if not clean:
            raise BitstreamError("entropy-coded payload did not decode cleanly (corrupted, or made with other weights)")
        mean = mean_fx.astype(np.float64) / (1 << ACT_BITS)
        import torch

        _, inv_gain = self._rt.gains(quality)
        y_hat = torch.from_numpy((y_sym + mean).astype(np.float32))
        return y_hat * inv_gain

    def hyper_synthesis(self, z_sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer means (fixed point) and table indices from the hyper-latent symbols: exact everywhere."""
        mean_fx, scale_fx = self._rt.hs_int(z_sym)
        return mean_fx, scale_index(scale_fx, self._rt.thresholds)

    def decode_symbols(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(z symbols, y symbols) of a stream, without running the synthesis (for checks)."""
        from radseal.codec import bitstream

        header, payload = bitstream.unpack(data)
        hp, wp = _padded(header.height), _padded(header.width)
        tables = self._rt.tables
        coder = tables.open_stream(payload)
        hl, wl = hp // LATENT_STRIDE, wp // LATENT_STRIDE
        z_sym = tables.decode_z(coder, (tables.z_counts.shape[0], hl // 4, wl // 4))
        _, idx = self.hyper_synthesis(z_sym)
        return z_sym, tables.decode_y(coder, idx)


def _padded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE
