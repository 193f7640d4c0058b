"""Density nets: normalised, exact change of variables, autoregressive masks, maximum likelihood."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from genexp.nets.gaussian import Gaussian
from genexp.nets.gmm import GaussianMixture
from genexp.nets.maf import MADE, MAF
from genexp.nets.pixelcnn import PixelCNN
from genexp.nets.realnvp import RealNVP


def perturbed(density: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """New flows are the identity (zeroed output layers): move every parameter so they are not."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in density.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return density


DENSITIES_2D = {
    "gaussian": lambda: Gaussian((2,), covariance="full"),
    "gmm": lambda: GaussianMixture((2,), n_components=3, covariance="full"),
    "realnvp": lambda: RealNVP((2,), n_couplings=4, hidden_dims=[16, 16]),
    "maf": lambda: MAF((2,), n_layers=3, hidden_dims=[16, 16]),
}


@pytest.mark.parametrize("name", sorted(DENSITIES_2D))
def test_log_prob_integrates_to_one_over_the_plane(name):
    torch.manual_seed(0)
    density = perturbed(DENSITIES_2D[name]())
    side = torch.linspace(-8, 8, 321)
    xs, ys = torch.meshgrid(side, side, indexing="ij")
    with torch.no_grad():
        p = density.log_prob(torch.stack([xs.flatten(), ys.flatten()], 1)).exp()
    assert p.sum().item() * (side[1] - side[0]).item() ** 2 == pytest.approx(1.0, abs=0.01)


FLOWS = {
    "realnvp_vector": ((4,), dict(n_couplings=3, hidden_dims=[8])),
    "realnvp_image_multiscale": ((1, 4, 4), dict(couplings_per_scale=2, n_scales=2, hidden_channels=4)),
    "realnvp_image_checkerboard": ((1, 4, 4), dict(mask="checkerboard", couplings_per_scale=2, hidden_channels=4)),
    "realnvp_image_channel": ((1, 4, 4), dict(mask="channel", couplings_per_scale=2, n_scales=1, hidden_channels=4)),
    "realnvp_image_alternating": ((2, 2, 2), dict(mask="alternating", n_couplings=2, hidden_dims=[8])),
    "maf": ((5,), dict(n_layers=3, hidden_dims=[16])),
}


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_log_determinant_matches_brute_force_jacobian(name):
    torch.manual_seed(0)
    shape, kwargs = FLOWS[name]
    flow = perturbed((MAF if name == "maf" else RealNVP)(shape, **kwargs).double(), scale=0.2)
    x = torch.randn(3, *shape, dtype=torch.float64)
    z, logdet = flow.transform(x)
    for i in range(len(x)):
        J = jacobian(lambda v: flow.transform(v.view(1, *shape))[0].flatten(), x[i])
        J = J.reshape(z.shape[1], -1)
        sign, brute = torch.linalg.slogdet(J)
        assert sign.item() != 0
        assert logdet[i].item() == pytest.approx(brute.item(), abs=1e-8)
    torch.testing.assert_close(flow.transform.inverse(z).view_as(x), x)


def test_made_outputs_depend_only_on_earlier_inputs():
    torch.manual_seed(0)
    dims = 5
    made = perturbed(MADE(dims, [12, 12]), scale=0.3)
    x = torch.randn(4, dims, requires_grad=True)
    out = made(x)  # (N, 2, D)
    for i in range(dims):
        (grad,) = torch.autograd.grad(out[:, :, i].sum(), x, retain_graph=True)
        dependence = grad.abs().sum(0)
        assert torch.all(dependence[i:] == 0), (i, dependence)
        assert torch.all(dependence[:i] > 0), (i, dependence)  # and it does use what it may


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_logits_depend_only_on_earlier_pixels_and_channels(channels):
    torch.manual_seed(0)
    side, levels = 4, 3
    net = PixelCNN((channels, side, side), levels=levels, hidden_channels=6, n_blocks=1, first_kernel=3).net
    x = torch.randn(1, channels, side, side, requires_grad=True)
    logits = net(x).view(1, channels, levels, side, side)
    # Raster order over pixels, then channels (R before G before B) within a pixel.
    order = lambda c, i, j: (i * side + j) * channels + c  # noqa: E731
    for c in range(channels):
        for i in range(side):
            for j in range(side):
                (grad,) = torch.autograd.grad(logits[0, c, :, i, j].sum(), x, retain_graph=True)
                for cc in range(channels):
                    for ii in range(side):
                        for jj in range(side):
                            if order(cc, ii, jj) >= order(c, i, j):
                                assert grad[0, cc, ii, jj] == 0, ((c, i, j), (cc, ii, jj))
    # And it does see what it may: the last pixel sees the pixel above it and the one to its left.
    (grad,) = torch.autograd.grad(logits[0, 0, :, side - 1, side - 1].sum(), x)
    assert grad[0, 0, side - 2, side - 1] != 0 and grad[0, 0, side - 1, side - 2] != 0


def test_pixelcnn_windowed_logits_equal_the_full_pass():
    torch.manual_seed(0)
    pixelcnn = PixelCNN((2, 9, 10), levels=3, hidden_channels=6, n_blocks=1, first_kernel=3)
    inputs = torch.randn(2, 2, 9, 10)
    with torch.no_grad():
        full = pixelcnn.logits(inputs)
        for i in range(9):
            for j in range(10):
                torch.testing.assert_close(pixelcnn.pixel_logits(inputs, i, j), full[..., i, j])


def test_gaussian_gradient_descent_reaches_the_closed_form_mle():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 0.4]])
    x = torch.randn(400, 3) @ mixing.T + torch.tensor([1.0, -2.0, 0.5])
    gaussian = Gaussian((3,), covariance="full")
    optimizer = torch.optim.Adam(gaussian.parameters(), lr=0.05)
    for _ in range(800):
        optimizer.zero_grad()
        (-gaussian.log_prob(x).mean()).backward()
        optimizer.step()
    # Maximum likelihood: the sample mean and the biased (1/N) sample covariance.
    mean, covariance = x.mean(0), torch.cov(x.T, correction=0)
    with torch.no_grad():
        torch.testing.assert_close(gaussian.loc, mean, atol=2e-3, rtol=0)
        torch.testing.assert_close(gaussian.distribution().covariance_matrix, covariance, atol=2e-3, rtol=0)


def test_gaussian_diag_and_sample_shapes():
    gaussian = Gaussian((1, 2, 3), covariance="diag")
    assert gaussian.sample(7).shape == (7, 1, 2, 3)
    assert gaussian.log_prob(torch.zeros(5, 1, 2, 3)).shape == (5,)
    assert sum(p.numel() for p in gaussian.parameters()) == 12


def test_gmm_em_start_is_sklearns_fit():
    from sklearn.mixture import GaussianMixture as SklearnMixture

    from genexp.data.toy2d import DISTRIBUTIONS

    x = DISTRIBUTIONS["eight_gaussians"].sample(1000, torch.Generator().manual_seed(0))
    gmm = GaussianMixture((2,), n_components=8)
    torch.manual_seed(3)
    gmm.initialize(x)
    torch.manual_seed(3)
    seed = int(torch.randint(2**31 - 1, ()).item())  # the seed initialize() draws
    reference = SklearnMixture(8, reg_covar=1e-3, random_state=seed).fit(x.double().numpy())
    with torch.no_grad():
        ours = gmm.log_prob(x).double()
    torch.testing.assert_close(ours, torch.from_numpy(reference.score_samples(x.double().numpy())),
                               atol=1e-3, rtol=0)
    assert gmm.sample(11, generator=torch.Generator().manual_seed(0)).shape == (11, 2)


def test_gmm_without_em_starts_at_data_points():
    x = torch.randn(50, 2)
    torch.manual_seed(0)
    gmm = GaussianMixture((2,), n_components=4, covariance="diag", em_init=False)
    gmm.initialize(x)
    assert all(any(torch.allclose(mean, point) for point in x) for mean in gmm.loc.detach())


def test_discrete_pixelcnn_probabilities_sum_to_one_over_levels():
    torch.manual_seed(0)
    pixelcnn = PixelCNN((1, 2, 2), levels=2, hidden_channels=4, n_blocks=1, first_kernel=3)
    # Every binary 2x2 image: 16 of them; their probabilities add up to 1.
    images = torch.tensor([[(k >> b) & 1 for b in range(4)] for k in range(16)], dtype=torch.float32)
    with torch.no_grad():
        total = pixelcnn.log_prob(images.view(16, 1, 2, 2)).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-5)
    samples = pixelcnn.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 2, 2) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_flow_samples_invert_to_the_noise():
    torch.manual_seed(0)
    flow = perturbed(RealNVP((1, 4, 4), couplings_per_scale=2, hidden_channels=4))
    x = flow.sample(5, generator=torch.Generator().manual_seed(1))
    assert x.shape == (5, 1, 4, 4) and torch.isfinite(x).all()
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(flow.transform(x)[0], z, atol=1e-4, rtol=1e-4)
    assert math.isfinite(flow.log_prob(x).sum().item())
