"""Sampler functions (spec §1.5, §4.3–§4.4): k-diffusion's Euler, Euler a, DPM++ 2M and A1111's DDIM.

Two kinds of checks: analytic denoisers whose exact answer is known (a fixed x0; Gaussian data whose
probability-flow ODE has a closed form), and step-by-step references transcribed from the published
algorithms (k-diffusion ``sampling.py``; A1111 ``sd_samplers_timesteps_impl.ddim``).
"""

import math

import pytest
import torch

from modules.core.sampling.noise_schedule import training_alphas_cumprod
from modules.core.sampling.sampler_functions import (
    ddim_timesteps,
    sample_ddim,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
)

SHAPE = (2, 4, 8, 8)
DATA_STD = 0.5


def karras_sigmas(n, sigma_min=0.0292, sigma_max=14.6146, rho=7.0):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def randn(seed, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class CountingNoise:
    """A fake noise source: a fresh deterministic tensor per ``next()`` call, counted."""

    def __init__(self, seed=100, shape=SHAPE, dtype=torch.float64):
        self.generator = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.dtype = dtype
        self.calls = 0

    def next(self):
        self.calls += 1
        return torch.randn(self.shape, generator=self.generator, dtype=self.dtype)


class NoNoise:
    def next(self):
        raise AssertionError("this sampler must not draw noise here")


class Recorder:
    def __init__(self):
        self.steps = []
        self.denoised = []

    def __call__(self, step, x, denoised):
        self.steps.append(step)
        self.denoised.append(denoised.clone())


def bcast(sigma, x):
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    return sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma


def fixed_x0(x0):
    def denoise(x, sigma):
        assert tuple(torch.as_tensor(sigma).shape) in ((), (x.shape[0],))
        return x0.clone()

    return denoise


def gaussian_denoiser(x, sigma):
    """The exact denoiser for data ~ N(0, DATA_STD²): D(x, σ) = x·s²/(s²+σ²)."""
    s = bcast(sigma, x)
    return x * DATA_STD ** 2 / (DATA_STD ** 2 + s ** 2)


def gaussian_ode_solution(x_start, sigma_start):
    """The probability-flow ODE for Gaussian data maps x(σ0) to x(0) = x(σ0)·s/sqrt(s²+σ0²)."""
    return x_start * DATA_STD / math.sqrt(DATA_STD ** 2 + sigma_start ** 2)


# ---------------------------------------------------------------- k-diffusion references


def ref_euler(denoise, x, sigmas, noise, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = noise.next() * s_noise  # k-diffusion draws on every step, used or not
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        denoised = denoise(x, sigma_hat * x.new_ones([x.shape[0]]))
        x = x + (x - denoised) / sigma_hat * (sigmas[i + 1] - sigma_hat)
    return x


def ref_euler_ancestral(denoise, x, sigmas, noise, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * x.new_ones([x.shape[0]]))
        s_from, s_to = sigmas[i], sigmas[i + 1]
        sigma_up = min(s_to, eta * (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5)
        sigma_down = (s_to ** 2 - sigma_up ** 2) ** 0.5
        x = x + (x - denoised) / s_from * (sigma_down - s_from)
        if s_to > 0:
            x = x + noise.next() * s_noise * sigma_up
    return x


def ref_dpmpp_2m(denoise, x, sigmas):
    def t_fn(s):
        return -torch.log(s)

    old = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * x.new_ones([x.shape[0]]))
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * denoised
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old = denoised
    return x


# ---------------------------------------------------------------- Euler


def test_euler_lands_on_a_fixed_x0():
    x0 = randn(1)
    sigmas = karras_sigmas(12)
    x = randn(2) * sigmas[0]
    out = sample_euler(fixed_x0(x0), x, sigmas, CountingNoise(), lambda *a: None)
    torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)


def test_euler_callback_once_per_step_with_increasing_index():
    x0 = randn(1)
    sigmas = karras_sigmas(9)
    rec = Recorder()
    sample_euler(fixed_x0(x0), randn(2) * sigmas[0], sigmas, CountingNoise(), rec)
    assert rec.steps == list(range(9))
    for denoised in rec.denoised:
        torch.testing.assert_close(denoised, x0)


def test_euler_matches_k_diffusion_and_converges_to_the_ode_solution():
    sigmas = karras_sigmas(30)
    x = randn(3) * sigmas[0]
    out = sample_euler(gaussian_denoiser, x, sigmas, CountingNoise(), lambda *a: None)
    torch.testing.assert_close(out, ref_euler(gaussian_denoiser, x, sigmas, CountingNoise()), rtol=1e-6, atol=1e-7)
    exact = gaussian_ode_solution(x, float(sigmas[0]))
    assert (out - exact).abs().max() < 0.1 * exact.abs().max()  # first order: ~6% at 30 steps


def test_euler_error_shrinks_with_more_steps():
    x = randn(3) * 14.6146
    exact = gaussian_ode_solution(x, 14.6146)
    errors = [
        (sample_euler(gaussian_denoiser, x, karras_sigmas(n), CountingNoise(), lambda *a: None) - exact).abs().max()
        for n in (5, 20, 80)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_euler_draws_one_noise_per_step_even_without_churn():
    """k-diffusion's sample_euler draws its churn noise on every step, used or not, so the per-image
    generators advance once per step; without churn the result is the plain Euler ODE step."""
    sigmas = karras_sigmas(10)
    x = randn(3) * sigmas[0]
    noise = CountingNoise()
    out = sample_euler(gaussian_denoiser, x, sigmas, noise, lambda *a: None, s_churn=0.0)
    assert noise.calls == 10
    expected = ref_euler(gaussian_denoiser, x, sigmas, CountingNoise(), s_churn=0.0)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


def test_euler_s_churn_draws_noise_inside_the_tmin_tmax_window():
    sigmas = karras_sigmas(10)
    x = randn(3) * sigmas[0]
    noise = CountingNoise()
    out = sample_euler(gaussian_denoiser, x, sigmas, noise, lambda *a: None, s_churn=1.0, s_tmax=1.0, s_noise=1.003)
    in_window = int(((sigmas[:-1] >= 0.0) & (sigmas[:-1] <= 1.0)).sum())
    assert 0 < in_window < 10
    assert noise.calls == 10
    unchurned = ref_euler(gaussian_denoiser, x, sigmas, CountingNoise(), s_churn=0.0)
    assert not torch.allclose(out, unchurned)
    expected = ref_euler(gaussian_denoiser, x, sigmas, CountingNoise(), s_churn=1.0, s_tmax=1.0, s_noise=1.003)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- Euler a


def test_euler_ancestral_draws_one_noise_per_step_except_the_last():
    sigmas = karras_sigmas(10)
    noise = CountingNoise()
    rec = Recorder()
    sample_euler_ancestral(gaussian_denoiser, randn(3) * sigmas[0], sigmas, noise, rec)
    assert noise.calls == 9
    assert rec.steps == list(range(10))


def test_euler_ancestral_matches_k_diffusion():
    sigmas = karras_sigmas(10)
    x = randn(3) * sigmas[0]
    out = sample_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(7), lambda *a: None)
    expected = ref_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(7))
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


def test_euler_ancestral_eta_and_s_noise_options():
    sigmas = karras_sigmas(8)
    x = randn(3) * sigmas[0]
    out = sample_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(7), lambda *a: None, eta=0.6, s_noise=0.9)
    expected = ref_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(7), eta=0.6, s_noise=0.9)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


def test_euler_ancestral_lands_on_a_fixed_x0_whatever_the_noise():
    x0 = randn(1)
    sigmas = karras_sigmas(10)
    out = sample_euler_ancestral(fixed_x0(x0), randn(2) * sigmas[0], sigmas, CountingNoise(), lambda *a: None)
    torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)


def test_euler_ancestral_with_eta_0_is_euler():
    sigmas = karras_sigmas(10)
    x = randn(3) * sigmas[0]
    euler = sample_euler(gaussian_denoiser, x, sigmas, CountingNoise(), lambda *a: None)
    a1 = sample_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(1), lambda *a: None, eta=0.0)
    a2 = sample_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(2), lambda *a: None, eta=0.0)
    torch.testing.assert_close(a1, euler, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a2, euler, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- DPM++ 2M


def test_dpmpp_2m_lands_on_a_fixed_x0():
    x0 = randn(1)
    sigmas = karras_sigmas(10)
    rec = Recorder()
    out = sample_dpmpp_2m(fixed_x0(x0), randn(2) * sigmas[0], sigmas, NoNoise(), rec)
    torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)
    assert rec.steps == list(range(10))


def test_dpmpp_2m_matches_k_diffusion():
    sigmas = karras_sigmas(12)
    x = randn(3) * sigmas[0]
    out = sample_dpmpp_2m(gaussian_denoiser, x, sigmas, NoNoise(), lambda *a: None)
    torch.testing.assert_close(out, ref_dpmpp_2m(gaussian_denoiser, x, sigmas), rtol=1e-6, atol=1e-7)


def test_dpmpp_2m_is_more_accurate_than_euler():
    # second order vs first order on the same schedule, against the closed-form ODE solution
    sigmas = karras_sigmas(10)
    x = randn(3) * sigmas[0]
    exact = gaussian_ode_solution(x, float(sigmas[0]))
    euler = sample_euler(gaussian_denoiser, x, sigmas, CountingNoise(), lambda *a: None)
    dpm = sample_dpmpp_2m(gaussian_denoiser, x, sigmas, NoNoise(), lambda *a: None)
    assert (dpm - exact).abs().max() < 0.5 * (euler - exact).abs().max()


def test_samplers_work_in_float32_with_float32_sigmas():
    sigmas = karras_sigmas(6).float()
    x = (randn(3) * sigmas[0]).float()
    for sampler in (sample_euler, sample_dpmpp_2m):
        out = sampler(gaussian_denoiser, x, sigmas, CountingNoise(dtype=torch.float32), lambda *a: None)
        assert out.dtype == torch.float32 and out.shape == x.shape
    out = sample_euler_ancestral(gaussian_denoiser, x, sigmas, CountingNoise(dtype=torch.float32), lambda *a: None)
    assert out.dtype == torch.float32


# ---------------------------------------------------------------- DDIM


@pytest.mark.parametrize(
    "steps,expected",
    [
        (20, list(range(1, 1000, 50))),
        (10, list(range(1, 1000, 100))),
        (3, [1, 334, 667, 999]),  # 1000 // 3 = 333: 0, 333, 666, 999 → +1 → clipped to 999
        (1000, list(range(1, 1000)) + [999]),
    ],
)
def test_ddim_timesteps(steps, expected):
    assert [int(t) for t in ddim_timesteps(steps)] == expected


@pytest.fixture(scope="module")
def alphas_cumprod():
    return training_alphas_cumprod(0.00085, 0.012, 1000)


def exact_eps_denoiser(x0, alphas_cumprod, calls):
    """Returns the ε that is exactly consistent with data x0 at timestep t."""

    def denoise(x, t):
        t = torch.as_tensor(t)
        value = float(t.reshape(-1)[0])
        assert value == int(value)
        calls.append(int(value))
        a = float(alphas_cumprod[int(value)])
        return (x - math.sqrt(a) * x0) / math.sqrt(1 - a)

    return denoise


def test_ddim_model_calls_and_end_point(alphas_cumprod):
    # A1111 runs len(timesteps)-1 model calls (timesteps[-1] … timesteps[1]) and stops at ᾱ of timesteps[0]
    steps = 20
    timesteps = ddim_timesteps(steps)
    x0, eps = randn(1), randn(2)
    a_start = float(alphas_cumprod[int(timesteps[-1])])
    x = math.sqrt(a_start) * x0 + math.sqrt(1 - a_start) * eps
    calls = []
    rec = Recorder()
    noise = CountingNoise()  # eta 0: any noise drawn is multiplied by σ_t = 0
    out = sample_ddim(exact_eps_denoiser(x0, alphas_cumprod, calls), x, timesteps, alphas_cumprod, noise, rec)
    assert calls == [int(t) for t in timesteps.flip(0)[:-1]]
    assert rec.steps == list(range(len(timesteps) - 1))
    for denoised in rec.denoised:  # the callback's "denoised" is pred_x0
        torch.testing.assert_close(denoised, x0, rtol=1e-5, atol=1e-5)
    a_end = float(alphas_cumprod[int(timesteps[0])])
    torch.testing.assert_close(out, math.sqrt(a_end) * x0 + math.sqrt(1 - a_end) * eps, rtol=1e-5, atol=1e-5)


def ref_ddim(denoise_eps, x, timesteps, alphas_cumprod, noise, eta):
    ac = alphas_cumprod.to(torch.float64)
    alphas = ac[timesteps]
    alphas_prev = ac[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = denoise_eps(x, float(timesteps[index]) * x.new_ones([x.shape[0]]))
        a_t, a_prev, sigma_t = float(alphas[index]), float(alphas_prev[index]), float(sigmas[index])
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        dir_xt = math.sqrt(1.0 - a_prev - sigma_t ** 2) * e_t
        x = math.sqrt(a_prev) * pred_x0 + dir_xt + sigma_t * noise.next()
    return x


def eps_model(x, t):
    """A smooth, non-trivial ε-predictor."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return torch.tanh(x) * (0.5 + t / 2000)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_a1111(alphas_cumprod, eta):
    timesteps = ddim_timesteps(10)
    x = randn(3)
    out = sample_ddim(eps_model, x, timesteps, alphas_cumprod, CountingNoise(5), lambda *a: None, eta=eta)
    expected = ref_ddim(eps_model, x, timesteps, alphas_cumprod, CountingNoise(5), eta)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_ddim_eta_draws_one_noise_per_model_call(alphas_cumprod):
    timesteps = ddim_timesteps(10)
    noise = CountingNoise()
    sample_ddim(eps_model, randn(3), timesteps, alphas_cumprod, noise, lambda *a: None, eta=0.5)
    assert noise.calls == len(timesteps) - 1


def test_ddim_eta_0_does_not_depend_on_the_noise(alphas_cumprod):
    timesteps = ddim_timesteps(10)
    x = randn(3)
    a = sample_ddim(eps_model, x, timesteps, alphas_cumprod, CountingNoise(1), lambda *a: None, eta=0.0)
    b = sample_ddim(eps_model, x, timesteps, alphas_cumprod, CountingNoise(2), lambda *a: None, eta=0.0)
    torch.testing.assert_close(a, b)
    c = sample_ddim(eps_model, x, timesteps, alphas_cumprod, CountingNoise(1), lambda *a: None, eta=0.5)
    assert not torch.allclose(a, c)
