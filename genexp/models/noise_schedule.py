"""Noise schedules of diffusion models: how much of the data is left at each time t in [0, 1].

The forward process blurs data x_0 into noise: at time t (0 = data, 1 = noise)
    x_t = sqrt(abar(t)) x_0 + sqrt(1 - abar(t)) eps,    eps ~ N(0, I),
where abar(t), "alpha bar", falls from about 1 to about 0. A schedule is that one function.
Everything a diffusion model needs follows from it, for any pair of times s < t:
    q(x_t | x_s)      = N(sqrt(abar_t / abar_s) x_s, (1 - abar_t / abar_s) I)
    q(x_s | x_t, x_0) = N(mean, var I)  (the posterior, Ho et al. 2020 eq. 6-7, between any two times)
Discrete schedules (Ho et al. 2020) have T steps at t = k/T (k = 1..T) with abar_k the product of
(1 - beta_j) for j <= k, and abar(0) = 1. The continuous one of the book (08_diffusion) gives abar
at any t in [0, 1] and never reaches the clean data (abar(0) = max_signal_rate^2 < 1).

A network predicts one of three equivalent targets from x_t: the noise eps, the data x_0, or the
velocity v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022); `to_x0_eps` and `target`
convert between them.
"""

import math

import torch
from torch import Tensor

from genexp.errors import ConfigError

PREDICTIONS = ("eps", "x0", "v")


class NoiseSchedule:
    """abar(t) and what follows from it. `steps`: T of a discrete schedule; for a continuous one, the
    grid that the ancestral sampler and the likelihood bound walk by default."""

    continuous = False
    config_rules = {"steps": "int >= 2"}

    def __init__(self, steps: int = 1000) -> None:
        if steps < 2:
            raise ConfigError(f"model.schedule.steps={steps} is not allowed: it must be an integer >= 2")
        self.steps = int(steps)

    def alpha_bar(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    # --- times ----------------------------------------------------------------------------
    def training_times(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Times of n training examples: k/T with k uniform in 1..T (discrete), uniform in [0, 1] (continuous)."""
        if self.continuous:
            return torch.rand(n, generator=generator)
        return torch.randint(1, self.steps + 1, (n,), generator=generator) / self.steps

    def sampling_times(self, steps: int, key: str = "model.sampler.steps") -> Tensor:
        """The grid a sampler walks, 1 = t_0 > t_1 > ... > t_steps = 0; on a discrete schedule its
        steps are whole (an evenly strided subset of the T steps, as DDIM's), so steps <= T."""
        if not self.continuous and not 1 <= steps <= self.steps:
            raise ConfigError(f"{key}={steps} is not allowed on a schedule of "
                              f"model.schedule.steps={self.steps}: it must be in 1..{self.steps}")
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        if not self.continuous:
            grid = (grid * self.steps).round() / self.steps
        return grid.float()

    # --- the forward process --------------------------------------------------------------
    def alpha_bar_like(self, t: Tensor, like: Tensor) -> Tensor:
        """abar(t) per example, shaped to broadcast over `like` (N, ...)."""
        return self.alpha_bar(t.to(like.device)).to(like.dtype).view(-1, *[1] * (like.dim() - 1))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t from q(x_t | x_0) with the given noise."""
        abar = self.alpha_bar_like(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def posterior(self, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_s | x_t, x_0) for s < t (per example; the variance broadcasts)."""
        abar_t, abar_s = self.alpha_bar_like(t, x_t), self.alpha_bar_like(s, x_t)
        alpha = abar_t / abar_s  # of the whole step s -> t
        mean = (abar_s.sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - abar_s) * x_t) / (1 - abar_t)
        return mean, (1 - alpha) * (1 - abar_s) / (1 - abar_t)

    # --- what the network predicts ---------------------------------------------------------
    def target(self, x0: Tensor, noise: Tensor, t: Tensor, prediction: str) -> Tensor:
        if prediction == "eps":
            return noise
        if prediction == "x0":
            return x0
        abar = self.alpha_bar_like(t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def to_x0_eps(self, output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
        """The network's output (a prediction of eps, x0 or v) as predictions of both x0 and eps."""
        abar = self.alpha_bar_like(t, x_t)
        signal, noise_rate = abar.sqrt(), (1 - abar).sqrt()
        if prediction == "eps":
            return (x_t - noise_rate * output) / signal, output
        if prediction == "x0":
            return output, (x_t - signal * output) / noise_rate
        return signal * x_t - noise_rate * output, noise_rate * x_t + signal * output

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio abar / (1 - abar) at t."""
        abar = self.alpha_bar(t)
        return abar / (1 - abar)


class DiscreteSchedule(NoiseSchedule):
    """T steps with variances beta_1..beta_T; abar(k/T) = prod_{j<=k} (1 - beta_j), abar(0) = 1."""

    def __init__(self, betas: Tensor) -> None:
        super().__init__(len(betas))
        self.table = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas.double(), 0)])
        self._tables = {self.table.device: self.table}  # a copy per device, made once, not every step

    def alpha_bar(self, t: Tensor) -> Tensor:
        table = self._tables.get(t.device)
        if table is None:
            table = self._tables[t.device] = self.table.to(t.device)
        index = (t.double() * self.steps).round().long().clamp(0, self.steps)
        return table[index].to(t.dtype if t.is_floating_point() else torch.float32)


class LinearSchedule(DiscreteSchedule):
    """beta_k rising linearly from beta_start to beta_end over T steps (Ho et al. 2020: 1e-4 to 0.02, T = 1000)."""

    config_rules = {"steps": "int >= 2", "beta_start": "number in (0, 1)", "beta_end": "number in (0, 1)"}

    def __init__(self, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"model.schedule.beta_start={beta_start} and beta_end={beta_end} must satisfy "
                              f"0 < beta_start <= beta_end < 1")
        super().__init__(torch.linspace(beta_start, beta_end, max(steps, 0), dtype=torch.float64))


class CosineSchedule(DiscreteSchedule):
    """abar(t) = f(t) / f(0) with f(t) = cos^2(pi/2 (t + s) / (1 + s)), betas clipped at 0.999 so the
    last steps stay invertible (Nichol & Dhariwal 2021, s = 0.008)."""

    config_rules = {"steps": "int >= 2", "offset": "number >= 0"}

    def __init__(self, steps: int = 1000, offset: float = 0.008) -> None:
        t = torch.linspace(0, 1, max(steps, 0) + 1, dtype=torch.float64)
        f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
        abar = f / f[0]
        super().__init__((1 - abar[1:] / abar[:-1]).clamp(max=0.999))


class OffsetCosineSchedule(NoiseSchedule):
    """The book's continuous schedule (08_diffusion): signal rate sqrt(abar) = cos(angle) with the angle
    rising linearly in t from acos(max_signal_rate) to acos(min_signal_rate); the noise rate is its sine."""

    continuous = True
    config_rules = {"steps": "int >= 2", "min_signal_rate": "number in (0, 1)", "max_signal_rate": "number in (0, 1)"}

    def __init__(self, steps: int = 1000, min_signal_rate: float = 0.02, max_signal_rate: float = 0.95) -> None:
        if not 0 < min_signal_rate < max_signal_rate < 1:
            raise ConfigError(f"model.schedule.min_signal_rate={min_signal_rate} and max_signal_rate="
                              f"{max_signal_rate} must satisfy 0 < min_signal_rate < max_signal_rate < 1")
        super().__init__(steps)
        self.start_angle = math.acos(max_signal_rate)
        self.end_angle = math.acos(min_signal_rate)

    def alpha_bar(self, t: Tensor) -> Tensor:
        angle = self.start_angle + t.float() * (self.end_angle - self.start_angle)
        return torch.cos(angle) ** 2
