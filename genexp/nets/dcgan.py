"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image shape.

An image side is base * 2**k with base in 4..7 and k >= 1 (8, 16, 28, 32, 64, 128 ...):
the generator projects z to a base x base map and doubles it k times with 4x4 transposed
convolutions; the discriminator halves the image k times with 4x4 convolutions and reads
one score from the base x base map. Widths double as the maps shrink, from `width` at the
largest hidden map. The discriminator's normalisation is a choice: batch norm (DCGAN),
layer norm or none (a WGAN-GP critic, Gulrajani et al. 2017, whose per-sample gradient
penalty batch norm would break), optionally with spectral norm (Miyato et al. 2018).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm

from genexp.errors import ConfigError

BASE_SIDES = range(4, 8)
D_NORMS = ("batch", "layer", "none")
CONDITIONINGS = ("projection", "concat")


def dcgan_layout(shape: tuple[int, ...]) -> tuple[int, int]:
    """(base side, number of stride-2 layers) for a (C, H, W) shape; ConfigError naming data.image_size otherwise."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(f"DCGAN nets need square images (C, H, W); data.shape={list(shape)} (for vectors such as "
                          f"the 2D sets: model=gan_2d, or model/generator=mlp model/discriminator=mlp)")
    side, halvings = shape[-1], 0
    while side % 2 == 0 and side // 2 >= BASE_SIDES[0]:
        side, halvings = side // 2, halvings + 1
    if halvings == 0 or side not in BASE_SIDES:
        raise ConfigError(f"data.image_size={shape[-1]} cannot be taken by the DCGAN nets: the side must be "
                          f"b * 2**k with b in 4..7 and k >= 1 (e.g. 8, 16, 28, 32, 64)")
    return side, halvings


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), batch-norm scales from N(1, 0.02) (Radford et al. 2016)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """(z (N, latent_dim), labels (N,) or None) -> images (N, C, H, W) in [-1, 1] (tanh).
    A class-conditional generator appends a learned class embedding to z."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"width": "int >= 1", "class_embed_dim": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], latent_dim: int, width: int = 64,
                 num_classes: int | None = None, class_embed_dim: int = 16) -> None:
        super().__init__()
        base, halvings = dcgan_layout(shape)
        widths = [width * 2**i for i in reversed(range(halvings))]  # e.g. 512, 256, 128, 64
        self.embed = nn.Embedding(num_classes, class_embed_dim) if num_classes else None
        in_features = latent_dim + (class_embed_dim if num_classes else 0)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_features, widths[0], base, bias=False),  # project and reshape
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], shape[0], 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """(images (N, C, H, W), labels (N,) or None) -> one unbounded score per image (N,).

    Class conditioning: `projection` adds <embed(y), features> to the score (Miyato & Koyama
    2018); `concat` appends the one-hot label as constant image channels (Mirza & Osindero 2014).
    """

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"width": "int >= 1", "dropout": "number in [0, 1)"}

    def __init__(self, shape: tuple[int, ...], width: int = 64, norm: str = "batch", dropout: float = 0.0,
                 spectral_norm: bool = False, num_classes: int | None = None,
                 conditioning: str = "projection") -> None:
        super().__init__()
        if norm not in D_NORMS:
            raise ConfigError(f"model.discriminator.norm={norm!r} is not known; allowed: {', '.join(D_NORMS)}")
        if conditioning not in CONDITIONINGS:
            raise ConfigError(f"model.discriminator.conditioning={conditioning!r} is not known; "
                              f"allowed: {', '.join(CONDITIONINGS)}")
        base, halvings = dcgan_layout(shape)
        self.num_classes = num_classes
        self.concat = bool(num_classes) and conditioning == "concat"
        channels = shape[0] + (num_classes if self.concat else 0)
        layers: list[nn.Module] = []
        for i in range(halvings):
            out = width * 2**i
            normalise = norm != "none" and i > 0  # never on the input layer (Radford et al. 2016)
            layers.append(nn.Conv2d(channels, out, 4, 2, 1, bias=not normalise))
            if normalise:
                layers.append(nn.BatchNorm2d(out) if norm == "batch" else nn.GroupNorm(1, out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if dropout:
                layers.append(nn.Dropout(dropout))
            channels = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = channels * base * base
        self.score = nn.Linear(n_features, 1)  # = a base x base 'valid' convolution
        self.project = nn.Embedding(num_classes, n_features) if num_classes and not self.concat else None
        dcgan_init(self)
        if spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    with_spectral_norm(m)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.concat:
            onehot = F.one_hot(labels, self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.features(x)
        out = self.score(h).squeeze(1)
        if self.project is not None:
            out = out + (self.project(labels) * h).sum(dim=1)
        return out
