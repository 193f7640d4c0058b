"""2D toy data: seeded, shaped as the configs say, and p_data a normalised density that its samples follow."""

import math

import pytest
import torch

from genexp.data.toy2d import DISTRIBUTIONS, Toy2DDataModule
from genexp.errors import ConfigError

KNOWN_DENSITY = sorted(name for name, d in DISTRIBUTIONS.items() if d.log_prob is not None)


def test_every_distribution_has_its_density():
    assert KNOWN_DENSITY == sorted(DISTRIBUTIONS)


@pytest.mark.parametrize("name", KNOWN_DENSITY)
def test_data_density_integrates_to_one(name):
    # Midpoint rule over [-5, 5]^2 (cells of 0.1: no grid point on a checkerboard edge).
    side = (torch.arange(100) + 0.5) * 0.1 - 5
    xs, ys = torch.meshgrid(side, side, indexing="ij")
    p = DISTRIBUTIONS[name].log_prob(torch.stack([xs.flatten(), ys.flatten()], 1)).exp()
    assert p.sum().item() * 0.1**2 == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", KNOWN_DENSITY)
def test_samples_follow_the_density(name):
    """Samples land where p_data is high: their mean log p_data beats that of points spread
    uniformly over the same box (for every distribution here, by far)."""
    distribution = DISTRIBUTIONS[name]
    x = distribution.sample(2000, torch.Generator().manual_seed(0))
    uniform = (torch.rand(2000, 2, generator=torch.Generator().manual_seed(1)) - 0.5) * 8
    log_p = distribution.log_prob(x)
    assert torch.isfinite(log_p).all()
    assert log_p.mean() > distribution.log_prob(uniform).clamp(min=-50).mean() + 1.0


@pytest.mark.parametrize("name", KNOWN_DENSITY)
def test_samples_fall_in_each_square_as_often_as_the_density_says(name):
    """Unit squares over [-5, 5]^2: the share of 200,000 samples in each square against the density's
    integral over it (midpoint rule, cells of 0.1); their total variation distance is sampling noise."""
    distribution = DISTRIBUTIONS[name]
    x = distribution.sample(200_000, torch.Generator().manual_seed(0))
    square = lambda points: ((points.floor().clamp(-5, 4) + 5) @ torch.tensor([10.0, 1.0])).long()
    share = torch.bincount(square(x), minlength=100).double() / len(x)
    side = (torch.arange(100) + 0.5) * 0.1 - 5
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).view(-1, 2)
    mass = torch.zeros(100, dtype=torch.float64).index_add(0, square(grid), distribution.log_prob(grid).double().exp() * 0.01)
    assert 0.5 * (share - mass).abs().sum().item() < 0.015


def test_pinwheel_density_is_its_change_of_variables_at_each_point():
    """x = 2 R(-a) (r, t), a = 2 pi k / 5 + e^r / 4: p(x) is N(r) N(t) / 5 / (4 |1 + t e^r / 4|) from the
    point's own (k, r, t), plus whatever other arms' tails reach x, which is little for nearly every point."""
    generator = torch.Generator().manual_seed(0)
    arm = torch.randint(5, (20000,), generator=generator, dtype=torch.float64)
    r = 1 + 0.3 * torch.randn(20000, generator=generator, dtype=torch.float64)
    t = 0.1 * torch.randn(20000, generator=generator, dtype=torch.float64)
    a = arm * 2 * math.pi / 5 + r.exp() / 4
    x = 2 * torch.stack([r * a.cos() + t * a.sin(), -r * a.sin() + t * a.cos()], dim=1)
    normal = lambda mean, std: torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), std)
    one_preimage = (normal(1.0, 0.3).log_prob(r) + normal(0.0, 0.1).log_prob(t) - math.log(20)
                    - (1 + t * r.exp() / 4).abs().log())
    log_p = DISTRIBUTIONS["pinwheel"].log_prob(x)
    assert (log_p - one_preimage).min() > -1e-9
    assert ((log_p - one_preimage) < 1e-3).float().mean() > 0.95


def test_eight_gaussians_entropy_matches_its_closed_form():
    # Well separated components: H = log 8 + log(2 pi e sigma^2), sigma = 0.5 / 1.414.
    distribution = DISTRIBUTIONS["eight_gaussians"]
    x = distribution.sample(20000, torch.Generator().manual_seed(0))
    entropy = -distribution.log_prob(x).mean().item()
    sigma = 0.5 / 1.414
    assert entropy == pytest.approx(torch.log(torch.tensor(8 * 2 * torch.pi * torch.e * sigma**2)).item(), abs=0.02)


def test_checkerboard_is_uniform_on_half_of_the_squares():
    x = DISTRIBUTIONS["checkerboard"].sample(4000, torch.Generator().manual_seed(0))
    cells = (x / 2).floor()
    assert ((cells.sum(1) % 2) == 0).all() and (x.abs() <= 4).all()
    assert len(torch.unique(cells, dim=0)) == 8


def test_data_module_is_seeded_and_splits_differ():
    a, b, c = (Toy2DDataModule("moons", n_train=100, n_val=50, n_test=60, seed=s) for s in (0, 0, 1))
    for module in (a, b, c):
        module.setup()
    torch.testing.assert_close(a.example_batch("train", 100)[0], b.example_batch("train", 100)[0])
    assert not torch.allclose(a.example_batch("train", 50)[0], c.example_batch("train", 50)[0])
    assert not torch.allclose(a.example_batch("train", 50)[0], a.example_batch("val", 50)[0])
    x, y = next(iter(a.test_dataloader()))
    assert x.shape == (60, 2) and x.dtype == torch.float32 and y.shape == (60,)
    assert a.shape == (2,) and a.num_classes is None and not hasattr(a, "to_images")
    # A bigger training set leaves the test set as it was.
    bigger = Toy2DDataModule("moons", n_train=300, n_val=50, n_test=60, seed=0)
    torch.testing.assert_close(bigger.example_batch("test", 60)[0], a.example_batch("test", 60)[0])


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="data.name"):
        Toy2DDataModule("rings")
    with pytest.raises(ConfigError, match="data.shape"):
        Toy2DDataModule("moons", shape=[3])
