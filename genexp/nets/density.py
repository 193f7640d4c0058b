"""What every density network offers: log p(x) for a batch and samples from p.

A density net models one variable of fixed `shape`. Continuous densities (Gaussian,
mixture, flows) give a log density in nats; discrete ones (`discrete = True`, PixelCNN)
give the log probability of pixel levels. Nets know nothing of training or of how data
was scaled: the maximum-likelihood module (genexp.models.maximum_likelihood) takes care of that.
"""

import math

import torch
from torch import Tensor, nn

from genexp.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


class Density(nn.Module):
    discrete = False

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.dims = math.prod(self.shape)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) of each example of a (N, *shape) batch, in nats: shape (N,)."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws from p, shape (n, *shape)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def standard_normal(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """N(0, I) noise drawn on the CPU, so a seeded generator gives the same draws on any device."""
        return torch.randn(*shape, generator=generator).to(self.device)

    def gumbel(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Gumbel(0, 1) noise: argmax(logits + gumbel) is a draw from softmax(logits) (Gumbel-max trick)."""
        uniform = torch.rand(*shape, generator=generator).clamp_(1e-12, 1.0 - 1e-7)
        return (-torch.log(-torch.log(uniform))).to(self.device)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) of each example, summed over all dimensions."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)


def require_image(shape: tuple[int, ...], model: str, what: str) -> tuple[int, int, int]:
    """(C, H, W), or a ConfigError saying that this density needs images."""
    if len(shape) != 3:
        raise ConfigError(f"model={model} {what} needs image data of shape (C, H, W), but data.shape="
                          f"{list(shape)}; use an image data set (e.g. data=digits) or another model")
    return shape


def require_affordable_sampling(dims: int, max_dims: int, model: str) -> None:
    """Autoregressive sampling takes one network pass per dimension: refuse data whose sample grids
    would take hours on a CPU, with the key that lifts the limit (fine on a GPU)."""
    if dims > max_dims:
        raise ConfigError(f"model={model} samples one value at a time: data of {dims} values (data.shape) "
                          f"needs {dims} network passes per sample; the limit is model.density.max_dims="
                          f"{max_dims}. Raise it (e.g. on a GPU) or use smaller images (data.image_size)")

