"""What a denoising network is told besides the noisy data: the diffusion time and, optionally, a label.

The time t in [0, 1] becomes sinusoids of geometrically spaced frequencies, as a transformer
embeds positions (Vaswani et al. 2017) and DDPM its step index (Ho et al. 2020), then an MLP
maps them to the width the network's blocks read. A class label adds a learned vector; the
value num_classes is the "no label" class that classifier-free guidance trains and samples
with (Ho & Salimans 2021).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# t is scaled to the range of a step index of a 1000-step schedule: the frequencies then spread
# over t as in DDPM, whether the schedule is discrete (t = step / T) or continuous.
TIME_SCALE = 1000.0
MAX_PERIOD = 10000.0  # the slowest sinusoid's period, in scaled time (Vaswani et al. 2017)


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = TIME_SCALE, max_period: float = MAX_PERIOD) -> Tensor:
    """(N,) times -> (N, dim) of values in [-1, 1]: sin and cos of scale * t at the frequencies
    max_period ** (-k / half), k = 0 .. half - 1 with half = dim // 2; an odd dim ends in a zero."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[:, None] * frequencies[None, :]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))


class TimeEmbedding(nn.Module):
    """(t (N,) in [0, 1], labels (N,) or None) -> (N, out_features): the vector that a network's
    blocks are conditioned on. With num_classes, labels 0..num_classes-1 are classes and
    num_classes (or labels=None) is the null label; without it, the net is unconditional and
    refuses labels."""

    def __init__(self, dim: int, out_features: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.mlp = nn.Sequential(nn.Linear(dim, out_features), nn.SiLU(), nn.Linear(out_features, out_features))
        self.labels = nn.Embedding(num_classes + 1, out_features) if num_classes else None

    def forward(self, t: Tensor, labels: Tensor | None = None, batch_size: int | None = None) -> Tensor:
        n = batch_size if batch_size is not None else len(t)
        if t.dim() == 0:  # one time for the whole batch
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must have shape ({n},) (one time per example), not {tuple(t.shape)}")
        weight = self.mlp[0].weight
        emb = self.mlp(sinusoidal_embedding(t.to(weight.device), self.dim).to(weight.dtype))
        if self.labels is None:
            if labels is not None:
                raise ValueError("labels were given to an unconditional network (built with num_classes=None)")
            return emb
        if labels is None:
            labels = torch.full((n,), self.num_classes, dtype=torch.long, device=weight.device)
        return emb + self.labels(labels)
