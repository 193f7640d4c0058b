"""The variational family's objective: the closed-form KL, the likelihoods and their checks,
the importance-weighted bound against the ELBO and against an exact likelihood, and the
beta / warm-up / capacity schedules as they reach the training loss."""

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.distributions import Normal, kl_divergence

from conftest import compose_config, mlp_nets
from genexp.errors import ConfigError
from genexp.models.autoencoder import AutoEncoder
from genexp.models.likelihoods import GaussianLikelihood, bits_per_dim, make_likelihood
from genexp.models.vae import CVAE, VAE, gaussian_kl

ADAM = {"_target_": "torch.optim.Adam", "lr": 3e-3}


def digits(tmp_path, batch_size: int = 64):
    cfg = compose_config(["data.image_size=8", f"data.batch_size={batch_size}"], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return datamodule


def train(model: VAE, x: torch.Tensor, steps: int, batch_size: int = 128) -> VAE:
    """Plain minibatch ELBO ascent: the toy models below need no trainer."""
    optimizer = model.make_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (batch_size,), generator=generator)]
        loss = -model.terms(batch)["elbo"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_kl_matches_torch_distributions_and_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    std = (0.5 * logvar).exp()
    expected = kl_divergence(Normal(mu, std), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    z = Normal(mu, std).sample((200_000,))
    monte_carlo = (Normal(mu, std).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
    assert torch.allclose(gaussian_kl(mu, logvar), monte_carlo, atol=0.05)
    assert torch.all(gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)) == 0)


def test_gaussian_log_prob_is_the_normal_density_and_bits_per_dim_use_8_bit_pixels():
    x, out = torch.rand(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    unbounded = GaussianLikelihood(0.3, learn_sigma=False, value_range=None)
    assert torch.allclose(unbounded.log_prob(x, out), Normal(out, 0.3).log_prob(x).flatten(1).sum(1), atol=1e-5)
    bounded = GaussianLikelihood(0.3, learn_sigma=True, value_range=(0.0, 1.0))
    assert torch.allclose(bounded.mean(out), torch.sigmoid(out))
    assert isinstance(bounded.log_sigma, torch.nn.Parameter)
    nll = torch.tensor(4 * math.log(2))  # 1 bit per value as a density on [0, 1]
    assert bits_per_dim(nll, (1, 2, 2), bounded, (0.0, 1.0)).item() == pytest.approx(9.0)
    assert bits_per_dim(nll, (1, 2, 2), make_likelihood("bernoulli", (0.0, 1.0)), (0.0, 1.0)).item() \
        == pytest.approx(1.0)


@pytest.mark.parametrize(("likelihood", "value_range", "key"), [
    ("bernoulli", (-1.0, 1.0), "model.likelihood=bernoulli"),
    ("bernoulli", None, "model.likelihood=bernoulli"),
    ("poisson", (0.0, 1.0), "model.likelihood='poisson'"),
])
def test_a_likelihood_that_cannot_take_the_data_is_refused(likelihood, value_range, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        VAE([1, 8, 8], **mlp_nets([8]), value_range=value_range, likelihood=likelihood, optimizer=ADAM)


def test_conditional_vae_needs_labels_and_uses_them():
    with pytest.raises(ConfigError, match="data.num_classes"):
        CVAE([1, 8, 8], num_classes=None, **mlp_nets([8]), value_range=[0, 1], optimizer=ADAM)
    model = CVAE([1, 8, 8], num_classes=3, latent_dim=2, **mlp_nets([16]), value_range=[0, 1], optimizer=ADAM).eval()
    z = torch.zeros(2, 2)
    assert not torch.allclose(model.decode(z, labels=torch.tensor([0, 0])), model.decode(z, labels=torch.tensor([1, 2])))
    assert model.sample(4, labels=torch.tensor([0, 1, 2, 0])).shape == (4, 1, 8, 8)
    assert model.sample(5).shape == (5, 1, 8, 8)  # labels drawn uniformly


def test_iwae_converges_to_the_exact_likelihood_of_a_linear_gaussian_vae():
    # Linear decoder x = W z + b + sigma * noise: p(x) = N(b, W W^T + sigma^2 I) is known exactly.
    torch.manual_seed(0)
    true_w = torch.randn(4, 2)
    x = torch.randn(4096, 2) @ true_w.T + 0.3 * torch.randn(4096, 4) + 1.0
    model = VAE([4], latent_dim=2, **mlp_nets([]), likelihood="gaussian", sigma=0.5, value_range=None,
                optimizer=ADAM)
    train(model, x[:3072], steps=300)
    test = x[3072:]
    w, b = model.decoder.net[0].weight, model.decoder.net[0].bias
    exact = -torch.distributions.MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(4)).log_prob(test).mean()
    with torch.no_grad():
        neg_elbo = torch.stack([-model.terms(test)["elbo"].mean() for _ in range(50)]).mean()
        nll_many = model.iwae_nll(test, k=2000).mean()
    assert neg_elbo >= exact - 0.01
    assert nll_many == pytest.approx(exact.item(), abs=0.02)


def test_a_learned_sigma_finds_the_noise_level_and_a_fixed_one_stays():
    torch.manual_seed(0)
    x = torch.randn(3072, 2) @ torch.randn(4, 2).T + 0.3 * torch.randn(3072, 4)
    learned = VAE([4], latent_dim=2, **mlp_nets([]), likelihood="gaussian", sigma=1.0, learn_sigma=True,
                  value_range=None, optimizer=ADAM | {"lr": 1e-2})
    assert 0.25 < train(learned, x, steps=1000).likelihood.sigma.item() < 0.4
    fixed = VAE([4], latent_dim=2, **mlp_nets([]), likelihood="gaussian", sigma=1.0, value_range=None,
                optimizer=ADAM)
    assert train(fixed, x, steps=10).likelihood.sigma.item() == pytest.approx(1.0)
    assert "likelihood.log_sigma" not in dict(fixed.named_parameters())


def test_iwae_is_tighter_than_the_elbo_and_tightens_with_k_on_a_trained_model(tmp_path):
    datamodule = digits(tmp_path)
    x = datamodule.example_batch("train", 2000)[0]
    torch.manual_seed(0)
    model = train(VAE([1, 8, 8], latent_dim=4, **mlp_nets([64]), value_range=[0, 1], optimizer=ADAM),
                  x, steps=400)
    test = datamodule.example_batch("test", 500)[0]
    with torch.no_grad():
        neg_elbo = torch.stack([-model.terms(test)["elbo"].mean() for _ in range(20)]).mean().item()
        nll = {k: model.iwae_nll(test, k=k).mean().item() for k in (5, 50, 500)}
    assert neg_elbo > nll[5] > nll[50] > nll[500]
    assert neg_elbo - nll[500] > 0.2  # nats: a trained model still leaves a visible gap


class LossSpy(L.Callback):
    """What the model logged beside each training loss, with the progress it was logged at."""

    def __init__(self) -> None:
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        logged = dict(zip(pl_module.train_log.names, pl_module.train_log.values.tolist()))
        progress = trainer.current_epoch + batch_idx / trainer.num_training_batches
        self.steps.append((progress, float(outputs["loss"]), logged))


@pytest.mark.parametrize("capacity", [None, 5.0])
def test_beta_warmup_and_capacity_reach_the_training_loss(capacity, tmp_path):
    beta, warmup, capacity_epochs = 3.0, 1.5, 2.0
    model = VAE([1, 8, 8], latent_dim=2, **mlp_nets([16]), value_range=[0, 1], beta=beta,
                kl_warmup_epochs=warmup, capacity_max=capacity,
                capacity_epochs=0 if capacity is None else capacity_epochs, optimizer=ADAM)
    spy = LossSpy()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[spy], default_root_dir=tmp_path)
    trainer.fit(model, datamodule=digits(tmp_path, batch_size=16))
    assert len(spy.steps) == 8
    for progress, loss, logged in spy.steps:
        weight = beta * min(1.0, progress / warmup)
        assert logged["train/kl_weight"] == pytest.approx(weight)
        recon, kl = logged["train/recon"], logged["train/kl"]
        if capacity is None:
            expected = recon + weight * kl
        else:
            target = capacity * min(1.0, progress / capacity_epochs)
            assert logged["train/capacity"] == pytest.approx(target)
            expected = recon + weight * abs(kl - target)
        assert loss == pytest.approx(expected, rel=1e-5)
    assert spy.steps[0][2]["train/kl_weight"] == 0.0
    assert spy.steps[-1][2]["train/kl_weight"] == beta


def test_autoencoder_samples_from_its_fitted_code_distribution():
    model = AutoEncoder([1, 8, 8], latent_dim=2, **mlp_nets([16]), value_range=[0, 1], optimizer=ADAM)
    model.code_mean.fill_(5.0)
    model.code_var.fill_(1e-8)
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(model.prior_sample(3, generator), torch.full((3, 2), 5.0), atol=1e-3)
    assert model.sample(3).shape == (3, 1, 8, 8)
    assert model.encode(torch.rand(3, 1, 8, 8)).shape == (3, 2)
