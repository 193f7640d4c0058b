"""The denoising network of diffusion models on vectors (the 2D toy sets):
(x (N, D), t (N,), labels) -> (N, D).

An MLP of residual blocks (He et al. 2016) with layer norm and SiLU, each conditioned on the
embedding of the time (and of the label) by adding it to its hidden layer, as the residual
blocks of the DDPM U-Net are (Ho et al. 2020). It predicts whatever the diffusion model
trains it on (noise, x0 or v).
"""

import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.nets.time_embedding import TimeEmbedding


class ResidualLayer(nn.Module):
    """h + W2 SiLU(W1 SiLU(LayerNorm(h)) + E emb)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(F.silu(self.norm(h))) + self.emb(emb)))


class MLPDenoiser(nn.Module):
    """(x (N, D), t (N,) in [0, 1], labels (N,) or None) -> (N, D).

    width: the hidden layers' size (also the embedding's); depth: the number of residual blocks.
    """

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"width": "int >= 1", "depth": "int >= 1", "time_embedding_dim": "int >= 2"}

    def __init__(self, shape: tuple[int, ...], width: int = 128, depth: int = 3, time_embedding_dim: int = 32,
                 num_classes: int | None = None) -> None:
        super().__init__()
        if len(shape) != 1:
            raise ConfigError(f"model/denoiser=mlp takes vectors such as the 2D sets, but data.shape={list(shape)}; "
                              f"use model/denoiser=unet for images")
        dims = int(shape[0])
        self.embedding = TimeEmbedding(time_embedding_dim, width, num_classes)
        self.input = nn.Linear(dims, width)
        self.blocks = nn.ModuleList([ResidualLayer(width) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dims))
        # A zero last layer: the net starts by predicting 0, the mean of its targets (as the U-Net).
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = F.silu(self.embedding(t, labels, batch_size=len(x)))
        h = self.input(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h)
