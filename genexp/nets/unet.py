"""The U-Net that denoises images in diffusion models: (x (N, C, H, W), t (N,), labels) -> (N, C, H, W).

A U-Net (Ronneberger et al. 2015) in the variant of DDPM (Ho et al. 2020): at each level,
residual blocks (group norm, SiLU, 3x3 convs; Wu & He 2018 for group norm) to which the
embedding of the time (and of the label) is added, optionally followed by self-attention
over the feature map; the encoder halves the map between levels and keeps the output of each
block, which the decoder concatenates to its input at the same resolution on the way back up.
The network predicts whatever the diffusion model trains it on (noise, x0 or v).

It is a plain nn.Module; the benchmark and notebooks build it without Hydra, e.g.
    UNet(shape=(1, 16, 16), widths=[32, 64, 64], blocks_per_level=1, attention_resolutions=[])
(the defaults of conf/model/denoiser/unet.yaml), or with num_classes=10 for a conditional net.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.nets.time_embedding import TimeEmbedding

DOWNSAMPLES = ("conv", "avgpool")


class ResidualBlock(nn.Module):
    """x + F(x, emb): the embedding is added between the two convolutions (Ho et al. 2020)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """x + attention among all positions of the map: one head, as in DDPM (Ho et al. 2020)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (n, 1, h*w, c)
        return x + self.out(attended.transpose(-1, -2).reshape(n, c, h, w))


class Block(nn.Module):
    """One step of a level: a residual block, then self-attention where the level has it."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.residual = ResidualBlock(c_in, c_out, emb_dim, groups, dropout)
        self.attention = SelfAttention(c_out, groups) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.residual(x, emb)
        return h if self.attention is None else self.attention(h)


class Upsample(nn.Module):
    """Nearest-neighbour doubling, then a 3x3 conv (no checkerboard artefacts; Odena et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def image_shape(shape: tuple[int, ...], widths: list[int]) -> tuple[int, int, int]:
    """(C, H, W), or a ConfigError naming the keys at fault and the sizes the levels can halve."""
    if len(shape) != 3:
        raise ConfigError(f"model/denoiser=unet needs image data of shape (C, H, W), but data.shape={list(shape)}; "
                          f"use model/denoiser=mlp for vectors such as the 2D sets")
    factor = 2 ** (len(widths) - 1)
    for side in shape[1:]:
        if side % factor:
            raise ConfigError(f"data.image_size={side} cannot be halved {len(widths) - 1} times by the "
                              f"{len(widths)} levels of model.denoiser.widths={list(widths)}: the image side must "
                              f"be a multiple of {factor} (e.g. {', '.join(str(factor * k) for k in (2, 4, 8))}), "
                              f"or use fewer widths")
    return shape


class UNet(nn.Module):
    """(x (N, C, H, W), t (N,) in [0, 1], labels (N,) or None) -> (N, C, H, W).

    widths: channels per level, from the full-size map down (each level after the first halves
    the map); blocks_per_level: residual blocks per level (and as many on the way up, each
    taking one skip connection); attention_resolutions: the sides (px) of the feature maps that
    get self-attention; downsample: conv (3x3, stride 2) or avgpool (2x2 average pooling).
    The time embedding is 4 * widths[0] wide (Ho et al. 2020).
    """

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"widths": "list of int >= 1; e.g. [32, 64, 64]", "blocks_per_level": "int >= 1",
                    "dropout": "number in [0, 1)", "groups": "int >= 1", "time_embedding_dim": "int >= 2"}

    def __init__(self, shape: tuple[int, ...], widths: list[int] = (32, 64, 64), blocks_per_level: int = 1,
                 attention_resolutions: list[int] = (), dropout: float = 0.0, groups: int = 8,
                 downsample: str = "conv", time_embedding_dim: int = 32, num_classes: int | None = None) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths:
            raise ConfigError("model.denoiser.widths=[] is not allowed: it must list the channels of each level, "
                              "e.g. [32, 64, 64]")
        channels, height, _ = image_shape(tuple(int(s) for s in shape), widths)
        if bad := [w for w in widths if w % groups]:
            raise ConfigError(f"model.denoiser.groups={groups} does not divide the width {bad[0]} of "
                              f"model.denoiser.widths={widths}: group norm splits each width into that many "
                              f"groups; it must divide {math.gcd(*widths)}, the widths' greatest common divisor")
        if downsample not in DOWNSAMPLES:
            raise ConfigError(f"model.denoiser.downsample={downsample!r} is not known; allowed: "
                              f"{', '.join(DOWNSAMPLES)}")
        sides = [height // 2**i for i in range(len(widths))]
        attention = [int(r) for r in attention_resolutions]
        if missing := [r for r in attention if r not in sides]:
            raise ConfigError(f"model.denoiser.attention_resolutions={attention}: no level has a {missing[0]} px "
                              f"feature map; with data.image_size={height} and model.denoiser.widths={widths} "
                              f"the maps are {sides} px ([] = no attention)")

        emb_dim = 4 * widths[0]
        self.embedding = TimeEmbedding(time_embedding_dim, emb_dim, num_classes)
        self.conv_in = nn.Conv2d(channels, widths[0], 3, padding=1)

        def level(c_in: int, width: int, side: int, skips: list[int] | None = None) -> nn.ModuleList:
            blocks = []
            for i in range(blocks_per_level):
                c = (c_in if i == 0 else width) + (skips.pop() if skips is not None else 0)
                blocks.append(Block(c, width, emb_dim, groups, dropout, side in attention))
            return nn.ModuleList(blocks)

        # Encoder: every level but the lowest, each followed by a halving; its blocks' outputs are the skips.
        self.down, self.downsamples, skips, c = nn.ModuleList(), nn.ModuleList(), [], widths[0]
        for width, side in zip(widths[:-1], sides):
            self.down.append(level(c, width, side))
            skips += [width] * blocks_per_level
            self.downsamples.append(nn.Conv2d(width, width, 3, stride=2, padding=1) if downsample == "conv"
                                    else nn.AvgPool2d(2))
            c = width
        self.middle = level(c, widths[-1], sides[-1])
        # Decoder: the encoder's levels in reverse, each after a doubling, each block taking one skip.
        self.upsamples, self.up, c = nn.ModuleList(), nn.ModuleList(), widths[-1]
        for width, side in reversed(list(zip(widths[:-1], sides))):
            self.upsamples.append(Upsample(c))
            self.up.append(level(c, width, side, skips))
            c = width
        self.head = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1))
        # A zero last layer: the net starts by predicting 0 everywhere, the mean of its targets, as
        # in the reference code of DDPM (Ho et al. 2020) and improved DDPM (Nichol & Dhariwal 2021).
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = F.silu(self.embedding(t, labels, batch_size=len(x)))  # each block reads it through its own layer
        h, skips = self.conv_in(x), []
        for blocks, downsample in zip(self.down, self.downsamples):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = downsample(h)
        for block in self.middle:
            h = block(h, emb)
        for upsample, blocks in zip(self.upsamples, self.up):
            h = upsample(h)
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.head(h)
