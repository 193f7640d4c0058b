"""Masked autoregressive flow, MAF (Papamakarios et al. 2017), built from MADE blocks (Germain et al. 2015).

Each layer is an autoregressive affine map: x_i = u_i * exp(alpha_i) + mu_i, where mu_i and
alpha_i depend on x_1..x_{i-1} only. One MADE pass computes all (mu_i, alpha_i) at once, so
the density u = (x - mu(x)) * exp(-alpha(x)), log|det du/dx| = -sum_i alpha_i is one pass;
sampling needs D passes, one per dimension. The order is reversed between layers.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.nets.density import require_affordable_sampling
from genexp.nets.flow import Bijection, Chain, Flatten, Flow, Reverse, zero_last_layer

# |alpha| stays below this (softly): one layer scales a dimension by at most e^5.
ALPHA_BOUND = 5.0


class MaskedLinear(nn.Linear):
    """A linear layer whose weights are multiplied by a fixed 0/1 mask."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(N, D) -> (N, n_params, D) where output d depends on inputs 0..d-1 only.

    Each unit gets a degree: input d has degree d, hidden units cycle through 0..D-2. A hidden
    unit sees units of degree <= its own, an output of dimension d sees hidden units of degree < d.
    """

    def __init__(self, dims: int, hidden_dims: list[int], n_params: int = 2) -> None:
        super().__init__()
        self.dims, self.n_params = dims, n_params
        degrees = [torch.arange(dims)] + [torch.arange(width) % max(1, dims - 1) for width in hidden_dims]
        layers: list[nn.Module] = []
        for seen, unit in zip(degrees[:-1], degrees[1:]):
            layers += [MaskedLinear((unit[:, None] >= seen[None, :]).float()), nn.ReLU()]
        outputs = torch.arange(dims).repeat(n_params)
        layers.append(MaskedLinear((outputs[:, None] > degrees[-1][None, :]).float()))
        self.net = zero_last_layer(nn.Sequential(*layers))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1, self.n_params, self.dims)


class AutoregressiveAffine(Bijection):
    """One MAF layer, data to noise: u = (x - mu(x)) * exp(-alpha(x))."""

    def __init__(self, dims: int, hidden_dims: list[int]) -> None:
        super().__init__()
        self.made = MADE(dims, hidden_dims)

    def _shift_log_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, alpha = self.made(x).unbind(1)
        return mu, ALPHA_BOUND * torch.tanh(alpha / ALPHA_BOUND)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, alpha = self._shift_log_scale(x)
        return (x - mu) * (-alpha).exp(), -alpha.sum(1)

    def inverse(self, u: Tensor) -> Tensor:
        # After pass i, dimensions 0..i are final: each depends only on the ones before it.
        x = torch.zeros_like(u)
        for _ in range(u.shape[1]):
            mu, alpha = self._shift_log_scale(x)
            x = u * alpha.exp() + mu
        return x


class MAF(Flow):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_layers": "int >= 1", "hidden_dims": "list of int >= 1; e.g. [256, 128]", "max_dims": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], n_layers: int = 10, hidden_dims: list[int] = (128, 128),
                 max_dims: int = 1024) -> None:
        dims = math.prod(shape)
        require_affordable_sampling(dims, max_dims, "maf")
        layers: list[Bijection] = [Flatten(shape)]
        for i in range(n_layers):
            layers += [Reverse()] if i else []
            layers.append(AutoregressiveAffine(dims, list(hidden_dims)))
        super().__init__(shape, Chain(layers))
