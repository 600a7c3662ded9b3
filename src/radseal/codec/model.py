"""The networks of the learned codec (training path).

Layout (one channel in, one out; latents at 1/16 resolution):

* ``g_a`` analysis: a 4x4 space-to-depth first stage, so that no convolution
  runs at full resolution, then two strided 5x5 convolutions with GDN.
* ``g_s`` synthesis: the mirror image, ending in two pixel-shuffle stages.
* ``h_a`` / ``h_s`` hyperprior (mean-scale, Minnen et al. 2018 without a
  context model). ``h_s`` uses only conv + ReLU + pixel shuffle so that it
  can be run exactly in integer arithmetic at coding time
  (see :mod:`radseal.codec.integer`).
* One variable-rate model: a learned gain vector per training lambda scales
  the latent (Cui et al. 2021); qualities in between interpolate the gains
  geometrically.

Training uses additive uniform noise for the rate terms and rounded latents
(straight-through) for the distortion term (mixed quantization).
"""

from __future__ import annotations

import math

from radseal.extras import require

torch = require("torch", "neural", "the neural hyperprior codec (rsc1)")
F = torch.nn.functional
nn = torch.nn

#: Lambdas (rate-distortion trade-off, distortion = 255^2 * MSE on [0,1]) of the gain vectors.
DEFAULT_LAMBDAS = (0.004, 0.012, 0.036, 0.11, 0.33, 1.0, 3.0)
SCALE_MIN = 0.11
SCALE_MAX = 64.0


class GDN(nn.Module):
    """Generalized divisive normalization (Balle 2016), simplified reparametrization."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.abs() + 1e-6
        gamma = self.gamma.abs()
        c = gamma.shape[0]
        norm = F.conv2d(x * x, gamma.view(c, c, 1, 1), beta)
        norm = torch.sqrt(norm)
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class HyperSynthesis(nn.Module):
    """z -> (mean, scale) of y. Conv/ReLU/pixel-shuffle only, so it has an exact integer twin."""

    def __init__(self, nz: int, nh: int, m: int):
        super().__init__()
        self.c1 = conv(nz, nh * 4, 3)
        self.c2 = conv(nh, nh * 4, 3)
        self.c3 = conv(nh, 2 * m, 3)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(F.pixel_shuffle(self.c1(z), 2))
        h = F.relu(F.pixel_shuffle(self.c2(h), 2))
        out = self.c3(h)
        mean, scale = out.chunk(2, dim=1)
        return mean, scale

    def layers(self) -> list[nn.Conv2d]:
        return [self.c1, self.c2, self.c3]


class FactorizedDensity(nn.Module):
    """Per-channel learned density of z (Balle et al. 2018, appendix 6.1)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) -> cumulative logits (C, 1, N)."""
        for i in range(len(self.matrices)):
            x = torch.matmul(F.softplus(self.matrices[i]), x) + self.biases[i]
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(bin of width 1 centred on z), z: (B, C, H, W)."""
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3)


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    scale = scale.clamp(SCALE_MIN, SCALE_MAX)
    r = torch.abs(y - mean)
    upper = 0.5 * torch.erfc(-((0.5 - r) / scale) / math.sqrt(2))
    lower = 0.5 * torch.erfc(-((-0.5 - r) / scale) / math.sqrt(2))
    return upper - lower


def lower_bound_likelihood(p: torch.Tensor, bound: float = 1e-9) -> torch.Tensor:
    # Straight-through lower bound: keeps gradients alive where p underflows.
    return p + (p.clamp_min(bound) - p).detach()


class CodecNet(nn.Module):
    """The whole codec as one trainable module."""

    def __init__(self, n: int = 128, m: int = 128, nh: int = 64, nz: int = 32, lambdas=DEFAULT_LAMBDAS):
        super().__init__()
        self.config = dict(n=n, m=m, nh=nh, nz=nz, lambdas=list(lambdas))
        self.g_a = nn.Sequential(
            nn.PixelUnshuffle(4),
            conv(16, n, 3),
            GDN(n),
            conv(n, n, 5, 2),
            GDN(n),
            conv(n, m, 5, 2),
        )
        self.g_s = nn.Sequential(
            deconv(m, n),
            GDN(n, inverse=True),
            deconv(n, n),
            GDN(n, inverse=True),
            conv(n, 4 * 16, 3),
            nn.PixelShuffle(2),
            nn.LeakyReLU(0.1),
            conv(16, 4, 3),
            nn.PixelShuffle(2),
        )
        self.h_a = nn.Sequential(
            conv(m, nh, 3),
            nn.ReLU(),
            conv(nh, nh, 5, 2),
            nn.ReLU(),
            conv(nh, nz, 5, 2),
        )
        self.h_s = HyperSynthesis(nz, nh, m)
        self.z_density = FactorizedDensity(nz)
        k = len(lambdas)
        self.register_buffer("lambdas", torch.tensor(list(lambdas), dtype=torch.float32))
        # Initial gains spread so that higher lambdas quantize more finely.
        init = torch.linspace(-1.0, 1.5, k).view(k, 1).repeat(1, m)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())

    @property
    def num_levels(self) -> int:
        return int(self.lambdas.numel())

    def gains(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain (B, M, 1, 1) for fractional levels in [0, K-1] (geometric interpolation)."""
        level = level.to(self.log_gain.dtype).clamp(0, self.num_levels - 1)
        lo = level.floor().long().clamp(max=self.num_levels - 2)
        t = (level - lo.to(level.dtype)).view(-1, 1)
        g = self.log_gain[lo] * (1 - t) + self.log_gain[lo + 1] * t
        ig = self.log_inv_gain[lo] * (1 - t) + self.log_inv_gain[lo + 1] * t
        return g.exp()[..., None, None], ig.exp()[..., None, None]

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict:
        gain, inv_gain = self.gains(level)
        y = self.g_a(x) * gain
        z = self.h_a(y)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_lik = lower_bound_likelihood(self.z_density.likelihood(z_noisy))
        z_hat = z + (torch.round(z) - z).detach()
        mean, scale = self.h_s(z_hat)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_lik = lower_bound_likelihood(gaussian_likelihood(y_noisy, mean, scale))
        y_hat = mean + (y - mean) + (torch.round(y - mean) - (y - mean)).detach()
        x_hat = self.g_s(y_hat * inv_gain)
        return {"x_hat": x_hat, "y_lik": y_lik, "z_lik": z_lik}


def rd_loss(out: dict, x: torch.Tensor, lambdas: torch.Tensor) -> dict:
    """Per-sample lambda * 255^2 * MSE + bpp, averaged over the batch."""
    b, _, h, w = x.shape
    pixels = h * w
    bits_y = -torch.log2(out["y_lik"]).flatten(1).sum(1)
    bits_z = -torch.log2(out["z_lik"]).flatten(1).sum(1)
    bpp = (bits_y + bits_z) / pixels
    mse = ((out["x_hat"] - x) ** 2).flatten(1).mean(1)
    loss = (lambdas * 255.0**2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp.detach(), "mse": mse.detach()}
