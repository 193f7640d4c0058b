"""A multivariate Gaussian p(x) = N(x; mu, Sigma), the simplest parametric density.

The parameters theta = (mu, Sigma) are free nn.Parameters fitted by gradient descent on
the negative log-likelihood; at the optimum they equal the closed-form maximum-likelihood
estimates, the sample mean and the (biased, 1/N) sample covariance.
"""

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from genexp.errors import ConfigError
from genexp.nets.density import Density

COVARIANCES = ("full", "diag")
# A full covariance has D(D+1)/2 parameters: half a million at this size (32x32 grayscale images).
MAX_FULL_COVARIANCE_DIMS = 1024


class CholeskyFactor(nn.Module):
    """Sigma = L L^T with L lower triangular and a positive (exponentiated) diagonal, so that every
    value of the free parameters is a valid covariance. `batch` stacks several (mixture components)."""

    def __init__(self, batch: tuple[int, ...], dims: int, covariance: str) -> None:
        super().__init__()
        if covariance not in COVARIANCES:
            raise ConfigError(f"model.density.covariance={covariance!r} is not known; "
                              f"allowed: {', '.join(COVARIANCES)}")
        if covariance == "full" and dims > MAX_FULL_COVARIANCE_DIMS:
            raise ConfigError(f"model.density.covariance=full over data of {dims} dimensions (data.shape) needs "
                              f"{dims * (dims + 1) // 2:,} parameters per Gaussian; use covariance=diag or smaller "
                              f"data (at most {MAX_FULL_COVARIANCE_DIMS} dimensions, e.g. data.image_size)")
        self.log_diagonal = nn.Parameter(torch.zeros(*batch, dims))
        self.lower = nn.Parameter(torch.zeros(*batch, dims, dims)) if covariance == "full" else None

    def forward(self) -> Tensor:
        factor = torch.diag_embed(self.log_diagonal.exp())
        return factor if self.lower is None else factor + self.lower.tril(-1)

    @torch.no_grad()
    def set_covariance(self, covariance: Tensor) -> None:
        """From covariance matrices (..., D, D), or variances (..., D) for a diagonal factor."""
        if self.lower is None:
            variances = covariance.diagonal(dim1=-2, dim2=-1) if covariance.dim() == self.log_diagonal.dim() + 1 \
                else covariance
            self.log_diagonal.copy_(0.5 * variances.log())
            return
        factor = torch.linalg.cholesky(covariance)
        self.log_diagonal.copy_(factor.diagonal(dim1=-2, dim2=-1).log())
        self.lower.copy_(factor.tril(-1))


class Gaussian(Density):
    """N(mu, Sigma) over the flattened variable; covariance `full` (D + D(D+1)/2 parameters) or `diag` (2D)."""

    def __init__(self, shape: tuple[int, ...], covariance: str = "full") -> None:
        super().__init__(shape)
        self.loc = nn.Parameter(torch.zeros(self.dims))
        self.scale_tril = CholeskyFactor((), self.dims, covariance)

    def distribution(self) -> MultivariateNormal:
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril())

    def log_prob(self, x: Tensor) -> Tensor:
        return self.distribution().log_prob(x.flatten(1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        # x = mu + L eps, eps ~ N(0, I): then Cov(x) = L L^T = Sigma.
        eps = self.standard_normal(n, self.dims, generator=generator)
        return (self.loc + eps @ self.scale_tril().T).view(n, *self.shape)
