"""The trained networks at coding time: float transforms, integer hyper-synthesis, tables.

Transforms run tile by tile with an overlapping margin (``halo``) that is
cropped away, so memory stays bounded for any image size while the result
matches whole-image processing up to float rounding near tile borders
(which only touches the reconstructed pixels, never the entropy decoding).
"""

from __future__ import annotations

import json

import numpy as np

from radseal.extras import require

torch = require("torch", "neural", "the neural hyperprior codec (rsc1)")

from radseal.codec.entropy import TableSet  # noqa: E402
from radseal.codec.errors import WeightsError  # noqa: E402
from radseal.codec.integer import ACT_BITS, IntegerHyperSynthesis  # noqa: E402
from radseal.codec.layout import LATENT_STRIDE  # noqa: E402
from radseal.codec.model import CodecNet  # noqa: E402

TILE = 1024  # input pixels per tile side for g_a (latent: TILE/16 for g_s)
HALO = 64  # pixels of context on each side of a tile
NUM_QUALITIES = 16

FLOAT_PREFIXES = ("g_a.", "g_s.", "h_a.", "log_gain", "log_inv_gain", "lambdas")


class Runtime:
    def __init__(self, net: CodecNet, hs_int: IntegerHyperSynthesis, tables: TableSet, thresholds: np.ndarray):
        self.net = net.eval()
        self.hs_int = hs_int
        self.tables = tables
        self.thresholds = np.asarray(thresholds, dtype=np.int64)
        self.config = dict(net.config)

    # -- weights ---------------------------------------------------------------------------
    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "Runtime":
        try:
            config = json.loads(bytes(state["config"]).decode("utf-8"))
            net = CodecNet(**config)
            floats = {k[len("float.") :]: torch.from_numpy(v.astype(np.float32)) for k, v in state.items() if k.startswith("float.")}
            own = net.state_dict()
            wanted = {k for k in own if k.startswith(FLOAT_PREFIXES)}
            if set(floats) != wanted:
                raise WeightsError("codec weights do not match the model architecture (tensor names differ)")
            for k, v in floats.items():
                if tuple(own[k].shape) != tuple(v.shape):
                    raise WeightsError(f"codec weights do not match the model architecture ({k}: {tuple(v.shape)})")
            net.load_state_dict(floats, strict=False)
            hs_int = IntegerHyperSynthesis.from_state(state)
            tables = TableSet(state["tables.y_counts"], state["tables.y_half"], state["tables.z_counts"])
            return cls(net, hs_int, tables, state["tables.thresholds"])
        except KeyError as exc:
            raise WeightsError(f"codec weights lack {exc}") from None
        except (ValueError, TypeError, RuntimeError) as exc:
            raise WeightsError(f"codec weights are damaged or do not match the model ({exc})") from None

    @staticmethod
    def export_state(net: CodecNet) -> dict[str, np.ndarray]:
        """Everything a Runtime needs, from a trained float network."""
        from radseal.codec.entropy import build_gaussian_tables, build_z_tables, scale_thresholds_fixed

        state: dict[str, np.ndarray] = {}
        for k, v in net.state_dict().items():
            if k.startswith(FLOAT_PREFIXES):
                state["float." + k] = v.detach().cpu().numpy().astype(np.float16)
        state.update(IntegerHyperSynthesis.from_float(net.h_s).state())
        y_counts, y_half = build_gaussian_tables()
        state["tables.y_counts"] = y_counts
        state["tables.y_half"] = y_half
        state["tables.z_counts"] = build_z_tables(net.z_density, net.config["nz"])
        state["tables.thresholds"] = scale_thresholds_fixed(ACT_BITS)
        state["config"] = np.frombuffer(json.dumps(net.config).encode("utf-8"), dtype=np.uint8)
        return state

    # -- qualities -------------------------------------------------------------------------
    @property
    def num_qualities(self) -> int:
        return NUM_QUALITIES

    def level_of(self, quality: int) -> float:
        k = self.net.num_levels
        return (quality - 1) * (k - 1) / (NUM_QUALITIES - 1)

    def gains(self, quality: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            g, ig = self.net.gains(torch.tensor([self.level_of(quality)]))
        return g[0], ig[0]

    # -- transforms ------------------------------------------------------------------------
    def analysis(self, x: np.ndarray) -> torch.Tensor:
        """x: (H, W) float32 in [0,1], H and W multiples of 64 -> y before gain (M, H/16, W/16)."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
        with torch.no_grad():
            return _tiled(self.net.g_a, t, TILE, HALO, up=False)[0]

    def synthesis(self, y_hat: torch.Tensor) -> np.ndarray:
        dtype = next(self.net.g_s.parameters()).dtype
        with torch.no_grad():
            out = _tiled(self.net.g_s, y_hat[None].to(dtype), TILE // LATENT_STRIDE, HALO // LATENT_STRIDE, up=True)
        return out[0, 0].float().numpy()

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.h_a(y[None])[0]


def _tiled(fn, x: torch.Tensor, tile: int, halo: int, up: bool) -> torch.Tensor:
    """Apply ``fn`` (resolution x16 if ``up`` else /16) tile by tile with a cropped margin."""
    _, _, h, w = x.shape
    if h <= tile + 2 * halo and w <= tile + 2 * halo:
        return fn(x)
    f = LATENT_STRIDE
    rows = []
    for top in range(0, h, tile):
        cols = []
        for left in range(0, w, tile):
            t0, l0 = max(0, top - halo), max(0, left - halo)
            t1, l1 = min(h, top + tile + halo), min(w, left + tile + halo)
            part = fn(x[:, :, t0:t1, l0:l1])
            th, tw = min(tile, h - top), min(tile, w - left)
            if up:
                r0, c0, rh, cw = (top - t0) * f, (left - l0) * f, th * f, tw * f
            else:
                r0, c0, rh, cw = (top - t0) // f, (left - l0) // f, th // f, tw // f
            cols.append(part[:, :, r0 : r0 + rh, c0 : c0 + cw])
        rows.append(torch.cat(cols, dim=3))
    return torch.cat(rows, dim=2)
