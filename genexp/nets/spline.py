"""Monotone rational-quadratic splines with linear tails (Durkan et al. 2019, after Gregory &
Delbourgo 1982): the elementwise map of neural spline flows.

On [-B, B] the spline has K bins. Bin k runs from knot (x_k, y_k) to (x_k+1, y_k+1), with width
w_k, height h_k, slope s_k = h_k / w_k and derivatives d_k, d_k+1 at its ends. With
xi = (x - x_k) / w_k in [0, 1]:

    y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_k+1 + d_k - 2 s_k) xi (1 - xi))
    dy/dx = s_k^2 (d_k+1 xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2) / (s_k + (d_k+1 + d_k - 2 s_k) xi (1 - xi))^2

Positive widths, heights and derivatives make it strictly monotone, and the inverse solves a
quadratic in xi in closed form (Durkan et al. 2019, eq. 6-8). Outside [-B, B] the map is the
identity, and the derivatives at -B and B are 1, so the derivative is continuous everywhere.

The parameters are unconstrained: K widths and K heights (a softmax, with a floor, spreads them
over [-B, B]) and K - 1 interior derivatives (a softplus, with a floor). All zeros give the
identity map, so a flow whose conditioners start at zero starts as the identity.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN_WIDTH = 1e-3  # a fraction of 2B: no bin collapses
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(0 + shift) + MIN_DERIVATIVE = 1: a zero parameter is a derivative of 1.
_DERIVATIVE_SHIFT = math.log(math.expm1(1 - MIN_DERIVATIVE))


def n_params(bins: int) -> int:
    """Unconstrained parameters per dimension: K widths, K heights, K - 1 interior derivatives."""
    return 3 * bins - 1


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Knot positions (..., K + 1) from -B to B, and bin sizes (..., K), from unconstrained sizes."""
    bins = unnormalized.shape[-1]
    fractions = min_size + (1 - min_size * bins) * torch.softmax(unnormalized, dim=-1)
    inner = -bound + 2 * bound * torch.cumsum(fractions, dim=-1)[..., :-1]
    ends = inner.new_full((*inner.shape[:-1], 1), bound)
    knots = torch.cat([-ends, inner, ends], dim=-1)  # the ends exactly at -B and B
    return knots, knots[..., 1:] - knots[..., :-1]


def _derivatives(unnormalized: Tensor) -> Tensor:
    """Derivatives at all K + 1 knots (..., K + 1): 1 at -B and B (matching the identity tails)."""
    inner = MIN_DERIVATIVE + F.softplus(unnormalized + _DERIVATIVE_SHIFT)
    return F.pad(inner, (1, 1), value=1.0)


def rational_quadratic_spline(x: Tensor, params: Tensor, bound: float,
                              inverse: bool = False) -> tuple[Tensor, Tensor]:
    """The spline (or its inverse) applied elementwise: (y, log|dy/dx|), both shaped like x.

    params: (*x.shape, 3K - 1), the unconstrained widths, heights and interior derivatives of each
    element's own spline (see n_params). With inverse=True, x is in the output space and the
    log-determinant is that of the inverse map, log|dx/dy| = -log|dy/dx|."""
    bins = (params.shape[-1] + 1) // 3
    x_knots, widths = _knots(params[..., :bins], bound, MIN_BIN_WIDTH)
    y_knots, heights = _knots(params[..., bins:2 * bins], bound, MIN_BIN_HEIGHT)
    derivatives = _derivatives(params[..., 2 * bins:])

    inside = (x >= -bound) & (x <= bound)
    v = x.clamp(-bound, bound)  # tails are computed on clamped values and discarded: no NaN gradients
    search = (y_knots if inverse else x_knots)[..., 1:-1].contiguous()
    k = torch.searchsorted(search, v[..., None].contiguous(), right=True)  # the bin of each element

    def pick(t: Tensor) -> Tensor:
        return t.gather(-1, k).squeeze(-1)

    x_k, y_k, w, h = pick(x_knots), pick(y_knots), pick(widths), pick(heights)
    d0, d1 = pick(derivatives[..., :-1]), pick(derivatives[..., 1:])
    s = h / w
    curvature = d1 + d0 - 2 * s
    if inverse:
        # (y - y_k) as a quadratic a xi^2 + b xi + c = 0 in xi; the root in [0, 1], written stably.
        dy = v - y_k
        a = h * (s - d0) + dy * curvature
        b = h * d0 - dy * curvature
        c = -s * dy
        xi = (2 * c / (-b - (b.pow(2) - 4 * a * c).clamp_min(0).sqrt())).clamp(0, 1)
        out = x_k + xi * w
    else:
        xi = (v - x_k) / w
        edge = xi * (1 - xi)
        out = y_k + h * (s * xi.pow(2) + d0 * edge) / (s + curvature * edge)
    edge = xi * (1 - xi)
    log_derivative = (2 * s.log() + (d1 * xi.pow(2) + 2 * s * edge + d0 * (1 - xi).pow(2)).log()
                      - 2 * (s + curvature * edge).log())
    if inverse:
        log_derivative = -log_derivative
    return torch.where(inside, out, x), torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
