"""Convolutional encoder and decoder sized from the image shape.

Each hidden layer halves (encoder) or doubles (decoder) the spatial size, so the image
side must be a multiple of 2 ** len(hidden_dims).
"""

import torch
from torch import Tensor, nn

from genexp.errors import ConfigError


def check_image_size(shape: tuple[int, ...], n_halvings: int) -> int:
    """Spatial side after the encoder; raises naming the data key if the net cannot take it."""
    if len(shape) != 3:
        raise ConfigError(f"data.shape={list(shape)} is not an image (C, H, W): a conv network needs images; "
                          f"use model/encoder=mlp model/decoder=mlp")
    side = shape[-1]
    factor = 2**n_halvings
    if shape[-1] != shape[-2] or side % factor or side < factor:
        raise ConfigError(
            f"data.image_size={side} cannot be taken by a conv network with {n_halvings} stride-2 layers "
            f"(model.encoder.hidden_dims): use a multiple of {factor}, or fewer hidden_dims, or "
            f"model/encoder=mlp model/decoder=mlp"
        )
    return side // factor


class ConvEncoder(nn.Module):
    """(N, C, H, W) -> (N, out_features): stride-2 3x3 convs with batch norm and LeakyReLU.
    An optional condition vector (N, cond_features) joins the features before the linear head."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [256, 128]"}

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], out_features: int,
                 cond_features: int = 0) -> None:
        super().__init__()
        side = check_image_size(shape, len(hidden_dims))
        layers: list[nn.Module] = []
        channels = shape[0]
        for width in hidden_dims:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
            channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(channels * side * side + cond_features, out_features)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.features(x)
        return self.head(h if cond is None else torch.cat([h, cond], dim=1))


class ConvDecoder(nn.Module):
    """(N, in_features) -> (N, C, H, W): mirrors ConvEncoder with transposed convs."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [256, 128]"}

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], in_features: int) -> None:
        super().__init__()
        self.side = check_image_size(shape, len(hidden_dims))
        widths = list(reversed(hidden_dims))
        self.widths0 = widths[0]
        self.project = nn.Linear(in_features, widths[0] * self.side * self.side)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:] + [widths[-1]]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(-1, self.widths0, self.side, self.side)
        return self.net(h)
