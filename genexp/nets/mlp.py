"""Fully connected encoder and decoder for data of any shape (images or vectors), flattened."""

import math

import torch
from torch import Tensor, nn


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(N, *shape) -> (N, out_features); an optional condition vector (N, cond_features),
    e.g. a one-hot label, is concatenated to the flattened input."""

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], out_features: int,
                 cond_features: int = 0) -> None:
        super().__init__()
        self.net = mlp([math.prod(shape) + cond_features, *hidden_dims, out_features])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        return self.net(h if cond is None else torch.cat([h, cond], dim=1))


class MLPDecoder(nn.Module):
    """(N, in_features) -> (N, *shape); hidden sizes mirror the encoder's."""

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], in_features: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.net = mlp([in_features, *reversed(hidden_dims), math.prod(shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.shape)
