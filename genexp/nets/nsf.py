"""Neural spline flows, NSF (Durkan et al. 2019): flows whose elementwise maps are monotone
rational-quadratic splines (genexp.nets.spline) instead of affine maps.

A spline of K bins bends each dimension freely on [-B, B] (the identity outside), so a few layers
fit densities that affine flows need many layers for (sharp edges, several modes). The parameters
of each dimension's spline come from a conditioner that sees only what the layer may depend on:

- coupling: the first half of the dimensions passes through and an MLP of it gives the splines of
  the rest (Dinh et al. 2017's split, with splines); density and sampling are one pass each;
- autoregressive: a MADE (Germain et al. 2015, genexp.nets.maf) gives dimension i's spline from
  dimensions before i; density is one pass, sampling one pass per dimension.

The order of the dimensions is reversed between layers, so every dimension is moved. Images use
coupling layers with checkerboard masks of alternating parity and small conv conditioners (an
autoregressive image flow would sample one pixel per pass); `auto` picks coupling for images and
autoregressive for vectors.
"""

import math

import torch
from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.nets.flow import Bijection, Chain, Flatten, Flow, Reverse, zero_last_layer
from genexp.nets.maf import MADE
from genexp.nets.mlp import mlp
from genexp.nets.realnvp import checkerboard_mask
from genexp.nets.spline import n_params, rational_quadratic_spline

TRANSFORMS = ("auto", "coupling", "autoregressive")


class SplineCoupling(Bijection):
    """Vectors: x[:, :k] passes through, x[:, k:] goes through splines given by an MLP of x[:, :k]."""

    def __init__(self, dims: int, hidden_dims: list[int], bins: int, tail_bound: float) -> None:
        super().__init__()
        self.kept = dims // 2  # with the reversal between layers, every dimension is moved
        self.bins, self.tail_bound = bins, tail_bound
        self.net = zero_last_layer(mlp([max(1, self.kept), *hidden_dims, (dims - self.kept) * n_params(bins)]))

    def _params(self, kept: Tensor) -> Tensor:
        # One dimension has nothing to condition on: its spline is the net's bias alone.
        inputs = kept if self.kept else kept.new_zeros(len(kept), 1)
        return self.net(inputs).view(len(kept), -1, n_params(self.bins))

    def _map(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        kept, moved = x[:, :self.kept], x[:, self.kept:]
        moved, logdet = rational_quadratic_spline(moved, self._params(kept), self.tail_bound, inverse)
        return torch.cat([kept, moved], dim=1), logdet.sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(x, inverse=False)

    def inverse(self, y: Tensor) -> Tensor:
        return self._map(y, inverse=True)[0]


class ImageSplineCoupling(Bijection):
    """Images: pixels where the mask is 1 pass through; a conv net of them gives the splines of the rest."""

    def __init__(self, mask: Tensor, hidden_channels: int, bins: int, tail_bound: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.bins, self.tail_bound = bins, tail_bound
        channels = mask.shape[0]
        # 3x3 -> 1x1 -> 3x3 convs, as in the coupling networks of Glow (Kingma & Dhariwal 2018).
        self.net = zero_last_layer(nn.Sequential(
            nn.Conv2d(channels, hidden_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1), nn.ReLU(),
            nn.Conv2d(hidden_channels, channels * n_params(bins), 3, padding=1)))

    def _map(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        params = self.net(x * self.mask).view(n, c, n_params(self.bins), h, w).movedim(2, -1)
        y, logdet = rational_quadratic_spline(x, params, self.tail_bound, inverse)
        moved = 1.0 - self.mask
        return x * self.mask + y * moved, (logdet * moved).flatten(1).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(x, inverse=False)

    def inverse(self, y: Tensor) -> Tensor:
        return self._map(y, inverse=True)[0]


class AutoregressiveSpline(Bijection):
    """One MAF-style layer with splines: dimension i's spline depends on dimensions before i."""

    def __init__(self, dims: int, hidden_dims: list[int], bins: int, tail_bound: float) -> None:
        super().__init__()
        self.bins, self.tail_bound = bins, tail_bound
        self.made = MADE(dims, hidden_dims, n_params=n_params(bins))

    def _params(self, x: Tensor) -> Tensor:
        return self.made(x).transpose(1, 2)  # (N, D, 3K - 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = rational_quadratic_spline(x, self._params(x), self.tail_bound)
        return y, logdet.sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        # After pass i, dimensions 0..i are final: each depends only on the ones before it.
        x = torch.zeros_like(y)
        for _ in range(y.shape[1]):
            x = rational_quadratic_spline(y, self._params(x), self.tail_bound, inverse=True)[0]
        return x


class NSF(Flow):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"transform": "one of auto, coupling, autoregressive", "n_transforms": "int >= 1",
                    "bins": "int >= 2", "tail_bound": "number > 0", "hidden_dims": "list of int >= 1; e.g. [128, 128]",
                    "hidden_channels": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], transform: str = "auto", n_transforms: int = 4, bins: int = 16,
                 tail_bound: float = 5.0, hidden_dims: list[int] = (128, 128), hidden_channels: int = 32) -> None:
        if transform not in TRANSFORMS:
            raise ConfigError(f"model.density.transform={transform!r} is not known; allowed: {', '.join(TRANSFORMS)}")
        if transform == "auto":
            # Vectors: a MADE also bends the first value of each layer, which a coupling passes through.
            transform = "coupling" if len(shape) == 3 else "autoregressive"
        if len(shape) == 3:
            if transform != "coupling":
                raise ConfigError(f"model.density.transform={transform} takes vectors; images (data.shape="
                                  f"{list(shape)}) need model.density.transform=coupling")
            layers = [ImageSplineCoupling(checkerboard_mask(tuple(shape), i % 2), hidden_channels, bins, tail_bound)
                      for i in range(n_transforms)]
            super().__init__(shape, Chain([*layers, Flatten(shape)]))
            return
        dims = math.prod(shape)
        layer = SplineCoupling if transform == "coupling" else AutoregressiveSpline
        layers: list[Bijection] = [Flatten(shape)]
        for i in range(n_transforms):
            layers += [Reverse()] if i else []
            layers.append(layer(dims, list(hidden_dims), bins, tail_bound))
        super().__init__(shape, Chain(layers))
