"""Variational autoencoder (Kingma & Welling 2014): maximise the ELBO
    log p(x) >= E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)),  p(z) = N(0, I).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.errors import ConfigError
from genexp.models.base import GenerativeModule
from genexp.nets.conv import ConvDecoder, ConvEncoder
from genexp.nets.mlp import MLPDecoder, MLPEncoder

ARCHS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}
LIKELIHOODS = ("bernoulli", "gaussian")


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, in nats (closed form)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


class VAE(GenerativeModule):
    def __init__(
        self,
        shape: list[int],
        latent_dim: int = 16,
        arch: str = "mlp",
        hidden_dims: list[int] = (512, 256),
        likelihood: str = "bernoulli",
        sigma: float = 0.1,
        beta: float = 1.0,
        kl_warmup_epochs: int = 0,
        **base,
    ) -> None:
        super().__init__(**base)
        if arch not in ARCHS:
            raise ConfigError(f"model.arch={arch!r} is not known; allowed: {', '.join(ARCHS)}")
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"model.likelihood={likelihood!r} is not known; allowed: {', '.join(LIKELIHOODS)}")
        if sigma <= 0:
            raise ConfigError(f"model.sigma={sigma} must be > 0")
        self.save_hyperparameters()
        self.shape = tuple(int(s) for s in shape)
        self.latent_dim = latent_dim
        encoder_cls, decoder_cls = ARCHS[arch]
        self.encoder = encoder_cls(self.shape, list(hidden_dims), 2 * latent_dim)
        self.decoder = decoder_cls(self.shape, list(hidden_dims), latent_dim)
        self.likelihood = likelihood
        self.sigma = sigma
        self.beta = beta
        self.kl_warmup_epochs = kl_warmup_epochs

    # --- protocol -------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x|z), in data space."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.noise(n, self.latent_dim, generator=generator))

    # --- objective ------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x|z) per sample, summed over dimensions; `out` is the decoder's raw output."""
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        const = math.log(2 * math.pi * self.sigma**2)
        return -0.5 * (((x - out) / self.sigma).pow(2) + const).flatten(1).sum(1)

    def kl_weight(self) -> float:
        """beta, linearly warmed up from 0 over the first kl_warmup_epochs epochs."""
        if self.kl_warmup_epochs == 0:
            return self.beta
        progress = (self.current_epoch + 1) / self.kl_warmup_epochs
        return self.beta * min(1.0, progress)

    def terms(self, x: Tensor) -> dict[str, Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = -self.log_likelihood(x, self.decoder(z))
        kl = gaussian_kl(mu, logvar)
        return {"recon": recon.mean(), "kl": kl.mean(), "elbo": -(recon + kl).mean()}

    def training_step(self, batch, batch_idx: int) -> Tensor:
        t = self.terms(batch[0])
        loss = t["recon"] + self.kl_weight() * t["kl"]
        self.log_dict({"train/loss": loss, "train/recon": t["recon"], "train/kl": t["kl"]},
                      on_step=True, on_epoch=True, prog_bar=False)
        self.log("train/kl_weight", self.kl_weight(), on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        t = self.terms(batch[0])
        dims = math.prod(self.shape)
        self.log_dict({
            f"{stage}/loss": -t["elbo"],
            f"{stage}/elbo": t["elbo"],
            f"{stage}/recon": t["recon"],
            f"{stage}/kl": t["kl"],
            f"{stage}/neg_elbo_bits_per_dim": -t["elbo"] / (dims * math.log(2)),
        }, prog_bar=(stage == "val"), batch_size=len(batch[0]))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")
