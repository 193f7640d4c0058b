"""Fully connected networks for data of any shape (images or vectors), flattened: an encoder and
decoder (autoencoders), a generator and discriminator (GANs on vectors)."""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


def mlp(sizes: list[int], activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
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

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [256, 128]"}

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], out_features: int,
                 cond_features: int = 0) -> None:
        super().__init__()
        self.net = mlp([math.prod(shape) + cond_features, *hidden_dims, out_features])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        return self.net(h if cond is None else torch.cat([h, cond], dim=1))


class MLPDecoder(nn.Module):
    """(N, in_features) -> (N, *shape); hidden sizes mirror the encoder's."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [256, 128]"}

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], in_features: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.net = mlp([in_features, *reversed(hidden_dims), math.prod(shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.shape)


class MLPGenerator(nn.Module):
    """(z (N, latent_dim), labels (N,) or None) -> (N, *shape): unbounded (a linear output) for
    vectors such as the 2D toy sets, in [-1, 1] (tanh) for images, as the GAN expects. A
    class-conditional generator appends a learned class embedding to z."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [256, 128]", "class_embed_dim": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden_dims: list[int],
                 num_classes: int | None = None, class_embed_dim: int = 16) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.embed = nn.Embedding(num_classes, class_embed_dim) if num_classes else None
        in_features = latent_dim + (class_embed_dim if num_classes else 0)
        self.net = mlp([in_features, *hidden_dims, math.prod(shape)])
        if len(self.shape) == 3:
            self.net.append(nn.Tanh())

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """(x (N, *shape), labels (N,) or None) -> one unbounded score per example (N,), LeakyReLU
    between layers; class conditioning by projection (Miyato & Koyama 2018)."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"hidden_dims": "list of int >= 1; e.g. [256, 128]"}

    def __init__(self, shape: tuple[int, ...], hidden_dims: list[int], num_classes: int | None = None,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.features = mlp([math.prod(shape), *hidden_dims], activation=lambda: nn.LeakyReLU(0.2))
        self.features.append(nn.LeakyReLU(0.2))
        self.score = nn.Linear(hidden_dims[-1], 1)
        self.project = nn.Embedding(num_classes, hidden_dims[-1]) if num_classes else None
        if spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.features(x.flatten(1))
        out = self.score(h).squeeze(1)
        if self.project is not None:
            out = out + (self.project(labels) * h).sum(dim=1)
        return out
