"""The variational bound of a diffusion model on -log p(x) (Ho et al. 2020, eq. 5 and section 3.3).

The model's generative process walks the schedule's grid t_k = k/T down from z_T ~ N(0, I) to
z_1 and decodes x from z_1. With q the forward process (z_k = sqrt(abar_k) x + sqrt(1 - abar_k) eps),
    -log p(x) <= KL(q(z_T | x) || N(0, I))                              prior: ~0 under usual schedules
               + sum_{k=2..T} KL(q(z_{k-1} | z_k, x) || p(z_{k-1} | z_k))  diffusion
               - log p(x | z_1)                                          decoder
p(z_{k-1} | z_k) is the posterior q(z_{k-1} | z_k, x0^) with the network's x0^ in place of x, so
each KL is ||mean difference||^2 / (2 var). The decoder is a Gaussian N(x0^(z_1), (1 - abar_1) /
abar_1 I) (the spread of x given z_1; about beta_1 on a discrete schedule, as Ho et al. use):
on 8-bit images the probability of each pixel's bin of width 2/255 in [-1, 1] (the discretised
decoder of Ho et al. eq. 13), so the bound is on -log P of the pixel values, comparable with the
bits/dim of flows and PixelCNN; on vectors its density.

The sum over T steps costs T network calls per example; it is estimated without bias by
stratified sampling: the steps 2..T split into at most `samples` strata, narrow at small k where the
terms are largest and the last step alone, one step drawn from each and weighted by the stratum's
size (exact when samples >= T - 1).
"""

import math

import torch
from torch import Tensor

from genexp.models.diffusion_sampling import Predictor
from genexp.models.noise_schedule import NoiseSchedule

PIXEL_HALF_BIN = 1.0 / 255.0  # half the width of an 8-bit level in [-1, 1]
MIN_PROBABILITY = 1e-12


def prior_kl(schedule: NoiseSchedule, x: Tensor) -> Tensor:
    """KL(q(z_T | x) || N(0, I)) per example, nats."""
    abar = schedule.alpha_bar_like(torch.ones(len(x)), x)
    return 0.5 * (abar * x**2 - abar - torch.log1p(-abar)).flatten(1).sum(1)


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log P(the 8-bit level x in [-1, 1]) under N(mean, std^2) integrated over the level's bin; the
    end bins reach to -inf and +inf (Ho et al. 2020, eq. 13). Elementwise."""
    upper = (x - mean + PIXEL_HALF_BIN) / std
    lower = (x - mean - PIXEL_HALF_BIN) / std
    bin_mass = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=MIN_PROBABILITY).log()
    return torch.where(x < -1 + PIXEL_HALF_BIN, torch.special.log_ndtr(upper),
                       torch.where(x > 1 - PIXEL_HALF_BIN, torch.special.log_ndtr(-lower), bin_mass))


def decoder_nll(schedule: NoiseSchedule, predict: Predictor, x: Tensor, discrete: bool,
                generator: torch.Generator | None = None) -> Tensor:
    """-log p(x | z_1) per example, with z_1 drawn from q(z_1 | x)."""
    t = torch.full((len(x),), 1.0 / schedule.steps)
    z = schedule.add_noise(x, torch.randn(x.shape, generator=generator).to(x), t)
    x0, _ = predict(z, t.to(x.device))
    abar = schedule.alpha_bar_like(t, x)
    std = ((1 - abar) / abar).sqrt().expand_as(x)
    if discrete:
        log_p = discretized_gaussian_log_prob(x, x0, std)
    else:
        log_p = -0.5 * (((x - x0) / std) ** 2 + 2 * std.log() + math.log(2 * math.pi))
    return -log_p.flatten(1).sum(1)


def diffusion_kl(schedule: NoiseSchedule, predict: Predictor, x: Tensor, samples: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """sum_{k=2..T} KL(q(z_{k-1} | z_k, x) || p(z_{k-1} | z_k)) per example, estimated by stratified sampling."""
    steps = schedule.steps
    if samples >= steps - 1:
        edges = list(range(2, steps + 2))
    else:
        # Strata narrow at small k, where the terms are large and change fast (geometric spacing), and
        # the last step alone: on the cosine schedule its beta is clipped at 0.999, and its term can
        # outweigh all others together.
        edges = torch.logspace(math.log10(2), math.log10(steps), max(samples - 1, 1) + 1, dtype=torch.float64)
        edges = torch.unique(edges.round().long()).tolist() + [steps + 1]
    total = torch.zeros(len(x), device=x.device)
    for low, high in zip(edges[:-1], edges[1:]):
        k = torch.randint(low, high, (len(x),), generator=generator)
        t, s = k / steps, (k - 1) / steps
        z = schedule.add_noise(x, torch.randn(x.shape, generator=generator).to(x), t)
        x0, _ = predict(z, t.to(x.device))
        mean_q, variance = schedule.posterior(x, z, t, s)
        mean_p, _ = schedule.posterior(x0, z, t, s)
        total += (high - low) * ((mean_q - mean_p) ** 2 / (2 * variance)).flatten(1).sum(1)
    return total


def variational_bound(schedule: NoiseSchedule, predict: Predictor, x: Tensor, discrete: bool, samples: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The bound on -log p(x) per example (nats) and its three terms."""
    terms = {"prior": prior_kl(schedule, x), "diffusion": diffusion_kl(schedule, predict, x, samples, generator),
             "decoder": decoder_nll(schedule, predict, x, discrete, generator)}
    return {"nll_bound": sum(terms.values()), **terms}
