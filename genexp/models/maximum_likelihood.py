"""Maximum likelihood: fit a parametric density p_theta to data by minimising the NLL.

The data x_1..x_N are draws from an unknown p_data. Maximum likelihood picks the theta that
makes them most probable, argmax_theta sum_n log p_theta(x_n); equivalently it minimises the
negative log-likelihood per example, NLL(theta) = -1/N sum_n log p_theta(x_n), the loss below.
The density itself is a net from genexp.nets (Gaussian, mixture, RealNVP, MAF, NSF, PixelCNN),
named by the `density` config.

Vectors are modelled as they are; the NLL is in nats. Images are reported in bits per
dimension, NLL / (D ln 2), of their 8-bit pixel values:
- continuous densities see uniformly dequantised pixels, y = (k + u) / 256 with k the 0..255
  pixel value and u ~ U[0, 1) (Uria et al. 2013; Theis et al. 2016), mapped through a logit
  (Dinh et al. 2017); then log p(y) - D log 256 is a lower bound on log P(k) of the pixel values
  (the dequantised density integrated over each pixel's bin of width 1/256);
- discrete densities (PixelCNN) give log P(k) itself.
"""

import math
from typing import Any

import torch
from torch import Tensor

from genexp.errors import ConfigError
from genexp.models.base import GenerativeModule, build_net
from genexp.value_range import from_unit, to_unit

PIXEL_BINS = 256  # images are 8-bit


class MaximumLikelihood(GenerativeModule):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"logit_alpha": "number in [0, 0.5)"}

    def __init__(self, shape: list[int], density: dict[str, Any], value_range: list[float] | None = None,
                 logit_alpha: float = 0.05, **base) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.shape = tuple(int(s) for s in shape)
        self.is_image = len(self.shape) == 3
        if self.is_image and value_range is None:
            raise ConfigError("data.value_range is needed for image data (e.g. [0.0, 1.0])")
        if not 0 <= logit_alpha < 0.5:
            raise ConfigError(f"model.logit_alpha={logit_alpha} is not allowed: it must be in [0, 0.5)")
        self.value_range = tuple(float(v) for v in value_range) if value_range is not None else None
        self.logit_alpha = logit_alpha
        self.density = build_net(density, shape=self.shape)
        self.dims = math.prod(self.shape)
        # A density fitted to all the training data at once (a mixture's EM, at setup) takes no gradient
        # steps: Lightning's loop then has nothing to optimise and stops after one validation (training_step).
        self.automatic_optimization = getattr(self.density, "fitted_by_gradients", True)
        self.fit_nll: float | None = None  # that fit's NLL on the training split

    # --- data space <-> the space the density models ------------------------------------
    def dequantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image batch -> (continuous y the density models, log|dy/dx| per example), x = pixel levels + U[0,1)."""
        bins = (to_unit(x, self.value_range) * (PIXEL_BINS - 1)).round()
        y = (bins + torch.rand_like(bins)) / PIXEL_BINS
        # Each pixel value owns a bin of width 1/256: log P(bin) >= log p(y) - D log 256.
        log_jacobian = torch.full((len(x),), -self.dims * math.log(PIXEL_BINS), device=x.device)
        if self.logit_alpha:
            # y -> logit(alpha + (1 - 2 alpha) y): unbounded values, as flows like them.
            squeezed = self.logit_alpha + (1 - 2 * self.logit_alpha) * y
            log_slope = math.log(1 - 2 * self.logit_alpha) - squeezed.log() - (-squeezed).log1p()
            log_jacobian += log_slope.flatten(1).sum(1)
            y = torch.logit(squeezed)
        return y, log_jacobian

    def quantize(self, y: Tensor) -> Tensor:
        """Inverse of dequantize: continuous y -> pixel levels in the data's value range."""
        if self.logit_alpha:
            y = (torch.sigmoid(y) - self.logit_alpha) / (1 - 2 * self.logit_alpha)
        bins = (y * PIXEL_BINS).floor().clamp(0, PIXEL_BINS - 1)
        return from_unit(bins / (PIXEL_BINS - 1), self.value_range)

    # --- protocol -------------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log p_theta(x) per example, nats: the log density of a vector; for images the log probability
        of the pixel values (exact for discrete densities, a one-sample dequantisation bound otherwise)."""
        if not self.is_image:
            return self.density.log_prob(x)
        if self.density.discrete:
            return self.density.log_prob(to_unit(x, self.value_range))
        y, log_jacobian = self.dequantize(x)
        return self.density.log_prob(y) + log_jacobian

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        samples = self.density.sample(n, generator=generator)
        if not self.is_image:
            return samples
        return from_unit(samples, self.value_range) if self.density.discrete else self.quantize(samples)

    # --- fitting --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Densities that start from the data (a mixture's EM fit) see a sample of the training set;
        # those fitted without gradients, all of it. Before any checkpoint is restored, so a resumed
        # run keeps its trained weights.
        datamodule = self.trainer.datamodule
        if stage != "fit" or not hasattr(datamodule, "example_batch"):
            return
        if not self.automatic_optimization:
            x = datamodule.example_batch("train", len(datamodule.train_dataloader().dataset))[0].to(self.device)
            y, log_jacobian = self.dequantize(x) if self.is_image else (x, torch.zeros(()))
            self.fit_nll = -(self.density.fit_data(y) + float(log_jacobian.mean()))
        elif hasattr(self.density, "initialize"):
            x = datamodule.example_batch("train", self.density.init_samples)[0].to(self.device)
            self.density.initialize(self.dequantize(x)[0] if self.is_image and not self.density.discrete else x)

    def nll(self, x: Tensor) -> Tensor:
        """The loss: negative log-likelihood per example, averaged over the batch (nats)."""
        return -self.log_prob(x).mean()

    def nll_metrics(self, nll: Tensor) -> dict[str, Tensor]:
        metrics = {"nll": nll}
        if self.is_image:
            metrics["bits_per_dim"] = nll / (self.dims * math.log(2))
        return metrics

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        x = batch[0]
        if not self.automatic_optimization:
            # Fitted at setup: no step to take. Report the fit's NLL on the training split and stop after
            # this epoch's validation, which still runs with its checkpoint and views.
            self.trainer.should_stop = True
            if self.fit_nll is not None:
                nll = torch.tensor(self.fit_nll, device=self.device)
                self.log_train({f"train/{name}": value for name, value in self.nll_metrics(nll).items()}, len(x))
            return None
        nll = self.nll(x)
        self.log_train({f"train/{name}": value for name, value in self.nll_metrics(nll).items()}, len(x))
        return nll

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x = batch[0]
        nll = self.nll(x)
        metrics = self.nll_metrics(nll)
        data_log_prob = getattr(self.trainer.datamodule, "log_prob", None)
        if data_log_prob is not None:
            # The best any model can do: the entropy of p_data, estimated on the same examples.
            oracle = -data_log_prob(x).mean()
            metrics |= {"oracle_nll": oracle, "nll_gap": nll - oracle}
        self.log_evaluation(stage, metrics, len(x))
