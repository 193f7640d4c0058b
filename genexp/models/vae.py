"""Variational autoencoder (Kingma & Welling 2014): maximise the evidence lower bound
    log p(x) >= E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)),  p(z) = N(0, I),
and its variants: beta-VAE (Higgins et al. 2017) with a linear KL warm-up (Bowman et al. 2016)
and the capacity schedule of Burgess et al. 2018; the conditional VAE (Sohn et al. 2015).

Test metrics per sample: the ELBO, its reconstruction and KL terms, and the importance-weighted
estimate of -log p(x) with k samples (Burda et al. 2016), in nats and bits/dim.
"""

import math

import torch
from torch import Tensor

from genexp.errors import ConfigError
from genexp.models.autoencoder import AutoEncoder
from genexp.models.likelihoods import bits_per_dim

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
IWAE_ROWS_PER_PASS = 4096  # decoder inputs per forward pass when drawing the k samples


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, in nats (closed form)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def importance_weighted_nll(log_weights: Tensor) -> Tensor:
    """-log (1/k) sum_i w_i from log weights (k, N): the bound of Burda et al. 2016 per sample."""
    return -(torch.logsumexp(log_weights, dim=0) - math.log(len(log_weights)))


class VAE(AutoEncoder):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"beta": "number >= 0", "kl_warmup_epochs": "number >= 0", "capacity_max": "number >= 0",
                    "capacity_epochs": "number >= 0", "iwae_samples": "int >= 0"}
    codes_per_latent = 2

    def __init__(
        self,
        shape: list[int],
        latent_dim: int = 16,
        beta: float = 1.0,
        kl_warmup_epochs: float = 0,
        capacity_max: float | None = None,
        capacity_epochs: float = 0,
        iwae_samples: int = 100,
        **kwargs,
    ) -> None:
        super().__init__(shape, latent_dim=latent_dim, **kwargs)
        if capacity_max is not None and capacity_max < 0:
            raise ConfigError(f"model.capacity_max={capacity_max} must be >= 0 nats, or null to switch it off")
        if capacity_max is None and capacity_epochs:
            raise ConfigError(f"model.capacity_epochs={capacity_epochs} schedules the capacity C, which is off "
                              f"(model.capacity_max=null): set model.capacity_max too, or leave capacity_epochs 0")
        self.beta = beta
        self.kl_warmup_epochs = kl_warmup_epochs
        self.capacity_max = capacity_max
        self.capacity_epochs = capacity_epochs
        self.iwae_samples = iwae_samples

    # --- protocol -------------------------------------------------------------------------
    def posterior(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mu, logvar = self.encoder(x, self.one_hot(labels)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The posterior mean: the point that stands for x in latent-space views."""
        return self.posterior(x, labels)[0]

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.noise(n, self.latent_dim, generator=generator)

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x) per sample, estimated with `iwae_samples` importance samples: a stochastic
        lower bound (in expectation) that approaches log p(x) as k grows."""
        return -self.iwae_nll(x, labels)

    # --- schedules ------------------------------------------------------------------------
    def kl_weight(self, progress: float) -> float:
        """beta, grown linearly from 0 over the first kl_warmup_epochs (progress in epochs)."""
        if self.kl_warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, progress / self.kl_warmup_epochs)

    def capacity(self, progress: float) -> float:
        """The KL target C in nats, grown linearly from 0 to capacity_max over capacity_epochs."""
        if self.capacity_epochs <= 0:
            return self.capacity_max
        return self.capacity_max * min(1.0, progress / self.capacity_epochs)

    def kl_penalty(self, kl: Tensor, progress: float) -> Tensor:
        """weight * KL, or weight * |KL - C| under the capacity schedule (Burgess et al. 2018)."""
        if self.capacity_max is None:
            return self.kl_weight(progress) * kl
        return self.kl_weight(progress) * (kl - self.capacity(progress)).abs()

    def training_progress(self, batch_idx: int) -> float:
        """Epochs completed so far, with the fraction of the current one, so schedules grow per step."""
        batches = self.trainer.num_training_batches
        return self.current_epoch + (batch_idx / batches if math.isfinite(batches) and batches else 0.0)

    # --- objective ------------------------------------------------------------------------
    def terms(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Single-sample estimates per sample (N,): reconstruction NLL, KL, and the ELBO."""
        mu, logvar = self.posterior(x, labels)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.reconstruction_nll(x, z, labels)
        kl = gaussian_kl(mu, logvar)
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl)}

    def training_loss(self, x: Tensor, labels: Tensor, batch_idx: int) -> tuple[Tensor, dict[str, float | Tensor]]:
        t = {name: value.mean() for name, value in self.terms(x, labels).items()}
        progress = self.training_progress(batch_idx)
        logs = {"recon": t["recon"], "kl": t["kl"], "kl_weight": self.kl_weight(progress)}
        if self.capacity_max is not None:
            logs["capacity"] = self.capacity(progress)
        return t["recon"] + self.kl_penalty(t["kl"], progress), logs

    @torch.no_grad()
    def importance_sample(self, x: Tensor, labels: Tensor | None, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """k draws z_i ~ q(z|x) per input: log importance weights log p(x|z_i) p(z_i) / q(z_i|x)
        and log p(x|z_i), both (k, N), and the closed-form KL, (N,)."""
        mu, logvar = self.posterior(x, labels)
        std = (0.5 * logvar).exp()
        per_pass = max(1, IWAE_ROWS_PER_PASS // len(x))
        log_weights, log_likelihoods = [], []
        for start in range(0, k, per_pass):
            m = min(per_pass, k - start)
            eps = torch.randn(m, *mu.shape, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps  # (m, N, latent_dim)
            xs = x.unsqueeze(0).expand(m, *x.shape).flatten(0, 1)
            ys = None if labels is None else labels.repeat(m)
            log_px_z = -self.reconstruction_nll(xs, z.flatten(0, 1), ys).view(m, len(x))
            log_pz = -(0.5 * z.pow(2) + HALF_LOG_2PI).sum(-1)
            log_qz = -(0.5 * eps.pow(2) + 0.5 * logvar + HALF_LOG_2PI).sum(-1)
            log_weights.append(log_px_z + log_pz - log_qz)
            log_likelihoods.append(log_px_z)
        return torch.cat(log_weights), torch.cat(log_likelihoods), gaussian_kl(mu, logvar)

    def iwae_nll(self, x: Tensor, labels: Tensor | None = None, k: int | None = None) -> Tensor:
        """-log p(x) per sample estimated with k importance samples (Burda et al. 2016):
        -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x). An upper bound on the NLL that tightens as k
        grows; k = 1 is the negative ELBO in expectation."""
        return importance_weighted_nll(self.importance_sample(x, labels, k or self.iwae_samples)[0])

    def evaluation_metrics(self, x: Tensor, labels: Tensor, stage: str) -> dict[str, Tensor]:
        """Per-sample means in nats (conditional models: of log p(x|y)). Validation uses one draw
        from q(z|x); the test uses the k draws of the importance-weighted bound for all of them."""
        k = self.iwae_samples if stage == "test" else 0
        if k:
            log_weights, log_px_z, kl = self.importance_sample(x, labels, k)
            recon = -log_px_z.mean(0)
        else:
            t = self.terms(x, labels)
            recon, kl = t["recon"], t["kl"]
        elbo = -(recon + kl).mean()
        metrics = {"loss": -elbo, "elbo": elbo, "recon": recon.mean(), "kl": kl.mean(),
                   "neg_elbo_bits_per_dim": self.bits_per_dim(-elbo)}
        if k:
            nll = importance_weighted_nll(log_weights).mean()
            metrics |= {"nll_iwae": nll, "nll_iwae_bits_per_dim": self.bits_per_dim(nll)}
        return metrics

    def bits_per_dim(self, nll: Tensor) -> Tensor:
        return bits_per_dim(nll, self.shape, self.likelihood, self.value_range)


class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): q(z|x, y) and p(x|z, y) with a one-hot label y."""

    def __init__(self, shape: list[int], num_classes: int | None = None, **kwargs) -> None:
        if not num_classes:
            raise ConfigError(f"model=cvae needs labelled data, but data.num_classes={num_classes}; "
                              f"choose a data set with labels (or set data.label_attribute for celeba)")
        super().__init__(shape, num_classes=num_classes, **kwargs)
