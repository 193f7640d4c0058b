"""Expectation-maximisation (EM) for a mixture of Gaussians, on torch tensors of any device.

The steps are those of scikit-learn's GaussianMixture (init_params="kmeans"), on all the points:
- start: k-means++ seeding (greedy, 2 + ln K candidates per centre) and Lloyd's k-means give each
  point a component; one M-step on those hard assignments gives the first weights, means and
  covariances;
- E-step: responsibilities r_nk = pi_k N(x_n; mu_k, Sigma_k) / p(x_n), and the mean log-likelihood
  per point, (1/N) sum_n log p(x_n), of the current parameters;
- M-step: pi_k = N_k / N, mu_k and Sigma_k the r_nk-weighted mean and covariance (N_k = sum_n r_nk),
  with `reg_covar` added to every variance (scikit-learn's default 1e-6), so that a component that
  closes in on a few points stays invertible;
- stop when the mean log-likelihood changes by less than `tol` (EM never lowers it), or after
  `max_iter` iterations.
Everything runs in float64: the log-likelihood changes that decide convergence are ~1e-3 of
values that float32 holds to ~1e-7, and covariances of tight components lose their positive
definiteness in float32.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from genexp.errors import GenexpError

REG_COVAR = 1e-6  # scikit-learn's default
KMEANS_MAX_ITER = 300  # scikit-learn's KMeans defaults
KMEANS_TOL = 1e-4  # of the data's mean variance: the centres' squared shift that ends k-means
LOG_2PI = math.log(2 * math.pi)


@dataclass
class MixtureParameters:
    weights: Tensor      # (K,)
    means: Tensor        # (K, D)
    covariances: Tensor  # (K, D, D) for full covariances, (K, D) variances for diag


@dataclass
class EMFit:
    parameters: MixtureParameters
    # The mean log-likelihood per point of the start and after each iteration (non-decreasing).
    log_likelihoods: list[float]
    converged: bool


def squared_distances(x: Tensor, centres: Tensor) -> Tensor:
    """(N, C): |x_n - c|^2, expanded as |x|^2 - 2 x.c + |c|^2 (no N x C x D tensor)."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ centres.T + (centres * centres).sum(1)).clamp_(min=0)


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """K initial centres: the first a uniform draw, each next one the best of 2 + ln K candidates drawn
    with probability proportional to the squared distance to the nearest centre so far (scikit-learn's
    greedy k-means++). Random numbers come from a CPU generator: the same centres on any device."""
    trials = 2 + int(math.log(k))
    first = int(torch.randint(len(x), (1,), generator=generator))
    centres = [x[first]]
    closest = squared_distances(x, x[first:first + 1])[:, 0]
    potential = closest.sum()
    for _ in range(1, k):
        draws = torch.rand(trials, generator=generator, dtype=x.dtype).to(x.device) * potential
        candidates = torch.searchsorted(closest.cumsum(0), draws).clamp_(max=len(x) - 1)
        distances = torch.minimum(closest, squared_distances(x, x[candidates]).T)  # (trials, N)
        potentials = distances.sum(1)
        best = int(potentials.argmin())
        closest, potential = distances[best], potentials[best]
        centres.append(x[candidates[best]])
    return torch.stack(centres)


def kmeans(x: Tensor, centres: Tensor, max_iter: int = KMEANS_MAX_ITER) -> Tensor:
    """Lloyd's k-means from `centres`; each point's cluster (N,). Stops when no point changes cluster or
    the centres move (summed squared shift) by at most KMEANS_TOL times the data's mean variance."""
    tol = KMEANS_TOL * x.var(0, correction=0).mean()
    labels = squared_distances(x, centres).argmin(1)
    for _ in range(max_iter):
        # Sums by a matrix product: deterministic on a GPU, unlike index_add_.
        members = torch.nn.functional.one_hot(labels, len(centres)).to(x.dtype)
        counts = members.sum(0)[:, None]
        # A cluster left empty keeps its centre (rare after k-means++ seeding).
        moved = torch.where(counts > 0, members.T @ x / counts.clamp(min=1), centres)
        shift = (moved - centres).pow(2).sum()
        centres = moved
        new_labels = squared_distances(x, centres).argmin(1)
        if torch.equal(new_labels, labels) or shift <= tol:
            return new_labels
        labels = new_labels
    return labels


def m_step(x: Tensor, resp: Tensor, covariance: str, reg_covar: float) -> MixtureParameters:
    """Weights, means and covariances weighted by the responsibilities resp (N, K)."""
    counts = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # as scikit-learn: no empty component divides by 0
    means = resp.T @ x / counts[:, None]
    if covariance == "diag":
        # E_k[x^2] - mu_k^2, without an N x K x D tensor.
        variances = resp.T @ (x * x) / counts[:, None] - means * means + reg_covar
        return MixtureParameters(counts / len(x), means, variances)
    covariances = torch.empty(len(means), x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
    for k in range(len(means)):  # one component at a time: N x D memory, not N x K x D
        diff = x - means[k]
        covariances[k] = (resp[:, k, None] * diff).T @ diff / counts[k]
    covariances.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    return MixtureParameters(counts / len(x), means, covariances)


def component_log_probs(x: Tensor, parameters: MixtureParameters) -> Tensor:
    """(N, K): log pi_k + log N(x_n; mu_k, Sigma_k)."""
    weights, means, covariances = parameters.weights, parameters.means, parameters.covariances
    dims = x.shape[1]
    if covariances.dim() == 2:  # diag: sum_d (x_d - mu_d)^2 / var_d, expanded into matrix products
        precisions = 1.0 / covariances
        mahalanobis = (x * x) @ precisions.T - 2 * x @ (means * precisions).T + (means * means * precisions).sum(1)
        log_det = covariances.log().sum(1)
    else:
        factors, info = torch.linalg.cholesky_ex(covariances)
        if int(info.max()) > 0:
            raise GenexpError("the mixture's EM fit met a covariance that is not positive definite; use "
                              "model.density.covariance=diag or fewer model.density.n_components")
        # Sigma_k^-1 = P_k P_k^T with P_k = L_k^-T: |P_k^T (x - mu_k)|^2 is one matrix product per component.
        eye = torch.eye(dims, dtype=x.dtype, device=x.device).expand_as(factors)
        precision_factors = torch.linalg.solve_triangular(factors, eye, upper=False).transpose(-2, -1)
        mahalanobis = torch.stack([(x @ p - mu @ p).pow(2).sum(1) for p, mu in zip(precision_factors, means)], 1)
        log_det = 2 * factors.diagonal(dim1=-2, dim2=-1).log().sum(1)
    return weights.log() - 0.5 * (dims * LOG_2PI + log_det + mahalanobis)


def e_step(x: Tensor, parameters: MixtureParameters) -> tuple[Tensor, Tensor]:
    """The mean log-likelihood per point (a 0-d tensor) and the responsibilities (N, K)."""
    log_probs = component_log_probs(x, parameters)
    log_norm = torch.logsumexp(log_probs, 1)
    return log_norm.mean(), (log_probs - log_norm[:, None]).exp()


def kmeans_start(x: Tensor, n_components: int, covariance: str, generator: torch.Generator,
                 reg_covar: float = REG_COVAR) -> MixtureParameters:
    """The first parameters: an M-step on the clusters of k-means (k-means++ seeded)."""
    labels = kmeans(x, kmeans_plusplus(x, n_components, generator))
    resp = torch.nn.functional.one_hot(labels, n_components).to(x.dtype)
    return m_step(x, resp, covariance, reg_covar)


def expectation_maximisation(x: Tensor, start: MixtureParameters, covariance: str, tol: float = 1e-3,
                             max_iter: int = 100, reg_covar: float = REG_COVAR) -> EMFit:
    """EM from `start` over all points x (N, D); converged when the mean log-likelihood per point
    changes by less than `tol` from one iteration to the next (as scikit-learn)."""
    parameters, log_likelihoods, converged = start, [], False
    for _ in range(max_iter):
        log_likelihood, resp = e_step(x, parameters)  # of the parameters before this M-step
        parameters = m_step(x, resp, covariance, reg_covar)
        log_likelihoods.append(float(log_likelihood))  # one host sync per iteration
        if len(log_likelihoods) > 1 and abs(log_likelihoods[-1] - log_likelihoods[-2]) < tol:
            converged = True
            break
    log_likelihoods.append(float(e_step(x, parameters)[0]))  # of the parameters returned
    return EMFit(parameters, log_likelihoods, converged)


def fit_mixture(x: Tensor, n_components: int, covariance: str = "full", tol: float = 1e-3, max_iter: int = 100,
                generator: torch.Generator | None = None, reg_covar: float = REG_COVAR) -> EMFit:
    """A K-component mixture fitted to the points x (N, D) by EM from a k-means start, in float64 on x's
    device."""
    x = x.flatten(1).to(torch.float64)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    start = kmeans_start(x, n_components, covariance, generator, reg_covar)
    return expectation_maximisation(x, start, covariance, tol, max_iter, reg_covar)
