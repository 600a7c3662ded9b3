"""The paper's convolutional autoencoder (El-kafrawy et al., CMES 2022, section 4).

Input: one 200x200 grayscale image in [0, 1]. Encoder, 3-layer model::

    Conv2D 32 (3x3, same) -> MaxPool 2x2 -> Conv2D 64 (3x3, same)
    -> MaxPool 2x2 -> Conv2D 128 (3x3, same)        latent 128 x 50 x 50

The 2-layer model stops after the second pooling (latent 64 x 50 x 50). The
decoder mirrors the encoder (Conv2D 128 -> UpSampling 2x2 -> Conv2D 64 ->
UpSampling 2x2 -> Conv2D 32) and ends with a 3x3 convolution to one channel
and a sigmoid. The sweep's ``activation`` is used by every hidden
convolution; choices the paper leaves open are listed in docs/paper.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from radseal.errors import RadsealError

INPUT_SIZE = 200
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "linear": nn.Identity}


class PaperModelError(RadsealError):
    """A paper model or its weights cannot be built or loaded."""


@dataclass(frozen=True)
class AutoencoderConfig:
    depth: int = 3  # encoder convolutions: 2 or 3
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.depth not in (2, 3):
            raise PaperModelError(f"depth must be 2 or 3, not {self.depth}")
        if self.activation not in ACTIVATIONS:
            raise PaperModelError(f"unknown activation '{self.activation}' (choose from {', '.join(ACTIVATIONS)})")


def _conv(cin: int, cout: int, activation: str) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), ACTIVATIONS[activation]()]


def _up() -> nn.Module:
    return nn.Upsample(scale_factor=2, mode="nearest")  # Keras UpSampling2D default


class PaperAutoencoder(nn.Module):
    """Encoder and decoder kept apart so the cipher can sit between them."""

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.config = config
        act = config.activation
        enc = _conv(1, 32, act) + [nn.MaxPool2d(2)] + _conv(32, 64, act) + [nn.MaxPool2d(2)]
        if config.depth == 3:
            enc += _conv(64, 128, act)
            dec = _conv(128, 128, act) + [_up()] + _conv(128, 64, act) + [_up()] + _conv(64, 32, act)
        else:
            dec = _conv(64, 64, act) + [_up()] + _conv(64, 32, act) + [_up()]
        dec += [nn.Conv2d(32, 1, 3, padding=1), nn.Sigmoid()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_channels(self) -> int:
        return 128 if self.config.depth == 3 else 64

    def latent_shape(self, size: int = INPUT_SIZE) -> tuple[int, int, int]:
        return (self.latent_channels, size // 4, size // 4)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def save_autoencoder(model: PaperAutoencoder, path: str | Path, extra: dict | None = None) -> Path:
    """Weights (float16 to keep the shipped file small) plus the config in one file."""
    import io

    from radseal.io.files import atomic_write

    state = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    blob = {"config": asdict(model.config), "state": state, "meta": json.dumps(extra or {})}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return atomic_write(path, buf.getvalue())


def load_autoencoder(path: str | Path) -> tuple[PaperAutoencoder, dict]:
    """Rebuild a saved autoencoder in float32; errors name the file."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = PaperAutoencoder(AutoencoderConfig(**blob["config"]))
        model.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    except FileNotFoundError:
        raise PaperModelError(f"{path}: weights file not found") from None
    except PaperModelError:
        raise
    except Exception as exc:  # torch raises many types for a bad file
        raise PaperModelError(f"{path}: not paper autoencoder weights ({type(exc).__name__})") from None
    model.eval()
    return model, json.loads(blob.get("meta", "{}"))


def shipped_weights_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "paper" / "autoencoder_3l_relu.pt"
