"""A mixture of K Gaussians, p(x) = sum_k pi_k N(x; mu_k, Sigma_k), learned by gradient descent on the NLL.

Gradient descent finds a local optimum only: components started in the same mode tend to
stay there. `em_init` starts from scikit-learn's expectation-maximisation fit (k-means++
seeded) on a sample of the training data; without it the means start at random data points.
"""

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from genexp.errors import ConfigError
from genexp.nets.density import Density
from genexp.nets.gaussian import CholeskyFactor

# Added to the EM covariances: keeps them invertible when a sample has fewer points than dimensions.
EM_REG_COVAR = 1e-3


class GaussianMixture(Density):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_components": "int >= 1", "init_samples": "int >= 1"}

    def __init__(self, shape: tuple[int, ...], n_components: int = 8, covariance: str = "full",
                 em_init: bool = True, init_samples: int = 2000) -> None:
        super().__init__(shape)
        self.n_components = n_components
        self.covariance = covariance
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

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Start from the data: an EM fit (em_init) or K random data points as means."""
        x = x.flatten(1).detach().double().cpu()
        if len(x) < self.n_components:
            raise ConfigError(f"model.density.n_components={self.n_components} needs at least as many training "
                              f"examples to start from, but the data's training split has {len(x)}")
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
        self.logits.copy_(weights.log())
        self.loc.copy_(means)
        self.scale_tril.set_covariance(covariances.to(self.loc))
