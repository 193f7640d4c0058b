"""Energy networks E_theta(x) -> one unbounded real number per example, (N,).

An energy-based model defines p_theta(x) = exp(-E_theta(x)) / Z_theta: low energy, high
probability (LeCun et al. 2006). The nets are plain scalar functions of the input with smooth
activations (swish, x * sigmoid(x), Ramachandran et al. 2017), because Langevin sampling follows
their input gradient: a ReLU net's gradient is piecewise constant.
"""

import math

from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.nets.mlp import mlp


class MLPEnergy(nn.Module):
    """A fully connected energy for data of any shape, flattened (the 2D sets, small images)."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [128, 128]"}

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int]) -> None:
        super().__init__()
        self.net = mlp([math.prod(shape), *hidden_dims, 1], activation=nn.SiLU)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class ConvEnergy(nn.Module):
    """The energy net of Foster (2023, ch. 7) after Du & Mordatch (2019): stride-2 convolutions
    with swish (a 5x5 kernel first, then 3x3), flattened, a swish dense layer and a linear output.
    Padding makes each side ceil(side / 2), so any image size is taken."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"channels": "list of int >= 1; e.g. [16, 32, 64, 64]", "hidden_dim": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], channels: list[int], hidden_dim: int = 64) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"data.shape={list(shape)} is not an image (C, H, W): model/energy=conv needs images; "
                              f"use model/energy=mlp")
        layers: list[nn.Module] = []
        in_channels, height, width = shape
        for i, out_channels in enumerate(channels):
            kernel = 5 if i == 0 else 3
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2), nn.SiLU()]
            in_channels, height, width = out_channels, (height + 1) // 2, (width + 1) // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(in_channels * height * width, hidden_dim), nn.SiLU(),
                                  nn.Linear(hidden_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)

