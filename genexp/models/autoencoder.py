"""Deterministic autoencoder (the book's starting point): x -> z -> x, trained on the
reconstruction NLL under the decoder's likelihood p(x|z).

Encoder and decoder are chosen by config (model.encoder, model.decoder: MLP or conv nets) and
sized from the data's shape; with `num_classes` both also see a one-hot label (the conditional VAE builds on this). An autoencoder has no prior over its codes, so
`sample` decodes codes drawn from a diagonal Gaussian fitted to the training codes (running
moments kept with the weights): it shows how poorly such a latent space generates.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.models.base import GenerativeModule, build_net
from genexp.models.likelihoods import make_likelihood
CODE_MOMENTUM = 0.05  # of the running mean and variance of training codes


class AutoEncoder(GenerativeModule):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"latent_dim": "int >= 1", "sigma": "number > 0"}
    codes_per_latent = 1  # encoder outputs per latent dimension (a VAE has mean and log-variance)

    def __init__(
        self,
        shape: list[int],
        encoder: dict[str, Any],
        decoder: dict[str, Any],
        latent_dim: int = 2,
        likelihood: str = "bernoulli",
        sigma: float | None = None,
        learn_sigma: bool = False,
        value_range: list[float] | None = None,
        num_classes: int | None = None,
        **base,
    ) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.shape = tuple(int(s) for s in shape)
        self.latent_dim = latent_dim
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        self.num_classes = num_classes
        self.likelihood = make_likelihood(likelihood, self.value_range, sigma, learn_sigma)
        label_features = num_classes or 0
        # The networks of the config (model.encoder, model.decoder), sized here: the encoder reads
        # x (and a one-hot label), the decoder reads z (and the label).
        self.encoder = build_net(encoder, shape=self.shape, out_features=self.codes_per_latent * latent_dim,
                                 cond_features=label_features)
        self.decoder = build_net(decoder, shape=self.shape, in_features=latent_dim + label_features)
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_var", torch.ones(latent_dim))

    # --- protocol -------------------------------------------------------------------------
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The code of each input, (N, latent_dim)."""
        return self.encoder(x, self.one_hot(labels))

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The mean of p(x|z), in data space."""
        return self.likelihood.mean(self.decoder_output(z, labels))

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, labels), labels)

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        if self.num_classes and labels is None:
            # Without labels a conditional model samples p(x) = mean over y of p(x|y).
            labels = torch.randint(self.num_classes, (n,), generator=generator).to(self.device)
        return self.decode(self.prior_sample(n, generator), labels)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.code_mean + self.code_var.sqrt() * self.noise(n, self.latent_dim, generator=generator)

    # --- networks -------------------------------------------------------------------------
    def one_hot(self, labels: Tensor | None) -> Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:
            raise ValueError("a conditional model needs the labels of its inputs")
        return F.one_hot(labels.long(), self.num_classes).float()

    def decoder_output(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The decoder's raw output (logits or unsquashed mean) that the likelihood reads."""
        condition = self.one_hot(labels)
        return self.decoder(z if condition is None else torch.cat([z, condition], dim=1))

    # --- objective ------------------------------------------------------------------------
    def reconstruction_nll(self, x: Tensor, z: Tensor, labels: Tensor | None) -> Tensor:
        """-log p(x|z) per sample, in nats."""
        return -self.likelihood.log_prob(x, self.decoder_output(z, labels))

    def training_loss(self, x: Tensor, labels: Tensor, batch_idx: int) -> tuple[Tensor, dict[str, float | Tensor]]:
        """The loss to minimise and what to log beside it (names under train/)."""
        z = self.encode(x, labels)
        with torch.no_grad():
            self.code_mean.lerp_(z.mean(0), CODE_MOMENTUM)
            self.code_var.lerp_(z.var(0, unbiased=False), CODE_MOMENTUM)
        loss = self.reconstruction_nll(x, z, labels).mean()
        return loss, {"recon": loss}

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, labels = batch
        loss, logs = self.training_loss(x, labels, batch_idx)
        scalars = {"train/loss": loss} | {f"train/{name}": value for name, value in logs.items()}
        if self.hparams.learn_sigma:
            scalars["train/sigma"] = self.likelihood.sigma
        self.log_train(scalars, len(x))
        return loss

    def evaluation_metrics(self, x: Tensor, labels: Tensor, stage: str) -> dict[str, Tensor]:
        """Per-sample means of what a stage reports; the loss is what `monitor` reads."""
        recon = self.reconstruction_nll(x, self.encode(x, labels), labels).mean()
        return {"loss": recon, "recon": recon}

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, labels = batch
        self.log_evaluation(stage, self.evaluation_metrics(x, labels, stage), len(x))
