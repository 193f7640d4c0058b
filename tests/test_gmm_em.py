"""The mixture's EM fit (genexp.nets.gmm_em, model=gmm's default fit=em): it recovers a known mixture, never
lowers the likelihood, takes scikit-learn's steps, and a run fitted by it takes no gradient steps."""

import json

import pytest
import torch
from sklearn.mixture import GaussianMixture as SklearnMixture

from conftest import compose_config, run_cli
from genexp.data.toy2d import DISTRIBUTIONS
from genexp.errors import ConfigError
from genexp.nets.gmm import GaussianMixture
from genexp.nets.gmm_em import (REG_COVAR, expectation_maximisation, fit_mixture, kmeans, kmeans_plusplus,
                                kmeans_start)
from genexp.train import run
from genexp.validate import validate_config

WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]], dtype=torch.float64)
COVARIANCES = torch.tensor([[[1.0, 0.5], [0.5, 0.8]], [[0.3, -0.1], [-0.1, 0.6]], [[0.5, 0.0], [0.0, 0.2]]],
                           dtype=torch.float64)


def known_mixture(n: int, covariances: torch.Tensor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=generator)
    eps = torch.randn(n, 2, 1, dtype=torch.float64, generator=generator)
    return MEANS[k] + (torch.linalg.cholesky(covariances)[k] @ eps).squeeze(-1)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_recovers_a_known_mixture(covariance):
    covariances = COVARIANCES if covariance == "full" else torch.diag_embed(COVARIANCES.diagonal(dim1=-2, dim2=-1))
    x = known_mixture(20000, covariances)
    fit = fit_mixture(x, 3, covariance, tol=1e-8, max_iter=500)
    assert fit.converged
    order = fit.parameters.means[:, 0].argsort()  # components in the order of MEANS (by their x)
    fitted = fit.parameters.covariances[order]
    expected = covariances if covariance == "full" else covariances.diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(fit.parameters.weights[order], WEIGHTS, atol=0.015, rtol=0)
    torch.testing.assert_close(fit.parameters.means[order], MEANS, atol=0.04, rtol=0)
    torch.testing.assert_close(fitted, expected, atol=0.05, rtol=0)


def test_em_never_lowers_the_log_likelihood():
    x = DISTRIBUTIONS["two_spirals"].sample(3000, torch.Generator().manual_seed(0)).double()
    fit = fit_mixture(x, 8, "full", tol=1e-9, max_iter=60)
    steps = torch.tensor(fit.log_likelihoods).diff()
    assert len(steps) >= 20  # a long climb, not two steps
    assert (steps >= -1e-12).all(), steps.min()
    assert steps.sum() > 0.1  # and it climbs


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_takes_scikit_learns_steps_from_the_same_start(covariance):
    x = DISTRIBUTIONS["pinwheel"].sample(4000, torch.Generator().manual_seed(1)).double()
    start = kmeans_start(x, 6, covariance, torch.Generator().manual_seed(0))
    precisions = 1.0 / start.covariances if covariance == "diag" else torch.linalg.inv(start.covariances)
    reference = SklearnMixture(6, covariance_type=covariance, reg_covar=REG_COVAR, init_params="random_from_data",
                               weights_init=start.weights.numpy(), means_init=start.means.numpy(),
                               precisions_init=precisions.numpy(), random_state=0).fit(x.numpy())
    fit = expectation_maximisation(x, start, covariance)
    assert len(fit.log_likelihoods) - 1 == reference.n_iter_ > 2
    assert fit.log_likelihoods[-1] == pytest.approx(reference.score(x.numpy()), abs=1e-9)
    torch.testing.assert_close(fit.parameters.means, torch.from_numpy(reference.means_), atol=1e-8, rtol=0)


def test_kmeans_plusplus_spreads_its_centres_and_kmeans_settles():
    x = known_mixture(3000, COVARIANCES, seed=1)
    centres = kmeans_plusplus(x, 3, torch.Generator().manual_seed(0))
    assert all((x == c).all(1).any() for c in centres)  # data points
    assert torch.cdist(centres, MEANS).argmin(1).unique().numel() == 3  # one in each cluster
    labels = kmeans(x, centres)
    settled = torch.stack([x[labels == k].mean(0) for k in range(3)])
    assert torch.equal(kmeans(x, settled), labels)  # a fixed point of Lloyd's steps


def test_em_fit_sets_the_mixture_to_the_fitted_parameters():
    x = known_mixture(5000, COVARIANCES).float()
    gmm = GaussianMixture((2,), n_components=3)
    torch.manual_seed(0)
    log_likelihood = gmm.fit_data(x)
    with torch.no_grad():
        assert gmm.log_prob(x).mean().item() == pytest.approx(log_likelihood, abs=1e-4)
        torch.testing.assert_close(gmm.logits.softmax(0).sort().values, WEIGHTS.float().sort().values, atol=0.02,
                                   rtol=0)
    with pytest.raises(ConfigError, match="model.density.n_components=3"):
        gmm.fit_data(x[:2])
    # Images get a larger default reg_covar: a component often has fewer examples than values.
    assert (gmm.reg_covar, GaussianMixture((1, 8, 8)).reg_covar) == (REG_COVAR, 1e-3)


def run_gmm(tmp_path, overrides):
    cfg = compose_config(["model=gmm", "data=eight_gaussians", "data.n_train=2000", "data.n_val=500",
                          "data.n_test=2000", "logger=none", "trainer.enable_progress_bar=false",
                          "callbacks.density_2d.grid_size=16", *overrides], tmp_path / "run")
    validate_config(cfg)
    run(cfg)
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_a_run_fitted_by_em_takes_no_gradient_steps(tmp_path):
    record = run_gmm(tmp_path, [])
    assert record["global_step"] == 0 and record["epochs"] == 1  # one epoch that only validates
    metrics = record["metrics"]
    assert abs(metrics["test/nll_gap"]) < 0.05
    assert metrics["train/nll"] == pytest.approx(metrics["test/nll"], abs=0.1)  # the fit's NLL on the training split
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 0
    assert all(not state["state"] for state in checkpoint["optimizer_states"])  # Adam never stepped
    assert {p.name for p in (tmp_path / "run" / "density").iterdir()} == {"epoch_0000.png", "final.png"}


def test_fit_gradient_still_trains(tmp_path):
    record = run_gmm(tmp_path, ["model.density.fit=gradient", "trainer.max_epochs=1",
                                "trainer.limit_train_batches=5"])
    assert record["global_step"] == 5
    assert "train/nll_epoch" in record["metrics"]


@pytest.mark.parametrize(("override", "allowed"), [
    ("model.density.tol=0", "a number > 0"),
    ("model.density.max_iter=0", "an integer >= 1"),
])
def test_bad_em_settings_are_refused_naming_the_key(override, allowed, tmp_path):
    with pytest.raises(ConfigError, match=allowed) as caught:
        validate_config(compose_config(["model=gmm", "data=moons", override], tmp_path))
    assert override.split("=")[0] in str(caught.value)


def test_an_unknown_fit_exits_2_naming_the_choices(tmp_path):
    result = run_cli(["model=gmm", "data=moons", "model.density.fit=newton", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 2
    assert "model.density.fit" in result.stderr and "em, gradient" in result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything is written
