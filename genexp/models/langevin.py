"""Langevin sampling from an energy, and the replay buffer of persistent chains.

Stochastic gradient Langevin dynamics (Welling & Teh 2011) draws from p(x) ~ exp(-E(x)) by
    x <- x - step_size * grad_x E(x) + noise * N(0, I),
which samples p exactly (as step_size -> 0) with noise = sqrt(2 * step_size): `noise=None`
chooses it. Image EBMs (Du & Mordatch 2019; Foster 2023, ch. 7) run colder chains with a much
smaller noise, clip each gradient component to [-grad_clip, grad_clip] and clamp x to the data's
range after each step: samples near the modes of exp(-E), a sharpened p.

Chains run in float32 with gradients enabled, whatever the caller's mode: samples are drawn in
validation (under inference mode) and by callbacks (under no_grad). Only grad_x is computed, so the
energy net's parameter gradients are left as they are.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

Energy = Callable[[Tensor], Tensor]


def langevin_noise(step_size: float, noise: float | None) -> float:
    """The noise std of a step: `noise`, or sqrt(2 * step_size) (exact Langevin) when None."""
    return math.sqrt(2.0 * step_size) if noise is None else noise


def uniform(n: int, low: Tensor, high: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """n points uniform in the box [low, high] (tensors of one example's shape), drawn on the CPU when
    a generator is given (the same points on any device) and returned on the box's device."""
    u = torch.rand(n, *low.shape, generator=generator) if generator is not None else \
        torch.rand(n, *low.shape, device=low.device)
    return low + (high - low) * u.to(low.device)


def langevin(energy: Energy, x: Tensor, steps: int, step_size: float, noise: float | None = None,
             grad_clip: float | None = None, bounds: tuple[Tensor | float, Tensor | float] | None = None,
             generator: torch.Generator | None = None,
             on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """`steps` Langevin steps from x (see the module's docstring); returns the detached end points.
    `bounds` (low, high) clamps x after each step; `generator` (CPU) draws the noise, so a seed gives
    the same chain; `on_step(i, x)` sees x after step i (i = 1..steps)."""
    std = langevin_noise(step_size, noise)
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().float().clone()  # a normal tensor, also when x was made under inference mode
        for i in range(1, steps + 1):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            if grad_clip is not None:
                grad = grad.clamp(-grad_clip, grad_clip)
            eps = torch.randn(x.shape, generator=generator).to(x.device) if generator is not None else \
                torch.randn_like(x)
            x = x.detach() - step_size * grad + std * eps
            if bounds is not None:
                x = torch.clamp(x, *bounds)
            if on_step is not None:
                on_step(i, x)
    return x.detach()


class ReplayBuffer(nn.Module):
    """Past Langevin samples that seed the next chains (Du & Mordatch 2019): persistent chains that
    mix over many training steps while each step runs only a short one.

    `draw(n)` takes n stored samples at random and replaces each, with probability `fresh_fraction`,
    by fresh uniform noise in the box [low, high], so that new modes keep being found; `store` writes
    the chains' end points back over them. The buffer keeps its size and is part of the checkpoint, so
    a resumed run continues its chains."""

    def __init__(self, size: int, shape: tuple[int, ...], fresh_fraction: float) -> None:
        super().__init__()
        self.fresh_fraction = fresh_fraction
        self.register_buffer("samples", torch.zeros(size, *shape))
        self.register_buffer("low", torch.full(shape, -1.0))
        self.register_buffer("high", torch.full(shape, 1.0))
        self.indices: Tensor | None = None  # of the last draw

    def reset(self, low: Tensor, high: Tensor) -> None:
        """Fill the buffer with uniform noise in the box [low, high]."""
        self.low.copy_(low)
        self.high.copy_(high)
        self.samples.copy_(uniform(len(self.samples), self.low, self.high))

    def __len__(self) -> int:
        return len(self.samples)

    def draw(self, n: int) -> tuple[Tensor, Tensor]:
        """(n chain starts, which of them are fresh noise)."""
        self.indices = torch.randint(len(self.samples), (n,), device=self.samples.device)
        fresh = torch.rand(n, device=self.samples.device) < self.fresh_fraction
        starts = torch.where(fresh.view(-1, *[1] * self.low.dim()), uniform(n, self.low, self.high),
                             self.samples[self.indices])
        return starts, fresh

    def store(self, x: Tensor) -> None:
        """The end points of the chains of the last draw, in place of their starts."""
        self.samples[self.indices] = x.detach().to(self.samples.dtype)
