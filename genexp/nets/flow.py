"""Normalizing flows: an invertible map f from data x to noise z = f(x) ~ N(0, I).

Change of variables: log p(x) = log N(f(x); 0, I) + log |det df/dx|. Each layer is a
Bijection that returns its output and its log |det Jacobian| per example, so the total
log-determinant is the sum over layers. Sampling runs the layers backwards: x = f^-1(z).
"""

import torch
from torch import Tensor, nn

from genexp.nets.density import Density, standard_normal_log_prob


class Bijection(nn.Module):
    """forward(x) -> (y, log|det dy/dx|) per example, in the data-to-noise direction; inverse(y) -> x."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class Chain(Bijection):
    """Layers applied in turn; their log-determinants add up."""

    def __init__(self, layers: list[Bijection]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(len(x))
        for layer in self.layers:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class Flatten(Bijection):
    """(N, *shape) -> (N, D): lets vector layers take images."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flatten(1), x.new_zeros(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return y.view(-1, *self.shape)


class Reverse(Bijection):
    """Reverses the order of the dimensions of a (N, D) batch (a permutation: log-determinant 0)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flip(1), x.new_zeros(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return y.flip(1)


def zero_last_layer(net: nn.Sequential) -> nn.Sequential:
    """Zero the output layer, so that a new layer is the identity map and training starts from N(0, I)."""
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class Flow(Density):
    """A density from a Bijection whose output (the noise z) is a (N, D) batch."""

    def __init__(self, shape: tuple[int, ...], transform: Bijection) -> None:
        super().__init__(shape)
        self.transform = transform

    def log_prob(self, x: Tensor) -> Tensor:
        z, logdet = self.transform(x)
        return standard_normal_log_prob(z) + logdet  # change of variables

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = self.standard_normal(n, self.dims, generator=generator)
        return self.transform.inverse(z).view(n, *self.shape)
