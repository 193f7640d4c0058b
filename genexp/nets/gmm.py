"""A mixture of K Gaussians, p(x) = sum_k pi_k N(x; mu_k, Sigma_k).

Two ways to fit it (`fit`):
- `em` (the default): expectation-maximisation over all the training points at once
  (genexp/nets/gmm_em.py: k-means++ and k-means start, then E and M steps until the mean
  log-likelihood per point changes by less than `tol`), on the model's device, in float64, with
  `reg_covar` added to every variance. No gradient steps follow: `fit_data` sets the parameters once,
  before training.
- `gradient`: gradient descent on the NLL like every other density. It finds a local optimum only:
  components started in the same mode tend to stay there. `em_init` starts it from scikit-learn's
  EM fit (k-means++ seeded) on `init_samples` training examples; without it the means start at
  random data points.
"""

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from genexp.errors import ConfigError
from genexp.nets.density import Density
from genexp.nets.gaussian import CholeskyFactor
from genexp.nets.gmm_em import REG_COVAR, fit_mixture

FITS = ("em", "gradient")
# Added to every variance by the EM fit when reg_covar is null: scikit-learn's 1e-6 on points; 1e-3 on
# images, where a component often has fewer training examples than the values it spans (8 components
# over 1455 digits of 32x32 px: each covariance singular but for this term; 2.6 bits/dim on the val
# split with 1e-3, 563 with 1e-6).
IMAGE_REG_COVAR = 1e-3
# Added to the covariances of the gradient fit's start (an EM fit on a sample): keeps them
# invertible when a sample has few points per component.
EM_REG_COVAR = 1e-3


class GaussianMixture(Density):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_components": "int >= 1", "init_samples": "int >= 1", "fit": "one of em, gradient",
                    "tol": "number > 0", "max_iter": "int >= 1", "reg_covar": "number > 0"}

    def __init__(self, shape: tuple[int, ...], n_components: int = 8, covariance: str = "full",
                 fit: str = "em", tol: float = 1e-3, max_iter: int = 100, reg_covar: float | None = None,
                 em_init: bool = True, init_samples: int = 2000) -> None:
        super().__init__(shape)
        if fit not in FITS:
            raise ConfigError(f"model.density.fit={fit!r} is not known; allowed: {', '.join(FITS)}")
        self.n_components = n_components
        self.covariance = covariance
        # With EM the parameters are set by fit_data, not by an optimiser.
        self.fitted_by_gradients = fit == "gradient"
        self.tol = tol
        self.max_iter = max_iter
        self.reg_covar = reg_covar if reg_covar is not None else IMAGE_REG_COVAR if len(self.shape) == 3 else REG_COVAR
        self.em_init = em_init
        # How many training examples initialize() wants to see.
        self.init_samples = init_samples
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.loc = nn.Parameter(torch.randn(n_components, self.dims))
        self.scale_tril = CholeskyFactor((n_components,), self.dims, covariance)

    def distribution(self) -> MixtureSameFamily:
        components = MultivariateNormal(self.loc, scale_tril=self.scale_tril())
        return MixtureSameFamily(Categorical(logits=self.logits), components)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.distribution().log_prob(x.flatten(1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        # Pick a component k ~ Categorical(pi) for each draw, then x = mu_k + L_k eps.
        k = (self.logits + self.gumbel(n, self.n_components, generator=generator)).argmax(1)
        eps = self.standard_normal(n, self.dims, 1, generator=generator)
        return (self.loc[k] + (self.scale_tril()[k] @ eps).squeeze(-1)).view(n, *self.shape)

    def _check_enough(self, x: Tensor) -> None:
        if len(x) < self.n_components:
            raise ConfigError(f"model.density.n_components={self.n_components} needs at least as many training "
                              f"examples to start from, but the data's training split has {len(x)}")

    @torch.no_grad()
    def _set(self, weights: Tensor, means: Tensor, covariances: Tensor) -> None:
        self.logits.copy_(weights.log())
        self.loc.copy_(means)
        # Factorised in the fit's precision (float64): a covariance near singular in float32 still has a factor.
        self.scale_tril.set_covariance(covariances.to(self.loc.device))

    @torch.no_grad()
    def fit_data(self, x: Tensor) -> float:
        """fit=em: the EM fit to all the points x; returns their mean log-likelihood per point (nats)."""
        self._check_enough(x)
        seed = int(torch.randint(2**31 - 1, ()).item())  # follows the run's seed
        fit = fit_mixture(x.detach().to(self.device), self.n_components, self.covariance, self.tol, self.max_iter,
                          torch.Generator().manual_seed(seed), self.reg_covar)
        self._set(fit.parameters.weights, fit.parameters.means, fit.parameters.covariances)
        return fit.log_likelihoods[-1]

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """fit=gradient: start from the data, an EM fit (em_init) or K random data points as means."""
        x = x.flatten(1).detach().double().cpu()
        self._check_enough(x)
        seed = int(torch.randint(2**31 - 1, ()).item())  # follows the run's seed
        if self.em_init:
            from sklearn.mixture import GaussianMixture as EMGaussianMixture

            em = EMGaussianMixture(self.n_components, covariance_type=self.covariance, reg_covar=EM_REG_COVAR,
                                   random_state=seed).fit(x.numpy())
            weights, means, covariances = (torch.from_numpy(a) for a in (em.weights_, em.means_, em.covariances_))
        else:
            generator = torch.Generator().manual_seed(seed)
            means = x[torch.randint(len(x), (self.n_components,), generator=generator)]
            weights = torch.full((self.n_components,), 1.0 / self.n_components, dtype=x.dtype)
            covariances = (x.var(0) + EM_REG_COVAR).expand(self.n_components, -1)
            if self.covariance == "full":
                covariances = torch.diag_embed(covariances)
        self._set(weights, means, covariances)
