"""Neural spline flows: normalised densities, exact inverses and log-determinants of the whole flow,
images, and a short run of `python -m genexp model=nsf`."""

import json
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from conftest import compose_config
from genexp.errors import ConfigError
from genexp.models.maximum_likelihood import MaximumLikelihood
from genexp.nets.density import standard_normal_log_prob
from genexp.nets.nsf import NSF, AutoregressiveSpline
from genexp.train import run
from genexp.validate import validate_config


def perturbed(density: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """New flows are the identity (zeroed output layers): move every parameter so they are not."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in density.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return density


FLOWS = {
    "coupling_2d": ((2,), dict(transform="coupling", n_transforms=3, bins=5, hidden_dims=[16, 16], tail_bound=3.0)),
    "autoregressive_2d": ((2,), dict(transform="autoregressive", n_transforms=3, bins=5, hidden_dims=[16, 16],
                                     tail_bound=3.0)),
    "coupling_5d": ((5,), dict(transform="coupling", n_transforms=3, bins=4, hidden_dims=[8])),
    "autoregressive_5d": ((5,), dict(transform="autoregressive", n_transforms=3, bins=4, hidden_dims=[12])),
    "coupling_image": ((2, 4, 4), dict(transform="coupling", n_transforms=3, bins=4, hidden_channels=4)),
}


@pytest.mark.parametrize("transform", ["coupling", "autoregressive"])
def test_log_prob_integrates_to_one_over_the_plane(transform):
    torch.manual_seed(0)
    _, kwargs = FLOWS[f"{transform}_2d"]
    flow = perturbed(NSF((2,), **kwargs), scale=0.3)
    side = torch.linspace(-8, 8, 321)
    xs, ys = torch.meshgrid(side, side, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], 1)
    with torch.no_grad():
        log_p = flow.log_prob(points)
    assert (log_p - standard_normal_log_prob(points)).abs().max() > 0.5  # far from the initial N(0, I)
    assert log_p.exp().sum().item() * (side[1] - side[0]).item() ** 2 == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_inverse_and_log_determinant_of_the_whole_flow(name):
    torch.manual_seed(0)
    shape, kwargs = FLOWS[name]
    flow = perturbed(NSF(shape, **kwargs).double(), scale=0.3)
    x = 1.5 * torch.randn(3, *shape, dtype=torch.float64)
    z, logdet = flow.transform(x)
    torch.testing.assert_close(flow.transform.inverse(z).view_as(x), x, rtol=0, atol=1e-5)
    assert (z - x.flatten(1)).abs().max() > 0.1  # the flow does move the points
    for i in range(len(x)):
        J = jacobian(lambda v: flow.transform(v.view(1, *shape))[0].flatten(), x[i]).reshape(z.shape[1], -1)
        sign, brute = torch.linalg.slogdet(J)
        assert sign.item() != 0
        assert logdet[i].item() == pytest.approx(brute.item(), abs=1e-7)


def test_a_new_flow_is_the_standard_normal():
    x = torch.randn(64, 2)
    for transform in ("coupling", "autoregressive"):
        torch.testing.assert_close(NSF((2,), transform=transform).log_prob(x), standard_normal_log_prob(x))


def test_autoregressive_layer_depends_only_on_earlier_dimensions():
    torch.manual_seed(0)
    layer = perturbed(AutoregressiveSpline(4, [16, 16], bins=4, tail_bound=3.0), scale=0.3)
    x = torch.randn(8, 4, requires_grad=True)
    y, _ = layer(x)
    for i in range(4):
        (grad,) = torch.autograd.grad(y[:, i].sum(), x, retain_graph=True)
        dependence = grad.abs().sum(0)
        assert torch.all(dependence[i + 1:] == 0), (i, dependence)
        assert torch.all(dependence[:i + 1] > 0), (i, dependence)


def test_image_log_prob_is_finite_in_bits_per_dim():
    torch.manual_seed(0)
    density = {"_target_": "genexp.nets.nsf.NSF", "transform": "coupling", "n_transforms": 2, "bins": 4,
               "hidden_channels": 8}
    model = MaximumLikelihood(shape=[1, 8, 8], density=density, value_range=[0.0, 1.0], optimizer={})
    perturbed(model.density, scale=0.05)
    x = torch.rand(6, 1, 8, 8)
    log_p = model.log_prob(x)
    assert log_p.shape == (6,) and torch.isfinite(log_p).all()
    bits_per_dim = model.nll_metrics(-log_p.mean())["bits_per_dim"]
    assert 0 < bits_per_dim.item() < 16  # dequantised 8-bit pixels, a lower bound above 0
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1


def test_autoregressive_images_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="model.density.transform=coupling"):
        NSF((1, 8, 8), transform="autoregressive")
    with pytest.raises(ConfigError, match="model.density.transform='spline'"):
        NSF((2,), transform="spline")


def test_bad_keys_are_refused_before_training(tmp_path):
    for override in ("model.density.bins=1", "model.density.tail_bound=0", "model.density.transform=affine"):
        cfg = compose_config(["model=nsf", "data=moons", override], tmp_path)
        with pytest.raises(ConfigError, match=override.split("=")[0]):
            validate_config(cfg)


def test_a_short_run_on_moons_reports_a_finite_test_nll(tmp_path):
    cfg = compose_config(["model=nsf", "data=moons", "data.n_train=512", "data.n_val=128", "data.n_test=256",
                          "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                          "logger=none", "callbacks=none"], tmp_path)
    validate_config(cfg)
    run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert math.isfinite(metrics["test/nll"]) and math.isfinite(metrics["test/nll_gap"])
    # Two epochs on 512 points already move it from N(0, I) towards the data (its NLL there is ~5.6 nats).
    assert metrics["test/nll_gap"] < 2.5
