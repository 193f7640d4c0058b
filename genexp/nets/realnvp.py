"""RealNVP (Dinh et al. 2017): a flow of affine coupling layers.

A coupling layer keeps the masked part x_a = m * x and moves the rest by an affine map whose
scale s and shift t are computed from x_a alone:
    y = x * exp(s(x_a)) + t(x_a)   where (1 - m) is 1, and y = x where m is 1.
Its Jacobian is triangular, so log |det dy/dx| = sum of s over the moved part, and the
inverse is as cheap as the forward pass. Alternating masks let every dimension be moved.

Vectors use alternating masks and MLPs for s and t. Images use checkerboard masks (on
pixels) and channel masks (on halves of the channels after a 2x2 squeeze) with small conv
nets, in Dinh et al.'s multi-scale architecture: after each scale half of the channels
leave the flow as latent variables and the rest go on to the next scale.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.nets.density import require_image
from genexp.nets.flow import Bijection, Chain, Flatten, Flow, zero_last_layer
from genexp.nets.mlp import mlp

MASKS = ("auto", "alternating", "checkerboard", "channel")


class AffineCoupling(Bijection):
    def __init__(self, mask: Tensor, net: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = net  # x_a -> (s, t) stacked on dim 1
        # A learned bound on |s| per channel (per dimension for vectors): tanh keeps early steps stable.
        self.scale = nn.Parameter(torch.ones(mask.shape[0], *[1] * (mask.dim() - 1)))

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(kept).chunk(2, dim=1)
        moved = 1.0 - self.mask
        return self.scale * torch.tanh(s) * moved, t * moved

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(x * self.mask)
        return x * s.exp() + t, s.flatten(1).sum(1)  # s = t = 0 on the kept part

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._scale_shift(y * self.mask)  # the kept part passed through unchanged
        return (y - t) * (-s).exp()


class Squeeze(Bijection):
    """(C, H, W) -> (4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels (a permutation)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


class Scale(Bijection):
    """One scale of the multi-scale architecture: its layers, then half of the channels are
    factored out as latent variables and the other half goes through the next scale.
    The output is flat: (N, D), factored-out variables first."""

    def __init__(self, layers: Chain, out_shape: tuple[int, int, int], next_scale: "Scale | None") -> None:
        super().__init__()
        self.layers = layers
        self.out_shape = out_shape
        self.next_scale = next_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, logdet = self.layers(x)
        if self.next_scale is None:
            return h.flatten(1), logdet
        h, factored = h.chunk(2, dim=1)
        z, next_logdet = self.next_scale(h)
        return torch.cat([factored.flatten(1), z], dim=1), logdet + next_logdet

    def inverse(self, y: Tensor) -> Tensor:
        c, height, width = self.out_shape
        if self.next_scale is None:
            return self.layers.inverse(y.view(-1, c, height, width))
        n_factored = (c // 2) * height * width
        factored = y[:, :n_factored].view(-1, c // 2, height, width)
        h = self.next_scale.inverse(y[:, n_factored:])
        return self.layers.inverse(torch.cat([h, factored], dim=1))


def alternating_mask(dims: int, parity: int) -> Tensor:
    return (torch.arange(dims) % 2 == parity).float()


def checkerboard_mask(shape: tuple[int, int, int], parity: int) -> Tensor:
    c, h, w = shape
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    return ((rows + cols) % 2 == parity).float().expand(c, h, w).contiguous()


def channel_mask(shape: tuple[int, int, int], parity: int) -> Tensor:
    c, h, w = shape
    return ((torch.arange(c) < c // 2) == bool(parity)).float()[:, None, None].expand(c, h, w).contiguous()


def mlp_coupling_net(dims: int, hidden_dims: list[int]) -> nn.Sequential:
    return zero_last_layer(mlp([dims, *hidden_dims, 2 * dims]))


def conv_coupling_net(channels: int, hidden_channels: int) -> nn.Sequential:
    """3x3 -> 1x1 -> 3x3 convs, as in the coupling networks of Glow (Kingma & Dhariwal 2018)."""
    return zero_last_layer(nn.Sequential(
        nn.Conv2d(channels, hidden_channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hidden_channels, hidden_channels, 1), nn.ReLU(),
        nn.Conv2d(hidden_channels, 2 * channels, 3, padding=1),
    ))


class RealNVP(Flow):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_couplings": "int >= 1", "hidden_dims": "list of int >= 1; e.g. [256, 128]",
                    "couplings_per_scale": "int >= 1", "n_scales": "int >= 1", "hidden_channels": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], mask: str = "auto", n_couplings: int = 16,
                 hidden_dims: list[int] = (128, 128), couplings_per_scale: int = 3, n_scales: int = 2,
                 hidden_channels: int = 32) -> None:
        if mask not in MASKS:
            raise ConfigError(f"model.density.mask={mask!r} is not known; allowed: {', '.join(MASKS)}")
        if mask == "auto":
            mask = "checkerboard+channel" if len(shape) == 3 else "alternating"
        if mask == "alternating":
            dims = math.prod(shape)
            couplings = [AffineCoupling(alternating_mask(dims, i % 2), mlp_coupling_net(dims, list(hidden_dims)))
                         for i in range(n_couplings)]
            transform = Chain([Flatten(shape), *couplings])
        else:
            shape = require_image(shape, "realnvp", f"with model.density.mask={mask}")
            transform = self._multi_scale(shape, mask, couplings_per_scale, n_scales, hidden_channels)
        super().__init__(shape, transform)

    @staticmethod
    def _multi_scale(shape: tuple[int, int, int], mask: str, couplings_per_scale: int, n_scales: int,
                     hidden_channels: int) -> Scale:
        checkerboard, channel = "checkerboard" in mask, "channel" in mask
        # Each scale but the last squeezes once; a channel-only last scale squeezes once more.
        factor = 2 ** (n_scales - checkerboard)
        if shape[1] % factor or shape[2] % factor:
            raise ConfigError(f"data.image_size={shape[2]} cannot be taken by realnvp with model.density.n_scales="
                              f"{n_scales} and mask={mask}: the side must be a multiple of {factor}")

        def couplings(shape: tuple[int, int, int], make_mask) -> list[Bijection]:
            return [AffineCoupling(make_mask(shape, i % 2), conv_coupling_net(shape[0], hidden_channels))
                    for i in range(couplings_per_scale)]

        def scale(shape: tuple[int, int, int], scales_left: int) -> Scale:
            last = scales_left == 1
            layers = couplings(shape, checkerboard_mask) if checkerboard else []
            if not (last and checkerboard):
                layers.append(Squeeze())
                shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
                if channel:
                    layers += couplings(shape, channel_mask)
            next_scale = None if last else scale((shape[0] // 2, shape[1], shape[2]), scales_left - 1)
            return Scale(Chain(layers), shape, next_scale)

        return scale(shape, n_scales)
