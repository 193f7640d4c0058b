"""2D toy data: seeded, shaped as the configs say, and p_data a normalised density that its samples follow."""

import pytest
import torch

from genexp.data.toy2d import DISTRIBUTIONS, Toy2DDataModule
from genexp.errors import ConfigError

KNOWN_DENSITY = sorted(name for name, d in DISTRIBUTIONS.items() if d.log_prob is not None)


def test_every_distribution_but_pinwheel_has_its_density():
    assert set(DISTRIBUTIONS) - set(KNOWN_DENSITY) == {"pinwheel"}


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


def test_pinwheel_has_no_density_and_bad_configs_are_refused():
    assert Toy2DDataModule("pinwheel").log_prob is None
    with pytest.raises(ConfigError, match="data.name"):
        Toy2DDataModule("rings")
    with pytest.raises(ConfigError, match="data.shape"):
        Toy2DDataModule("moons", shape=[3])
