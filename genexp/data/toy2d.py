"""2D toy distributions, sampled on the fly from a seed, with their true density where it is known.

The distributions are those of FFJORD's toy data (Grathwohl et al. 2019), so that numbers
are comparable with the literature: eight_gaussians and checkerboard exactly; moons,
circles and swiss_roll as scikit-learn's generators scaled the same way; pinwheel and
two_spirals as in FFJORD. Where scikit-learn spaces points evenly along a curve, here the
position on the curve is uniform at random: the same distribution, drawn i.i.d.

Most of them are "noisy curves": a point uniform along one of a few curves, plus noise.
Their density p_data(x) = mean over curves of E_u[kernel(x - curve(u))] is computed by
quadrature over u, exact to many digits at these noise levels. Pinwheel's comes from a change of
variables, solved numerically per point.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from genexp.data.image_tensor import IndexedTensors, batch_as_is
from genexp.errors import ConfigError

Curve = Callable[[Tensor], Tensor]  # u in [0, 1], shape (M,) -> points (M, 2)
QUADRATURE_NODES = 512  # per curve: nodes at most 0.06 apart along every curve, noise sigma >= 0.1
CHUNK = 512  # points per block of the quadrature (memory: CHUNK x nodes)
REMEMBERED_BATCHES = 256  # batches whose log p_data a data module keeps (the val and test splits' are fewer)


@dataclass(frozen=True)
class NoisyCurves:
    """A curve chosen uniformly, u ~ U[0, 1], then x = curve(u) + box jitter + N(0, sigma^2 I).

    `box` is the side of a uniform square jitter (0: none). Constant curves with nodes=1 give a
    Gaussian mixture."""

    curves: tuple[Curve, ...]
    sigma: float
    box: float = 0.0
    nodes: int = QUADRATURE_NODES

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        which = torch.randint(len(self.curves), (n,), generator=generator)
        u = torch.rand(n, generator=generator)
        centres = torch.stack([curve(u) for curve in self.curves])[which, torch.arange(n)]
        jitter = (torch.rand(n, 2, generator=generator) - 0.5) * self.box
        return centres + jitter + self.sigma * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        u = (torch.arange(self.nodes, dtype=torch.float64, device=x.device) + 0.5) / self.nodes
        centres = torch.cat([curve(u) for curve in self.curves]).to(x.dtype)
        out = [torch.logsumexp(self._log_kernel(chunk[:, None, :] - centres), dim=1) for chunk in x.split(CHUNK)]
        return torch.cat(out) - math.log(len(centres))

    def _log_kernel(self, delta: Tensor) -> Tensor:
        if not self.box:
            return -0.5 * (delta / self.sigma).pow(2).sum(-1) - math.log(2 * math.pi * self.sigma**2)
        # A uniform on [-box/2, box/2] convolved with N(0, sigma^2), per axis:
        # (Phi((d + box/2) / sigma) - Phi((d - box/2) / sigma)) / box, symmetric in d, so evaluated
        # at -|d| where log_ndtr is accurate.
        d = -delta.abs()
        upper = torch.special.log_ndtr((d + self.box / 2) / self.sigma)
        lower = torch.special.log_ndtr((d - self.box / 2) / self.sigma)
        return (upper + torch.log1p(-(lower - upper).exp()) - math.log(self.box)).sum(-1)


class Checkerboard:
    """Uniform on 8 of the 16 squares of side 2 tiling [-4, 4]^2, alternating like a checkerboard."""

    AREA = 8 * 2.0**2

    @staticmethod
    def sample(n: int, generator: torch.Generator) -> Tensor:
        x1 = torch.rand(n, generator=generator) * 4 - 2
        x2 = torch.rand(n, generator=generator) - torch.randint(0, 2, (n,), generator=generator) * 2
        return torch.stack([x1, x2 + x1.floor() % 2], dim=1) * 2

    def log_prob(self, x: Tensor) -> Tensor:
        cells = (x / 2).floor()
        inside = (cells >= -2).all(1) & (cells < 2).all(1) & (cells.sum(1) % 2 == 0)
        return torch.where(inside, -math.log(self.AREA), -math.inf).to(x.dtype)


class Pinwheel:
    """Five curved arms: a point (r, t) ~ N((1, 0), diag(0.3, 0.1)^2) rotated by an angle growing as e^r.

    x = 2 R(-a) (r, t) with a = 2 pi k / 5 + e^r / 4 on arm k. Its density by change of variables:
    with y = x / 2 = rho (cos phi, sin phi), (r, t) = rho (cos b, sin b) where b = phi + a(r), so r is a
    root of h(r) = r - rho cos(phi + 2 pi k / 5 + e^r / 4) in [-rho, rho], and
        p(x) = 1/5 sum_k sum_roots N(r; 1, 0.3^2) N(t; 0, 0.1^2) / (4 |h'(r)|),  h'(r) = 1 + t e^r / 4
    (|det dy/d(r, t)| = |h'(r)|; 4 = |det dx/dy|). The roots are bracketed on a grid of r (they lie
    within 12 standard deviations of r's mean wherever p is above e^-70) and refined by bisection."""

    ARMS = 5
    R_MEAN, R_STD, T_STD = 1.0, 0.3, 0.1
    R_REACH = 12  # standard deviations of r searched for roots
    GRID = 1024  # nodes of r per point: at most 0.2 rad of the angle between nodes over that reach
    BISECTIONS = 50

    @classmethod
    def sample(cls, n: int, generator: torch.Generator) -> Tensor:
        arm = torch.randint(cls.ARMS, (n,), generator=generator)
        radial, tangential = (torch.randn(n, 2, generator=generator) * torch.tensor([cls.R_STD, cls.T_STD])).unbind(1)
        radial = radial + cls.R_MEAN
        angle = arm * (2 * math.pi / cls.ARMS) + 0.25 * radial.exp()
        return 2 * torch.stack([radial * angle.cos() + tangential * angle.sin(),
                                -radial * angle.sin() + tangential * angle.cos()], dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.cat([self._log_prob(chunk.double()) for chunk in x.split(CHUNK)]).to(x.dtype)

    def _log_prob(self, x: Tensor) -> Tensor:
        rho, phi = (x / 2).norm(dim=1), torch.atan2(x[:, 1], x[:, 0])
        offsets = phi[:, None] + torch.arange(self.ARMS, dtype=x.dtype) * (2 * math.pi / self.ARMS)  # (n, arms)
        lo = torch.clamp(-rho, min=self.R_MEAN - self.R_REACH * self.R_STD)
        hi = torch.clamp(rho, max=self.R_MEAN + self.R_REACH * self.R_STD)
        r = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, self.GRID, dtype=x.dtype)  # (n, grid)

        def h(r: Tensor, rho: Tensor, offset: Tensor) -> Tensor:
            return r - rho * torch.cos(offset + 0.25 * r.exp())

        negative = h(r[:, None, :], rho[:, None, None], offsets[..., None]) < 0  # (n, arms, grid)
        point, arm, node = torch.nonzero(negative[..., :-1] != negative[..., 1:], as_tuple=True)
        left, right = r[point, node], r[point, node + 1]
        rho_k, offset_k = rho[point], offsets[point, arm]
        left_negative = negative[point, arm, node]
        for _ in range(self.BISECTIONS):
            middle = (left + right) / 2
            same_as_left = (h(middle, rho_k, offset_k) < 0) == left_negative
            left, right = torch.where(same_as_left, middle, left), torch.where(same_as_left, right, middle)
        root = (left + right) / 2
        angle = offset_k + 0.25 * root.exp()
        radial, tangential = rho_k * angle.cos(), rho_k * angle.sin()
        slope = (1 + 0.25 * root.exp() * tangential).abs().clamp(min=1e-300)
        log_terms = (-0.5 * ((radial - self.R_MEAN) / self.R_STD) ** 2 - 0.5 * (tangential / self.T_STD) ** 2
                     - math.log(2 * math.pi * self.R_STD * self.T_STD) - math.log(4 * self.ARMS) - slope.log())
        # log of the sum of each point's terms (no term: the point is out of reach, p = 0).
        peak = torch.full_like(rho, -math.inf).scatter_reduce(0, point, log_terms, "amax")
        safe_peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        total = torch.zeros_like(rho).index_add(0, point, (log_terms - safe_peak[point]).exp())
        return total.log() + safe_peak


def _circle(radius: float, turn: float, offset: tuple[float, float] = (0.0, 0.0), sign: float = 1.0) -> Curve:
    """An arc of `turn` radians from angle 0: offset + sign * radius * (cos, sin)."""
    def curve(u: Tensor) -> Tensor:
        angle = turn * u
        return torch.stack([offset[0] + sign * radius * angle.cos(), offset[1] + sign * radius * angle.sin()], dim=1)
    return curve


def _swiss_roll(u: Tensor) -> Tensor:
    t = 1.5 * math.pi * (1 + 2 * u)
    return torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5


def _spiral(sign: float) -> Curve:
    """One arm of FFJORD's two spirals: n = sqrt(u) * 540 degrees, (-n cos n, n sin n) / 3, with the
    centre of its U[0, 0.5]^2 jitter box added."""
    def curve(u: Tensor) -> Tensor:
        n = u.sqrt() * 3 * math.pi
        return sign * (torch.stack([-n * n.cos(), n * n.sin()], dim=1) + 0.25) / 3
    return curve


def _point(x: float, y: float) -> Curve:
    return lambda u: torch.tensor([x, y], dtype=u.dtype, device=u.device).expand(len(u), 2)


# eight_gaussians: N(4 * direction / 1.414, (0.5 / 1.414)^2 I), eight directions (FFJORD divides by 1.414).
_DIRECTIONS = [(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)]

DISTRIBUTIONS = {
    # sklearn make_moons(noise=0.1) * 2 + (-1, -0.2)
    "moons": NoisyCurves((_circle(2.0, math.pi, (-1.0, -0.2)), _circle(2.0, math.pi, (1.0, 0.8), sign=-1.0)),
                         sigma=0.2),
    # sklearn make_circles(factor=0.5, noise=0.08) * 3
    "circles": NoisyCurves((_circle(3.0, 2 * math.pi), _circle(1.5, 2 * math.pi)), sigma=0.24),
    "eight_gaussians": NoisyCurves(tuple(_point(4 * dx / 1.414, 4 * dy / 1.414) for dx, dy in _DIRECTIONS),
                                   sigma=0.5 / 1.414, nodes=1),
    "checkerboard": Checkerboard(),
    "pinwheel": Pinwheel(),
    # sklearn make_swiss_roll(noise=1.0), coordinates (x, z) / 5
    "swiss_roll": NoisyCurves((_swiss_roll,), sigma=0.2),
    "two_spirals": NoisyCurves((_spiral(1.0), _spiral(-1.0)), sigma=0.1, box=0.5 / 3),
}


class Toy2DDataModule(L.LightningDataModule):
    """Train, val and test points drawn from independent seeded streams (a split does not change when
    another split's size does); labels are all 0. `log_prob` is log p_data, or None where unknown."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_train": "int >= 1", "n_val": "int >= 1", "n_test": "int >= 1", "batch_size": "int >= 1",
                    "num_workers": "int >= 0", "seed": "int >= 0"}

    def __init__(self, name: str, shape: list[int] = (2,), num_classes: int | None = None,
                 value_range: list[float] | None = None, n_train: int = 20000, n_val: int = 2000,
                 n_test: int = 5000, batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if name not in DISTRIBUTIONS:
            raise ConfigError(f"data.name={name!r} is not known; allowed: {', '.join(DISTRIBUTIONS)}")
        if tuple(shape) != (2,) or num_classes is not None or value_range is not None:
            raise ConfigError(f"data={name} is unlabelled points in the plane: data.shape must be [2], "
                              f"data.num_classes and data.value_range null")
        self.name = name
        self.shape = (2,)
        self.num_classes = None
        self.value_range = None  # unbounded real values
        self.distribution = DISTRIBUTIONS[name]
        # log p_data(x), or None where it is unknown.
        self.log_prob = self._remembered_log_prob if self.distribution.log_prob is not None else None
        self._log_probs: dict[tuple, Tensor] = {}
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, IndexedTensors] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        streams = np.random.SeedSequence(self.seed).spawn(len(self.sizes))
        for (split, n), stream in zip(self.sizes.items(), streams):
            generator = torch.Generator().manual_seed(int(stream.generate_state(1)[0]))
            points = self.distribution.sample(n, generator).float()
            # Read a batch at a time: per-point reads and stacking would cost more than a small flow's step.
            self.splits[split] = IndexedTensors(points, torch.zeros(n, dtype=torch.long))

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=split == "train",
                          collate_fn=batch_as_is, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _remembered_log_prob(self, x: Tensor) -> Tensor:
        """log p_data(x), remembered for the last batches asked for: validation asks for the same points
        every epoch (for the oracle NLL), and the quadrature costs more than a small flow's forward pass."""
        key = (x.dtype, x.device, tuple(x.shape), x.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        if key not in self._log_probs:
            if len(self._log_probs) >= REMEMBERED_BATCHES:
                self._log_probs.clear()
            self._log_probs[key] = self.distribution.log_prob(x)
        return self._log_probs[key]

    def example_batch(self, split: str, n: int) -> tuple[Tensor, Tensor]:
        """The first n points of a split (the same points every call)."""
        self.setup()
        return self.splits[split][:n]
