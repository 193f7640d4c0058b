"""The decoder's distribution p(x|z): what an autoencoder's reconstruction term measures.

- bernoulli: each value is the probability of a binary pixel (Kingma & Welling 2014). On grey
  values in [0, 1] it is the binary cross-entropy the book trains with; it is a normalised
  likelihood only for binary data, so its NLL is not a density of grey images.
- gaussian: N(x; mean, sigma^2 I) with a fixed sigma, or with one shared sigma learned with the
  network (the calibrated decoder of Rybkin et al. 2021). On bounded data the mean is squashed
  into the data's value range, as the book's sigmoid output layers do.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import ConfigError
from genexp.value_range import from_unit

LIKELIHOODS = ("bernoulli", "gaussian")
MIN_LOG_SIGMA = math.log(1e-3)  # a learned sigma may not collapse onto the data


class BernoulliLikelihood(nn.Module):
    discrete = True

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x|z) per sample, summed over dimensions; `out` is the decoder's raw output (logits)."""
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)


class GaussianLikelihood(nn.Module):
    discrete = False

    def __init__(self, sigma: float, learn_sigma: bool, value_range: tuple[float, float] | None) -> None:
        super().__init__()
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.value_range = value_range

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.clamp(min=MIN_LOG_SIGMA).exp()

    def mean(self, out: Tensor) -> Tensor:
        if self.value_range is None:
            return out
        return from_unit(torch.sigmoid(out), self.value_range)

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x|z) per sample, summed over dimensions; `out` is the decoder's raw output."""
        log_sigma = self.log_sigma.clamp(min=MIN_LOG_SIGMA)
        z = (x - self.mean(out)) / log_sigma.exp()
        return -(0.5 * z.pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


DEFAULT_SIGMA = 0.1  # of the gaussian likelihood, where model.sigma is null


def make_likelihood(likelihood: str, value_range: tuple[float, float] | None, sigma: float | None = None,
                    learn_sigma: bool = False) -> nn.Module:
    """The configured p(x|z), after checking that the data's value range suits it (and that no
    setting of the other likelihood is given: it would be ignored)."""
    if likelihood not in LIKELIHOODS:
        raise ConfigError(f"model.likelihood={likelihood!r} is not known; allowed: {', '.join(LIKELIHOODS)}")
    if likelihood == "bernoulli":
        if sigma is not None or learn_sigma:
            raise ConfigError("model.sigma and model.learn_sigma are read by model.likelihood=gaussian only; "
                              "leave them null and false with the bernoulli likelihood")
        if value_range != (0.0, 1.0):
            shown = None if value_range is None else list(value_range)
            raise ConfigError(f"model.likelihood=bernoulli needs data in [0, 1] but data.value_range={shown}; "
                              f"use model.likelihood=gaussian, or data.value_range=[0.0, 1.0] for images")
        return BernoulliLikelihood()
    sigma = DEFAULT_SIGMA if sigma is None else sigma
    if sigma <= 0:
        raise ConfigError(f"model.sigma={sigma} must be > 0")
    return GaussianLikelihood(sigma, learn_sigma, value_range)


def bits_per_dim(nll: Tensor, shape: tuple[int, ...], likelihood: nn.Module,
                 value_range: tuple[float, float] | None) -> Tensor:
    """An NLL in nats per sample as bits per dimension.

    A density over images in [low, high] is turned into one over 8-bit pixel values (256 levels
    per value range), the convention of dequantised density models (Theis et al. 2016), so the
    numbers of both families can be set side by side.
    """
    bits = nll / (math.prod(shape) * math.log(2))
    if likelihood.discrete or value_range is None:
        return bits
    low, high = value_range
    return bits + math.log2(256 / (high - low))
