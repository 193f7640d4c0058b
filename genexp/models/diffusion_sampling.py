"""Samplers of diffusion models: from noise x_1 ~ N(0, I) back to data along a grid of times.

Both walk 1 = t_0 > t_1 > ... > t_S = 0 (NoiseSchedule.sampling_times), asking the network at each
t_i for its predictions (x0^, eps^) of the clean data and of the noise in x_t:
  ancestral (DDPM, Ho et al. 2020): x_s ~ q(x_s | x_t, x_0 = x0^), the posterior between the two times;
  DDIM (Song et al. 2021):  x_s = sqrt(abar_s) x0^ + sqrt(1 - abar_s - sigma^2) eps^ + sigma z,
      sigma^2 = eta^2 * Var q(x_s | x_t, x_0): eta = 0 is deterministic given x_1 (an ODE solver), eta = 1
      has the ancestral sampler's variances, and so the same process (Song et al. 2021, eq. 16).
The last step returns x0^ of the last prediction: on a discrete schedule (abar(0) = 1) that is what
either update gives at s = 0; on a continuous one that never reaches abar = 1 (the book's), it is the
book's final denoised image.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from genexp.console import progress
from genexp.models.noise_schedule import NoiseSchedule

SAMPLERS = ("ddpm", "ddim")
# (x_t, t per example) -> (x0^, eps^)
Predictor = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def reverse_diffusion(schedule: NoiseSchedule, predict: Predictor, x: Tensor, steps: int, sampler: str = "ddim",
                      eta: float = 0.0, generator: torch.Generator | None = None, n_frames: int = 0,
                      show_progress: bool = False) -> tuple[Tensor, list[Tensor]]:
    """x_1 = `x` -> samples, and `n_frames` states x_t evenly spaced along the way (x_1 first, the
    samples last) when asked. Noise is drawn on the CPU from `generator`, so a seed gives the same
    samples on any device."""
    times = schedule.sampling_times(steps)
    keep = set(torch.linspace(0, steps, n_frames).round().long().tolist()) if n_frames else set()
    frames = [x] if 0 in keep else []
    indices = range(steps)
    for i in progress(indices, f"sampling ({sampler}, {steps} steps)") if show_progress else indices:
        t, s = times[i].expand(len(x)), times[i + 1].expand(len(x))
        x0, eps = predict(x, t)
        if i == steps - 1:
            x = x0
        elif sampler == "ddpm":
            x = ancestral_step(schedule, x, x0, t, s, generator)
        else:
            x = ddim_step(schedule, x, x0, eps, t, s, eta, generator)
        if i + 1 in keep:
            frames.append(x)
    return x, frames


def ancestral_step(schedule: NoiseSchedule, x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor,
                   generator: torch.Generator | None = None) -> Tensor:
    """x_s drawn from the posterior q(x_s | x_t, x_0 = x0^)."""
    mean, variance = schedule.posterior(x0, x_t, t, s)
    return mean + variance.sqrt() * torch.randn(x_t.shape, generator=generator).to(x_t)


def ddim_step(schedule: NoiseSchedule, x_t: Tensor, x0: Tensor, eps: Tensor, t: Tensor, s: Tensor, eta: float,
              generator: torch.Generator | None = None) -> Tensor:
    """x_s given x_t and the predictions, with sigma^2 = eta^2 times the posterior's variance."""
    abar_s = schedule.alpha_bar_like(s, x_t)
    variance = eta**2 * schedule.posterior(x0, x_t, t, s)[1]
    x_s = abar_s.sqrt() * x0 + (1 - abar_s - variance).clamp(min=0).sqrt() * eps
    if eta == 0:
        return x_s
    return x_s + variance.sqrt() * torch.randn(x_t.shape, generator=generator).to(x_t)
