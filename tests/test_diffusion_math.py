"""The diffusion model's mathematics apart from training: the forward process, the posterior, the
three prediction targets, the samplers and the variational bound, checked against closed forms."""

import math

import pytest
import torch

from genexp.models.diffusion_bound import diffusion_kl, prior_kl, variational_bound
from genexp.models.diffusion_sampling import ancestral_step, ddim_step, reverse_diffusion
from genexp.models.noise_schedule import (CosineSchedule, DiscreteSchedule, LinearSchedule, OffsetCosineSchedule)

SCHEDULES = {"linear": LinearSchedule, "cosine": CosineSchedule, "offset_cosine": OffsetCosineSchedule}


def test_closed_form_forward_process_matches_iterating_single_steps():
    """q(x_t | x_0) in one step has the mean and variance of x_0 noised step by step through q(x_k | x_{k-1})."""
    schedule = LinearSchedule(steps=200, beta_start=1e-3, beta_end=0.05)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5, 0.0]).expand(40000, 3)
    x = x0.clone()
    for k in range(1, 121):
        abar_k, abar_prev = schedule.table[k], schedule.table[k - 1]
        beta = float(1 - abar_k / abar_prev)
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=generator)
    t = torch.full((len(x0),), 120 / 200)
    direct = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), t)
    abar = float(schedule.table[120])
    expected_mean, expected_var = math.sqrt(abar) * x0[0], 1 - abar
    for samples in (x, direct):
        assert torch.allclose(samples.mean(0), expected_mean, atol=0.02)
        assert torch.allclose(samples.var(0), torch.full((3,), expected_var), rtol=0.03)


def test_continuous_forward_process_composes_over_any_two_times():
    """On the continuous schedule q(x_t | x_s) q(x_s | x_0) is q(x_t | x_0)."""
    schedule = OffsetCosineSchedule()
    generator = torch.Generator().manual_seed(1)
    x0 = torch.full((40000, 2), 0.8)
    s, t = torch.full((len(x0),), 0.3), torch.full((len(x0),), 0.7)
    x_s = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), s)
    ratio = schedule.alpha_bar(t[:1]) / schedule.alpha_bar(s[:1])
    x_t = ratio.sqrt() * x_s + (1 - ratio).sqrt() * torch.randn(x0.shape, generator=generator)
    abar_t = schedule.alpha_bar(t[:1])
    assert torch.allclose(x_t.mean(0), abar_t.sqrt() * 0.8, atol=0.01)
    assert torch.allclose(x_t.var(0), (1 - abar_t).expand(2), rtol=0.03)


def test_posterior_matches_a_hand_computed_case():
    # betas 0.1, 0.2: abar_1 = 0.9, abar_2 = 0.72; q(x_1 | x_2, x_0) = N(c0 x_0 + c2 x_2, beta~ I) with
    # c0 = sqrt(0.9) 0.2 / 0.28, c2 = sqrt(0.8) 0.1 / 0.28, beta~ = 0.1 / 0.28 * 0.2 (Ho et al. 2020, eq. 7).
    schedule = DiscreteSchedule(torch.tensor([0.1, 0.2]))
    x0, x2 = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 0.25]])
    mean, variance = schedule.posterior(x0, x2, torch.tensor([1.0]), torch.tensor([0.5]))
    c0, c2 = 0.6776309271789384, 0.31943828249996997
    assert torch.allclose(mean, c0 * x0 + c2 * x2, atol=1e-6)
    assert float(variance) == pytest.approx(0.07142857142857142, rel=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_predictions_convert_to_x0_and_eps_and_back(prediction, name):
    schedule = SCHEDULES[name]()
    generator = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(64, 3, generator=generator), torch.randn(64, 3, generator=generator)
    t = torch.rand(64, generator=generator).clamp(0.01, 0.99)
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.target(x0, noise, t, prediction)
    got_x0, got_eps = schedule.to_x0_eps(target, x_t, t, prediction)
    assert torch.allclose(got_x0, x0, atol=1e-4) and torch.allclose(got_eps, noise, atol=1e-4)
    assert torch.allclose(schedule.target(got_x0, got_eps, t, prediction), target, atol=1e-4)


def zero_predictor(schedule):
    """A predictor of x0 = 0 (and the eps consistent with it)."""
    def predict(x, t):
        return torch.zeros_like(x), schedule.to_x0_eps(torch.zeros_like(x), x, t, "x0")[1]
    return predict


def test_ddim_without_noise_is_deterministic_given_the_starting_noise():
    schedule = CosineSchedule(steps=100)
    x1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    predict = gaussian_oracle(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]), schedule)
    a = reverse_diffusion(schedule, predict, x1, 20, "ddim", 0.0, torch.Generator().manual_seed(4))[0]
    b = reverse_diffusion(schedule, predict, x1, 20, "ddim", 0.0, torch.Generator().manual_seed(5))[0]
    c = reverse_diffusion(schedule, predict, x1, 20, "ddim", 1.0, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_with_eta_one_over_all_steps_is_the_ancestral_sampler(name):
    """Each DDIM step with eta = 1 over consecutive steps draws from the posterior: the same mean and
    variance as DDPM's ancestral step (checked with the same noise draws)."""
    schedule = SCHEDULES[name](steps=50)
    times = schedule.sampling_times(50)
    generator = torch.Generator().manual_seed(6)
    x0 = torch.randn(8, 3, generator=generator)
    for i in range(len(times) - 2):
        t, s = times[i].expand(8), times[i + 1].expand(8)
        x_t = schedule.add_noise(x0, torch.randn(8, 3, generator=generator), t)
        eps = schedule.to_x0_eps(x0, x_t, t, "x0")[1]
        ddim = ddim_step(schedule, x_t, x0, eps, t, s, 1.0, torch.Generator().manual_seed(i))
        ddpm = ancestral_step(schedule, x_t, x0, t, s, torch.Generator().manual_seed(i))
        assert torch.allclose(ddim, ddpm, atol=1e-5), i


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_bounds_prior_term_is_about_zero_under_the_default_schedules(name):
    x = torch.rand(16, 1, 8, 8) * 2 - 1  # images in [-1, 1]
    kl_per_dim = prior_kl(SCHEDULES[name](), x) / 64
    assert (kl_per_dim >= 0).all() and (kl_per_dim < 2e-3).all()


def gaussian_oracle(mean, covariance, schedule):
    """The exact (x0^, eps^) of data N(mean, covariance): E[eps | x_t] = sqrt(1 - abar) S^-1 (x_t - sqrt(abar) m),
    S = abar C + (1 - abar) I the covariance of x_t."""
    def predict(x, t):
        abar = schedule.alpha_bar(t[:1]).double()
        cov_t = abar * covariance.double() + (1 - abar) * torch.eye(len(mean), dtype=torch.float64)
        centred = x.double() - abar.sqrt() * mean.double()
        eps = (1 - abar).sqrt() * torch.linalg.solve(cov_t, centred.T).T
        x0 = (x.double() - (1 - abar).sqrt() * eps) / abar.sqrt()
        return x0.float(), eps.float()
    return predict


@pytest.mark.parametrize(("name", "sampler", "steps"), [("linear", "ddpm", 1000), ("cosine", "ddim", 100),
                                                        ("offset_cosine", "ddim", 100)])
def test_samplers_with_the_true_noise_predictor_reproduce_a_gaussian(name, sampler, steps):
    schedule = SCHEDULES[name]()
    mean = torch.tensor([1.0, -0.5])
    covariance = torch.tensor([[0.6, 0.25], [0.25, 0.3]])
    generator = torch.Generator().manual_seed(7)
    x1 = torch.randn(20000, 2, generator=generator)
    samples = reverse_diffusion(schedule, gaussian_oracle(mean, covariance, schedule), x1, steps, sampler, 0.0,
                                generator)[0]
    # The last step returns x0^ = E[x_0 | x_{t=0}]: the data's covariance when abar(0) = 1 (discrete
    # schedules); on the book's schedule (abar(0) = 0.95^2) that of the denoised mean, a C S^-1 C, S = a C + (1 - a) I.
    a = schedule.alpha_bar(torch.zeros(1))
    expected = a * covariance @ torch.linalg.solve(a * covariance + (1 - a) * torch.eye(2), covariance)
    assert torch.allclose(samples.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(samples.T), expected, atol=0.02)
    if name != "offset_cosine":
        assert torch.allclose(expected, covariance)


def test_the_stratified_bound_is_the_exact_sum_with_one_stratum_per_step():
    schedule = LinearSchedule(steps=20, beta_start=1e-3, beta_end=0.2)
    predict = zero_predictor(schedule)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(8))
    stratified = diffusion_kl(schedule, predict, x, samples=19, generator=torch.Generator().manual_seed(9))
    # The same sum, step by step (the same noise: one draw of k, then of the noise, per stratum).
    generator, exact = torch.Generator().manual_seed(9), torch.zeros(4)
    for k in range(2, 21):
        torch.randint(k, k + 1, (4,), generator=generator)
        t, s = torch.full((4,), k / 20), torch.full((4,), (k - 1) / 20)
        z = schedule.add_noise(x, torch.randn(x.shape, generator=generator), t)
        mean_q, variance = schedule.posterior(x, z, t, s)
        mean_p, _ = schedule.posterior(predict(z, t)[0], z, t, s)
        exact += ((mean_q - mean_p) ** 2 / (2 * variance)).sum(1)
    assert torch.allclose(stratified, exact, rtol=1e-5)


def expected_bound(schedule, mean, covariance):
    """E[bound] in closed form for data N(mean, C) and its exact denoiser: E||x - E[x | z_k]||^2 is the trace
    of the posterior covariance P_k = C - abar_k C S_k^-1 C, S_k = abar_k C + (1 - abar_k) I."""
    d, steps = len(mean), schedule.steps
    abar = schedule.table.double()
    C, eye = covariance.double(), torch.eye(len(mean), dtype=torch.float64)

    def trace_posterior(k):
        return float(torch.trace(C - abar[k] * C @ torch.linalg.solve(abar[k] * C + (1 - abar[k]) * eye, C)))

    second_moment = mean.double() ** 2 + torch.diagonal(C)
    prior = float(0.5 * (abar[steps] * second_moment - abar[steps] - torch.log1p(-abar[steps])).sum())
    variance = (1 - abar[1]) / abar[1]
    decoder = float(0.5 * d * torch.log(2 * math.pi * variance) + trace_posterior(1) / (2 * variance))
    diffusion = 0.0
    for k in range(2, steps + 1):
        alpha = abar[k] / abar[k - 1]
        coef = abar[k - 1].sqrt() * (1 - alpha) / (1 - abar[k])
        posterior_variance = (1 - alpha) * (1 - abar[k - 1]) / (1 - abar[k])
        diffusion += float(coef**2 * trace_posterior(k) / (2 * posterior_variance))
    return prior + diffusion + decoder


def test_the_bound_of_the_true_predictor_has_its_closed_form_value_above_the_entropy():
    """For Gaussian data and its exact denoiser, the estimate (16 strata) matches the expected bound in
    closed form, and that is above the data's entropy: fixed posterior variances cost about 0.9 nats here."""
    schedule = LinearSchedule()
    mean, covariance = torch.tensor([0.5, -0.2]), torch.tensor([[0.4, 0.1], [0.1, 0.2]])
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(11))
    x = mean + noise @ torch.linalg.cholesky(covariance).T
    estimate = variational_bound(schedule, gaussian_oracle(mean, covariance, schedule), x, discrete=False, samples=16,
                                 generator=torch.Generator().manual_seed(10))["nll_bound"].mean()
    expected = expected_bound(schedule, mean, covariance)
    entropy = float(torch.distributions.MultivariateNormal(mean, covariance).entropy())
    assert float(estimate) == pytest.approx(expected, abs=0.08)
    assert entropy < expected < entropy + 1.0
