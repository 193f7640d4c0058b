"""The rational-quadratic spline of neural spline flows: exact inverse, exact log-determinant,
monotone, continuously differentiable at its knots, the identity outside [-B, B]."""

import pytest
import torch
from torch.autograd.functional import jacobian

from genexp.nets.spline import _knots, n_params, rational_quadratic_spline

BOUND = 3.0
BINS = 6


def random_params(n: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    """n splines far from the identity: unequal bins, derivatives from ~0.1 to ~7."""
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, n_params(BINS), generator=generator, dtype=torch.float64)


def spline(x: torch.Tensor, params: torch.Tensor, inverse: bool = False):
    return rational_quadratic_spline(x, params, BOUND, inverse)


def test_inverse_undoes_the_spline_inside_and_outside_the_bound():
    x = torch.linspace(-1.5 * BOUND, 1.5 * BOUND, 301, dtype=torch.float64)
    params = random_params(len(x))
    y, logdet = spline(x, params)
    x_back, inverse_logdet = spline(y, params, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(inverse_logdet, -logdet, rtol=0, atol=1e-5)
    assert (y - x).abs().max() > 0.5  # the splines are far from the identity: the round trip means something
    # float32, as flows train, with milder splines: an error of one float32 step in y is one in x divided
    # by the slope, which the splines above take down to ~1e-6 (in float64 the round trip is exact to ~1e-10).
    mild = random_params(len(x), seed=4, scale=0.5).float()
    y32, _ = spline(x.float(), mild)
    torch.testing.assert_close(spline(y32, mild, inverse=True)[0], x.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
def test_log_determinant_matches_brute_force_jacobian(inverse):
    x = torch.linspace(-1.2 * BOUND, 1.2 * BOUND, 40, dtype=torch.float64)
    params = random_params(len(x), seed=1)
    J = jacobian(lambda v: spline(v, params, inverse)[0], x)
    _, logdet = spline(x, params, inverse)
    # Elementwise: a diagonal Jacobian whose log-diagonal is the log-determinant of each element.
    torch.testing.assert_close(J - torch.diag(J.diagonal()), torch.zeros_like(J))
    torch.testing.assert_close(J.diagonal().log(), logdet, rtol=0, atol=1e-8)


def test_monotone_and_onto_the_bound():
    x = torch.linspace(-BOUND, BOUND, 5001, dtype=torch.float64)
    for seed in range(5):
        params = random_params(1, seed=seed).expand(len(x), -1)
        y, _ = spline(x, params)
        assert torch.all(y[1:] > y[:-1]), seed
        torch.testing.assert_close(y[[0, -1]], torch.tensor([-BOUND, BOUND], dtype=torch.float64))


def test_derivative_is_continuous_at_every_knot():
    params = random_params(1, seed=2)
    knots, _ = _knots(params[0, :BINS], BOUND, 1e-3)  # the x-knots, -B and B included
    h = 1e-8  # float64: truncation error ~h f'', rounding ~1e-16 / h
    slopes = []
    for knot in knots.tolist():
        points = torch.tensor([knot - h, knot, knot + h], dtype=torch.float64)
        y, logdet = spline(points, params.expand(3, -1))
        left, right = (y[1] - y[0]).item() / h, (y[2] - y[1]).item() / h
        assert left == pytest.approx(right, rel=1e-4), knot
        assert logdet[1].exp().item() == pytest.approx(right, rel=1e-4), knot
        slopes.append(right)
    # meets the identity tails
    assert slopes[0] == pytest.approx(1.0, rel=1e-4) and slopes[-1] == pytest.approx(1.0, rel=1e-4)
    assert max(slopes) / min(slopes) > 2  # and the interior knots have derivatives of their own


def test_identity_outside_the_tail_bound_with_finite_gradients():
    x = torch.tensor([-10.0, -BOUND - 1e-3, BOUND + 1e-3, 7.0], dtype=torch.float64)
    params = random_params(len(x), seed=3).requires_grad_()
    for inverse in (False, True):
        y, logdet = spline(x, params, inverse)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros_like(x))
        (grad,) = torch.autograd.grad(y.sum() + logdet.sum(), params)
        assert torch.equal(grad, torch.zeros_like(grad))  # no NaN leaking from the unused branch


def test_zero_parameters_are_the_identity():
    x = torch.linspace(-2 * BOUND, 2 * BOUND, 101)
    y, logdet = spline(x, torch.zeros(len(x), n_params(BINS)))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros_like(x))
