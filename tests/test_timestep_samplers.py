"""A1111's PLMS, DDIM CFG++ and UniPC samplers and the Beta schedule (spec §1.5, §9.2).

Analytic noise predictors give exact answers: a fixed x0 (every sampler must land on the known end
state), and Gaussian data N(μ, s²), whose probability-flow ODE has the closed-form solution
x_t = α_t·μ + √(α_t²s² + σ_t²)·z. PLMS and DDIM CFG++ are also checked step by step against float64
transcriptions of the published algorithms; UniPC against values from a line-by-line transcription
of A1111's ``modules/models/diffusion/uni_pc/uni_pc.py`` (float32, CPU).
"""

import math

import numpy as np
import pytest
import torch

from modules.core.sampling.beta_schedule import beta
from modules.core.sampling.noise_schedule import DiscreteSchedule, training_alphas_cumprod
from modules.core.sampling.sampler_functions import ddim_timesteps, sample_ddim
from modules.core.sampling.samplers import SamplerInfo
from modules.core.sampling.timestep_samplers import (
    TIMESTEP_SAMPLERS,
    UNIPC_SETTING_KWARGS,
    sample_ddim_cfgpp,
    sample_plms,
    sample_unipc,
)

SHAPE = (2, 4, 4, 4)
MU, S = 0.3, 0.5  # Gaussian data


@pytest.fixture(scope="module")
def alphas_cumprod():
    return training_alphas_cumprod(0.00085, 0.012, 1000)


def randn(seed, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class CountingNoise:
    def __init__(self, seed=100):
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def next(self):
        self.calls += 1
        return torch.randn(SHAPE, generator=self.generator, dtype=torch.float64)


class Recorder:
    def __init__(self):
        self.steps, self.x, self.denoised = [], [], []

    def __call__(self, step, x, denoised):
        self.steps.append(step)
        self.x.append(x.clone())
        self.denoised.append(denoised.clone())


def ignore(*args):
    pass


class EpsModel:
    """ε-predictor over the model's own schedule. A timestep t may be fractional (UniPC): ᾱ is then
    interpolated log-linearly between training steps, as UniPC's discrete VP schedule does.
    ``x0_of(x, ᾱ)`` is the data prediction. Records every call's t; ``last_uncond`` is its ε."""

    def __init__(self, alphas_cumprod, x0_of):
        self.log_ac = np.log(alphas_cumprod.double().numpy())
        self.x0_of = x0_of
        self.calls = []
        self.last_uncond = None

    def alpha_bar(self, t, x):
        values = np.exp(np.interp(torch.as_tensor(t).double().numpy(), np.arange(len(self.log_ac)), self.log_ac))
        return torch.from_numpy(values).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    def __call__(self, x, t):
        t = torch.as_tensor(t)
        assert t.shape == (x.shape[0],)
        self.calls.append(float(t[0]))
        a = self.alpha_bar(t, x)
        eps = (x - a.sqrt() * self.x0_of(x, a)) / (1 - a).sqrt()
        self.last_uncond = eps
        return eps


def fixed_x0_model(alphas_cumprod, x0):
    return EpsModel(alphas_cumprod, lambda x, a: x0)


def gaussian_model(alphas_cumprod):
    """The exact posterior mean for data ~ N(MU, S²): E[x0 | x_t] = μ + α s²/(α²s² + σ²)·(x − αμ)."""
    return EpsModel(alphas_cumprod, lambda x, a: MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x - a.sqrt() * MU))


def gaussian_flow(x, a_from, a_to):
    """Closed-form probability-flow ODE solution for Gaussian data, from ᾱ = a_from to ᾱ = a_to."""
    z = (x - math.sqrt(a_from) * MU) / math.sqrt(a_from * S**2 + 1 - a_from)
    return math.sqrt(a_to) * MU + math.sqrt(a_to * S**2 + 1 - a_to) * z


def on_trajectory(x0, eps, a):
    return math.sqrt(a) * x0 + math.sqrt(1 - a) * eps


def nonlinear_eps(x, t):
    """A smooth ε-predictor that is not consistent with any data (its x0 moves with x and t)."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(3 * x)


# ------------------------------------------------------------------------------------------ PLMS

def test_plms_calls_callbacks_and_end_point(alphas_cumprod):
    timesteps = ddim_timesteps(20)
    x0, eps = randn(1), randn(2)
    x = on_trajectory(x0, eps, float(alphas_cumprod[timesteps[-1]]))
    model, rec = fixed_x0_model(alphas_cumprod, x0), Recorder()
    out = sample_plms(model, x, timesteps, alphas_cumprod, None, rec)
    ts = [int(t) for t in timesteps]
    # the first step looks ahead once at the next timestep; then one call per step down to timesteps[1]
    assert model.calls == [ts[-1], ts[-2]] + ts[-2:0:-1]
    assert rec.steps == list(range(len(ts) - 1))
    for denoised in rec.denoised:
        torch.testing.assert_close(denoised, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, on_trajectory(x0, eps, float(alphas_cumprod[1])), rtol=1e-5, atol=1e-5)


def ref_plms(denoise_eps, x, timesteps, alphas_cumprod):
    """PLMS (Liu et al. 2022; CompVis ``plms.py``) in float64."""
    ac = alphas_cumprod.double()
    s_in = x.new_ones([x.shape[0]])

    def step(x, e, t, t_prev):
        a_t, a_prev = float(ac[t]), float(ac[t_prev])
        pred_x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        return math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * e

    ts = [int(t) for t in timesteps]
    history = []
    for index in range(len(ts) - 1, 0, -1):
        t, t_prev = ts[index], ts[index - 1]
        e = denoise_eps(x, t * s_in)
        if not history:
            e_prime = (e + denoise_eps(step(x, e, t, t_prev), t_prev * s_in)) / 2
        else:
            coefficients = {1: [3, -1], 2: [23, -16, 5], 3: [55, -59, 37, -9]}[len(history)]
            divisor = {1: 2, 2: 12, 3: 24}[len(history)]
            e_prime = sum(c * v for c, v in zip(coefficients, [e] + history[::-1])) / divisor
        x = step(x, e_prime, t, t_prev)
        history = (history + [e])[-3:]
    return x


def test_plms_matches_reference(alphas_cumprod):
    timesteps = ddim_timesteps(10)
    x = randn(3)
    out = sample_plms(nonlinear_eps, x, timesteps, alphas_cumprod, None, ignore)
    torch.testing.assert_close(out, ref_plms(nonlinear_eps, x, timesteps, alphas_cumprod), rtol=1e-5, atol=1e-5)


def test_plms_is_higher_order_than_ddim(alphas_cumprod):
    timesteps = ddim_timesteps(20)
    x = randn(4)
    exact = gaussian_flow(x, float(alphas_cumprod[timesteps[-1]]), float(alphas_cumprod[timesteps[0]]))
    plms = sample_plms(gaussian_model(alphas_cumprod), x, timesteps, alphas_cumprod, None, ignore)
    ddim = sample_ddim(gaussian_model(alphas_cumprod), x, timesteps, alphas_cumprod, CountingNoise(), ignore)
    plms_error, ddim_error = (plms - exact).abs().max(), (ddim - exact).abs().max()
    assert plms_error < ddim_error / 4
    assert plms_error < 0.05


# ---------------------------------------------------------------------------------- DDIM CFG++

class GuidedModel:
    """CFG over two fixed-x0 predictors, like CFGDenoiser: returns uncond + scale·(cond − uncond)
    and leaves the unconditional ε in ``last_uncond``."""

    def __init__(self, alphas_cumprod, x0_cond, x0_uncond, scale):
        self.cond = fixed_x0_model(alphas_cumprod, x0_cond)
        self.uncond = fixed_x0_model(alphas_cumprod, x0_uncond)
        self.scale = scale
        self.last_uncond = None

    def __call__(self, x, t):
        cond, uncond = self.cond(x, t), self.uncond(x, t)
        self.last_uncond = uncond
        return uncond + self.scale * (cond - uncond)


def ref_ddim_cfgpp(model, x, timesteps, alphas_cumprod, noise, eta):
    ac = alphas_cumprod.double()
    ts = [int(t) for t in timesteps]
    for index in range(len(ts) - 1, 0, -1):
        a_t, a_prev = float(ac[ts[index]]), float(ac[ts[index - 1]])
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        e = model(x, ts[index] * x.new_ones([x.shape[0]]))
        pred_x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev - sigma**2) * model.last_uncond + sigma * noise.next()
    return x


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_cfgpp_matches_reference(alphas_cumprod, eta):
    timesteps = ddim_timesteps(10)
    x0_cond, x0_uncond, x = randn(1), randn(2), randn(3)
    rec = Recorder()
    out = sample_ddim_cfgpp(GuidedModel(alphas_cumprod, x0_cond, x0_uncond, 7 / 12.5), x, timesteps,
                            alphas_cumprod, CountingNoise(5), rec, eta=eta)
    expected = ref_ddim_cfgpp(GuidedModel(alphas_cumprod, x0_cond, x0_uncond, 7 / 12.5), x, timesteps,
                              alphas_cumprod, CountingNoise(5), eta)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert rec.steps == list(range(len(timesteps) - 1))
    # the reported x0 is the guided one: uncond + scale·(cond − uncond)
    torch.testing.assert_close(rec.denoised[0], x0_uncond + 7 / 12.5 * (x0_cond - x0_uncond), rtol=1e-5, atol=1e-5)


def test_ddim_cfgpp_steps_along_the_unconditional_noise(alphas_cumprod):
    timesteps = ddim_timesteps(10)
    x0_cond, x0_uncond, eps = randn(1), randn(2), randn(3)
    x = on_trajectory(x0_uncond, eps, float(alphas_cumprod[timesteps[-1]]))
    same = GuidedModel(alphas_cumprod, x0_uncond, x0_uncond, 0.5)
    # cond == uncond: CFG++ is plain DDIM
    torch.testing.assert_close(
        sample_ddim_cfgpp(same, x, timesteps, alphas_cumprod, CountingNoise(), ignore),
        sample_ddim(same, x, timesteps, alphas_cumprod, CountingNoise(), ignore))
    # with a real guidance signal the direction term differs from DDIM's
    guided = GuidedModel(alphas_cumprod, x0_cond, x0_uncond, 0.5)
    cfgpp = sample_ddim_cfgpp(guided, x, timesteps, alphas_cumprod, CountingNoise(), ignore)
    ddim = sample_ddim(guided, x, timesteps, alphas_cumprod, CountingNoise(), ignore)
    assert not torch.allclose(cfgpp, ddim)


def test_ddim_cfgpp_draws_one_noise_per_step(alphas_cumprod):
    timesteps = ddim_timesteps(10)
    noise = CountingNoise()
    model = GuidedModel(alphas_cumprod, randn(1), randn(2), 0.5)
    sample_ddim_cfgpp(model, randn(3), timesteps, alphas_cumprod, noise, ignore, eta=0.5)
    assert noise.calls == len(timesteps) - 1


# ------------------------------------------------------------------------------------------ UniPC

@pytest.mark.parametrize("variant", ["bh1", "bh2", "vary_coeff"])
@pytest.mark.parametrize("skip_type", ["time_uniform", "time_quadratic", "logSNR"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_fixed_x0_end_point(alphas_cumprod, variant, skip_type, order):
    # UniPC runs from continuous time 1 (training step 999) to 1/N (step 0)
    x0, eps = randn(1), randn(2)
    x = on_trajectory(x0, eps, float(alphas_cumprod[999]))
    out = sample_unipc(fixed_x0_model(alphas_cumprod, x0), x, ddim_timesteps(10), alphas_cumprod, None, ignore,
                       variant=variant, skip_type=skip_type, order=order)
    torch.testing.assert_close(out, on_trajectory(x0, eps, float(alphas_cumprod[0])), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [5, 10, 30])  # 30 steps: A1111's timesteps hold 31 entries, UniPC runs 31
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_calls_and_callbacks(alphas_cumprod, steps, order):
    timesteps = ddim_timesteps(steps)
    n = len(timesteps)
    x0 = randn(1)
    model, rec = fixed_x0_model(alphas_cumprod, x0), Recorder()
    sample_unipc(model, randn(2), timesteps, alphas_cumprod, None, rec, order=order)
    # one model call per step: the first at t = 1 and a corrector call on every step but the last
    assert len(model.calls) == n
    assert model.calls[0] == pytest.approx(999.0)
    assert all(a > b for a, b in zip(model.calls, model.calls[1:]))
    assert rec.steps == list(range(n))
    for denoised in rec.denoised[:-1]:
        torch.testing.assert_close(denoised, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rec.denoised[-1], rec.x[-1])  # no prediction after the last step: x itself


def test_unipc_time_uniform_model_times(alphas_cumprod):
    model = fixed_x0_model(alphas_cumprod, randn(1))
    sample_unipc(model, randn(2), ddim_timesteps(10), alphas_cumprod, None, ignore, order=1)
    # times 1 … 0.001 evenly spaced over 10 steps, shown to the U-Net as (t − 1/1000)·1000
    expected = [999 * (1 - k / 10) for k in range(10)]
    assert model.calls == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_higher_order_is_more_accurate(alphas_cumprod, variant):
    x = randn(4)
    exact = gaussian_flow(x, float(alphas_cumprod[999]), float(alphas_cumprod[0]))
    errors = []
    for order in (1, 2, 3):
        out = sample_unipc(gaussian_model(alphas_cumprod), x, ddim_timesteps(30), alphas_cumprod, None, ignore,
                           variant=variant, skip_type="logSNR", order=order)
        errors.append(float((out - exact).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_unipc_default_converges_with_steps(alphas_cumprod):
    x = randn(4)
    exact = gaussian_flow(x, float(alphas_cumprod[999]), float(alphas_cumprod[0]))
    coarse, fine = (
        float((sample_unipc(gaussian_model(alphas_cumprod), x, ddim_timesteps(n), alphas_cumprod, None, ignore)
               - exact).abs().max())
        for n in (10, 100))
    assert fine < coarse / 10


def test_unipc_options_change_the_result(alphas_cumprod):
    x = randn(3)[:1]
    timesteps = ddim_timesteps(8)

    def run(**options):
        return sample_unipc(nonlinear_eps, x, timesteps, alphas_cumprod, None, ignore, **options)

    results = {
        "default": run(),
        "bh2": run(variant="bh2"),
        "vary_coeff": run(variant="vary_coeff"),
        "order 1": run(order=1),
        "order 2": run(order=2),
        "no lower order final": run(lower_order_final=False),
        "logSNR": run(skip_type="logSNR"),
        "time_quadratic": run(skip_type="time_quadratic"),
    }
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(results[a], results[b]), (a, b)


def test_unipc_is_deterministic(alphas_cumprod):
    x = randn(3)
    a = sample_unipc(nonlinear_eps, x, ddim_timesteps(10), alphas_cumprod, None, ignore)
    b = sample_unipc(nonlinear_eps, x, ddim_timesteps(10), alphas_cumprod, None, ignore)
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", ["bh1", "bh2", "vary_coeff"])
def test_unipc_batch_matches_single_images(alphas_cumprod, variant):
    # (A1111's vary_coeff only runs with batch size 1; ours treats every image the same)
    x = randn(3).float()
    batch = sample_unipc(nonlinear_eps, x, ddim_timesteps(10), alphas_cumprod, None, ignore, variant=variant)
    for i in range(x.shape[0]):
        single = sample_unipc(nonlinear_eps, x[i:i + 1], ddim_timesteps(10), alphas_cumprod, None, ignore,
                              variant=variant)
        torch.testing.assert_close(batch[i:i + 1], single, rtol=1e-5, atol=1e-5)


# From a line-by-line transcription of A1111 1.10's UniPC (float32, CPU): x = linspace(−2, 2, 32)
# as (1, 2, 4, 4), the ``nonlinear_eps`` model, 8 steps; elements 0, 5, 13 and 31 of the result.
A1111_UNIPC = [
    (dict(variant="bh1", skip_type="time_uniform", order=3, lower_order_final=True),
     [-15.899148941040039, -7.96595573425293, -0.13869096338748932, 15.899148941040039]),
    (dict(variant="bh2", skip_type="time_uniform", order=3, lower_order_final=True),
     [-15.913870811462402, -8.009228706359863, -0.1319034993648529, 15.913870811462402]),
    (dict(variant="vary_coeff", skip_type="time_uniform", order=3, lower_order_final=True),
     [-15.858901023864746, -7.981876373291016, -0.12632817029953003, 15.858901023864746]),
    (dict(variant="bh1", skip_type="logSNR", order=2, lower_order_final=False),
     [-17.043378829956055, -7.892016410827637, -0.17518234252929688, 17.043378829956055]),
    (dict(variant="bh2", skip_type="time_quadratic", order=1, lower_order_final=True),
     [-16.28078842163086, -8.060835838317871, -0.1166209951043129, 16.28078842163086]),
]


@pytest.mark.parametrize("options, expected", A1111_UNIPC)
def test_unipc_matches_a1111(alphas_cumprod, options, expected):
    x = torch.linspace(-2.0, 2.0, 32).reshape(1, 2, 4, 4)
    out = sample_unipc(nonlinear_eps, x, ddim_timesteps(8), alphas_cumprod, None, ignore, **options)
    assert out.flatten()[[0, 5, 13, 31]].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_unipc_img2img_starts_below_the_top(alphas_cumprod):
    timesteps = ddim_timesteps(20)[:8]  # img2img keeps the first t_enc timesteps
    model = fixed_x0_model(alphas_cumprod, randn(1))
    sample_unipc(model, randn(2), timesteps, alphas_cumprod, None, ignore, is_img2img=True)
    assert len(model.calls) == len(timesteps)
    assert model.calls[0] == pytest.approx(float(timesteps[-1]), abs=1e-3)


def test_unipc_rejects_bad_options(alphas_cumprod):
    timesteps = ddim_timesteps(2)  # two entries
    with pytest.raises(ValueError, match="order"):
        sample_unipc(nonlinear_eps, randn(1), timesteps, alphas_cumprod, None, ignore, order=3)
    with pytest.raises(ValueError, match="variant"):
        sample_unipc(nonlinear_eps, randn(1), timesteps, alphas_cumprod, None, ignore, variant="bh3", order=1)
    with pytest.raises(ValueError, match="skip type"):
        sample_unipc(nonlinear_eps, randn(1), timesteps, alphas_cumprod, None, ignore, skip_type="linear", order=1)


# ------------------------------------------------------------------------------- sampler entries

def test_timestep_sampler_entries():
    by_name = {s.name: s for s in TIMESTEP_SAMPLERS}
    assert list(by_name) == ["DDIM CFG++", "PLMS", "UniPC"]
    assert all(isinstance(s, SamplerInfo) and s.kind == "timestep" for s in TIMESTEP_SAMPLERS)
    cfgpp, plms, unipc = by_name["DDIM CFG++"], by_name["PLMS"], by_name["UniPC"]
    assert (cfgpp.aliases, cfgpp.params, cfgpp.cfg_scale_multiplier) == (("ddim_cfgpp",), ("eta",), 1 / 12.5)
    assert (plms.aliases, plms.params, plms.cfg_scale_multiplier) == (("plms",), (), 1.0)
    assert unipc.aliases == ("unipc",)
    assert unipc.params == ("uni_pc_variant", "uni_pc_skip_type", "uni_pc_order", "uni_pc_lower_order_final")
    assert set(UNIPC_SETTING_KWARGS.values()) == {"variant", "skip_type", "order", "lower_order_final"}


# ---------------------------------------------------------------------------------- Beta schedule

@pytest.fixture(scope="module")
def schedule(alphas_cumprod):
    return DiscreteSchedule(alphas_cumprod)


@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_beta_shape_and_endpoints(schedule, n):
    sigma_min, sigma_max = schedule.sigma_min, schedule.sigma_max
    sigmas = beta(n, sigma_min, sigma_max, schedule)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) == pytest.approx(sigma_max, rel=1e-6)
    if n > 1:
        assert float(sigmas[-2]) == pytest.approx(sigma_min, rel=1e-6)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_beta_is_symmetric_for_equal_parameters(schedule):
    # Beta(α, α) is symmetric: quantiles q and 1−q mirror around the middle of [σmin, σmax]
    sigma_min, sigma_max = schedule.sigma_min, schedule.sigma_max
    sigmas = beta(9, sigma_min, sigma_max, schedule, alpha=0.6, beta=0.6)[:-1].double()
    torch.testing.assert_close(sigmas + sigmas.flip(0), torch.full_like(sigmas, sigma_min + sigma_max),
                               rtol=1e-6, atol=1e-5)
    assert float(sigmas[4]) == pytest.approx((sigma_min + sigma_max) / 2, rel=1e-6)
    # α, β < 1 puts more steps near both ends than an even spacing does
    assert float(sigmas[0] - sigmas[1]) < (sigma_max - sigma_min) / 8


def test_beta_with_uniform_distribution_is_linear_in_sigma(schedule):
    sigma_min, sigma_max, n = 0.03, 14.6, 6
    sigmas = beta(n, sigma_min, sigma_max, schedule, alpha=1.0, beta=1.0)
    expected = [sigma_min + (1 - i / (n - 1)) * (sigma_max - sigma_min) for i in range(n)] + [0.0]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-6)


def test_beta_other_parameters(schedule):
    # Beta(2, 1) has cdf q², so its quantile is √q
    sigmas = beta(5, 1.0, 3.0, schedule, alpha=2.0, beta=1.0)
    expected = [1.0 + 2.0 * math.sqrt(1 - i / 4) for i in range(5)] + [0.0]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-6)
