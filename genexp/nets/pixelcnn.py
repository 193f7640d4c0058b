"""PixelCNN (van den Oord et al. 2016): p(x) = prod_i p(x_i | x_1..x_{i-1}), pixels in raster order.

Every conditional is a softmax over `levels` pixel values (256, or 17 for the digits'
levels, or 2 for binarised images), computed for all pixels in one pass by convolutions
whose kernels are masked so that a pixel never sees itself or the pixels after it.
Sampling runs H * W * C passes, one per pixel and channel.

A discrete density: log_prob and sample take and give values in [0, 1], quantised to
`levels` equally spaced levels (round(x * (levels - 1))).
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.nets.density import Density, require_affordable_sampling, require_image


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution that sees the rows above and the pixels to the left in its row.

    At the centre pixel, channels are split into one group per data channel (R, G, B order):
    group g sees groups < g (type A, first layer) or groups <= g (type B, later layers).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str,
                 data_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        centre = kernel_size // 2
        mask = torch.zeros_like(self.weight)
        mask[:, :, :centre, :] = 1.0
        mask[:, :, centre, :centre] = 1.0
        out_group = torch.arange(out_channels) * data_channels // out_channels
        in_group = torch.arange(in_channels) * data_channels // in_channels
        sees = out_group[:, None] > in_group[None, :] if mask_type == "A" else out_group[:, None] >= in_group[None, :]
        mask[:, :, centre, centre] = sees.float()
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    """1x1 (halve the width) -> masked 3x3 -> 1x1 (restore), added to the input (van den Oord et al. 2016, fig. 5)."""

    def __init__(self, channels: int, data_channels: int) -> None:
        super().__init__()
        conv = partial(MaskedConv2d, mask_type="B", data_channels=data_channels)
        half = max(data_channels, channels // 2)
        self.net = nn.Sequential(nn.ReLU(), conv(channels, half, 1), nn.ReLU(), conv(half, half, 3),
                                 nn.ReLU(), conv(half, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class PixelCNN(Density):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"levels": "int in [2, 256]; from binarised (2) to 8-bit (256)", "hidden_channels": "int >= 1",
                    "n_blocks": "int >= 0", "max_dims": "int >= 1"}
    discrete = True

    def __init__(self, shape: tuple[int, ...], levels: int = 256, hidden_channels: int = 64,
                 n_blocks: int = 5, first_kernel: int = 7, max_dims: int = 1024) -> None:
        channels, height, width = require_image(shape, "pixelcnn", "(autoregressive over pixels)")
        if first_kernel % 2 == 0 or first_kernel < 1:
            raise ConfigError(f"model.density.first_kernel={first_kernel} must be an odd integer >= 1 (centred)")
        super().__init__(shape)
        require_affordable_sampling(self.dims, max_dims, "pixelcnn")
        self.levels = levels
        # How far (rows up, columns either way) a pixel's logits can see: the first kernel's
        # radius plus one per masked 3x3 convolution.
        self.reach = first_kernel // 2 + n_blocks
        conv = partial(MaskedConv2d, mask_type="B", data_channels=channels)
        self.net = nn.Sequential(
            MaskedConv2d(channels, hidden_channels, first_kernel, "A", channels),
            *[ResidualBlock(hidden_channels, channels) for _ in range(n_blocks)],
            nn.ReLU(), conv(hidden_channels, hidden_channels, 1),
            nn.ReLU(), conv(hidden_channels, channels * levels, 1),
        )

    def to_levels(self, x: Tensor) -> Tensor:
        """Values in [0, 1] -> level indices 0..levels-1."""
        return (x * (self.levels - 1)).round().clamp(0, self.levels - 1).long()

    def inputs(self, levels: Tensor) -> Tensor:
        """Level indices -> the network's input values in [-1, 1]."""
        return levels.float() * (2.0 / (self.levels - 1)) - 1.0

    def logits(self, inputs: Tensor) -> Tensor:
        """(N, C, H, W) inputs -> (N, levels, C, H, W) logits of each pixel given the ones before it."""
        n, c, h, w = inputs.shape
        return self.net(inputs).view(n, c, self.levels, h, w).transpose(1, 2)

    def pixel_logits(self, inputs: Tensor, i: int, j: int) -> Tensor:
        """(N, levels, C) logits of pixel (i, j), computed on the window of the image it can see:
        the same values as logits(inputs)[..., i, j] (the window's edges inside the image lie
        beyond its receptive field), at a fraction of the cost on large images."""
        top, left, right = max(0, i - self.reach), max(0, j - self.reach), j + self.reach + 1
        return self.logits(inputs[:, :, top:i + 1, left:right])[..., i - top, j - left]

    def log_prob(self, x: Tensor) -> Tensor:
        target = self.to_levels(x)
        logits = self.logits(self.inputs(target))
        return -F.cross_entropy(logits, target, reduction="none").flatten(1).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        channels, height, width = self.shape
        levels = torch.zeros(n, channels, height, width, dtype=torch.long, device=self.device)
        inputs = self.inputs(levels)  # the values not drawn yet are never seen (masked)
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    logits = self.pixel_logits(inputs, i, j)[:, :, c]
                    levels[:, c, i, j] = (logits + self.gumbel(n, self.levels, generator=generator)).argmax(1)
                    inputs[:, c, i, j] = self.inputs(levels[:, c, i, j])
        return levels.float() / (self.levels - 1)
