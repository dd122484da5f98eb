"""Noise schedules, the discrete SD schedule, and sampler/scheduler selection (spec §1.5, §3, §4.4).

Reference values are recomputed here in float64 numpy from the formulas (SD's scaled-linear betas,
k-diffusion's schedule functions, A1111's ``sd_schedulers.py``), not taken from our implementation.
"""

import math

import numpy as np
import pytest
import torch

from modules.core.sampling import schedulers as sch
from modules.core.sampling.noise_schedule import DiscreteSchedule, training_alphas_cumprod
from modules.core.sampling.samplers import UnknownSamplerError, effective_scheduler, resolve_sampler

# SD1/SD2 training schedule: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)**2
BETAS = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
ALPHAS_CUMPROD = np.cumprod(1.0 - BETAS)
# A1111 stores alphas_cumprod as float32 and k-diffusion derives the sigmas from it in float32
# (sigma_min = 0.0291675…, not the float64 0.0291672…).
_AC32 = ALPHAS_CUMPROD.astype(np.float32)
SIGMAS = (((np.float32(1) - _AC32) / _AC32) ** np.float32(0.5)).astype(np.float64)
LOG_SIGMAS = np.log(SIGMAS)
SIG_MIN, SIG_MAX = float(SIGMAS[0]), float(SIGMAS[-1])

AYS_SD1 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]


def sigma_at(t):
    """Log-sigma interpolation between training timesteps."""
    return np.exp(np.interp(np.asarray(t, dtype=np.float64), np.arange(1000), LOG_SIGMAS))


def t_at(sigma):
    return np.interp(np.log(np.asarray(sigma, dtype=np.float64)), LOG_SIGMAS, np.arange(1000))


def with_zero(values):
    return np.append(np.asarray(values, dtype=np.float64), 0.0)


@pytest.fixture(scope="module")
def model():
    return DiscreteSchedule(training_alphas_cumprod(0.00085, 0.012, 1000))


def as_np(t):
    assert isinstance(t, torch.Tensor)
    return t.detach().to(torch.float64).cpu().numpy()


def assert_schedule(got, expected, rtol=1e-5, atol=1e-6):
    got = as_np(got)
    assert got.shape == np.shape(expected), (got.shape, np.shape(expected))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- discrete schedule


def test_training_alphas_cumprod_is_sds():
    got = training_alphas_cumprod(0.00085, 0.012, 1000)
    assert tuple(got.shape) == (1000,)
    np.testing.assert_allclose(as_np(got), ALPHAS_CUMPROD, rtol=1e-6)


def test_sd_sigma_range(model):
    assert model.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert model.sigma_max == pytest.approx(14.6146, abs=1e-3)
    assert model.sigma_min == pytest.approx(SIG_MIN, rel=1e-5)
    assert model.sigma_max == pytest.approx(SIG_MAX, rel=1e-5)


def test_t_to_sigma_on_training_steps(model):
    got = model.t_to_sigma(torch.arange(1000, dtype=torch.float32))
    np.testing.assert_allclose(as_np(got), SIGMAS, rtol=1e-5)


def test_sigma_to_t_inverts_t_to_sigma(model):
    t = torch.tensor([0.0, 1.0, 10.0, 10.5, 250.25, 500.0, 998.9, 999.0])
    back = model.sigma_to_t(model.t_to_sigma(t))
    np.testing.assert_allclose(as_np(back), as_np(t), atol=2e-3)
    got_t = model.sigma_to_t(torch.tensor(SIGMAS[[0, 7, 400, 999]], dtype=torch.float32))
    np.testing.assert_allclose(as_np(got_t), [0, 7, 400, 999], atol=2e-3)


def test_interpolation_is_in_log_sigma(model):
    geometric_mean = math.sqrt(SIGMAS[10] * SIGMAS[11])
    assert float(model.t_to_sigma(torch.tensor(10.5))) == pytest.approx(geometric_mean, rel=1e-5)
    quarter = SIGMAS[10] ** 0.75 * SIGMAS[11] ** 0.25
    assert float(model.sigma_to_t(torch.tensor(quarter))) == pytest.approx(10.25, abs=2e-3)
    # linear interpolation in sigma would put the arithmetic mean at t=10.5 instead
    arithmetic = (SIGMAS[600] + SIGMAS[601]) / 2
    assert float(model.sigma_to_t(torch.tensor(arithmetic))) == pytest.approx(t_at(arithmetic), abs=2e-3)


# ---------------------------------------------------------------- schedule formulas


@pytest.mark.parametrize("n", [1, 7, 20])
def test_karras_rho_7(model, n):
    ramp = np.linspace(0, 1, n)
    lo, hi = 0.1 ** (1 / 7), 10.0 ** (1 / 7)
    assert_schedule(sch.karras(n, 0.1, 10.0, model), with_zero((hi + ramp * (lo - hi)) ** 7))


def test_karras_model_range(model):
    ramp = np.linspace(0, 1, 10)
    lo, hi = SIG_MIN ** (1 / 7), SIG_MAX ** (1 / 7)
    got = sch.karras(10, SIG_MIN, SIG_MAX, model)
    assert_schedule(got, with_zero((hi + ramp * (lo - hi)) ** 7))
    assert float(got[0]) == pytest.approx(14.6146, abs=1e-3)
    assert float(got[-2]) == pytest.approx(0.0292, abs=1e-4)


def test_karras_other_rho(model):
    ramp = np.linspace(0, 1, 8)
    lo, hi = 0.1 ** (1 / 3), 10.0 ** (1 / 3)
    assert_schedule(sch.karras(8, 0.1, 10.0, model, rho=3.0), with_zero((hi + ramp * (lo - hi)) ** 3))


@pytest.mark.parametrize("n", [1, 9, 20])
def test_exponential(model, n):
    expected = np.exp(np.linspace(math.log(10.0), math.log(0.1), n))
    assert_schedule(sch.exponential(n, 0.1, 10.0, model), with_zero(expected))


def test_polyexponential(model):
    # rho 1 (the default) is the exponential schedule
    assert_schedule(sch.polyexponential(12, 0.1, 10.0, model),
                    with_zero(np.exp(np.linspace(math.log(10.0), math.log(0.1), 12))))
    ramp = np.linspace(1, 0, 12) ** 2
    expected = np.exp(ramp * (math.log(10.0) - math.log(0.1)) + math.log(0.1))
    assert_schedule(sch.polyexponential(12, 0.1, 10.0, model, rho=2.0), with_zero(expected))


@pytest.mark.parametrize("n", [1, 10, 25])
def test_kl_optimal_formula(model, n):
    # spec §1.5: σ_i = tan(i/n·atan σmin + (1−i/n)·atan σmax), i = 0…n (A1111 appends no zero)
    i = np.arange(n + 1)
    expected = np.tan(i / n * math.atan(SIG_MIN) + (1 - i / n) * math.atan(SIG_MAX))
    assert_schedule(sch.kl_optimal(n, SIG_MIN, SIG_MAX, model), expected)


def loglinear(values, n):
    """NVIDIA's log-linear interpolation of a decreasing list to n points."""
    xs = np.linspace(0, 1, len(values))
    ys = np.log(np.asarray(values, dtype=np.float64)[::-1])
    return np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]


def test_align_your_steps_uses_the_list_as_is_for_11_sigmas(model):
    assert_schedule(sch.align_your_steps(11, SIG_MIN, SIG_MAX, model), with_zero(AYS_SD1))


@pytest.mark.parametrize("n", [5, 10, 20, 32])
def test_align_your_steps_log_linear_interpolation(model, n):
    got = sch.align_your_steps(n, SIG_MIN, SIG_MAX, model)
    assert_schedule(got, with_zero(loglinear(AYS_SD1, n)))
    assert float(got[0]) == pytest.approx(14.615, rel=1e-6)
    assert float(got[-2]) == pytest.approx(0.029, rel=1e-5)


@pytest.mark.parametrize("n", [1, 10, 33])
def test_uniform_is_evenly_spaced_timesteps(model, n):
    assert_schedule(sch.uniform(n, SIG_MIN, SIG_MAX, model), with_zero(sigma_at(np.linspace(999, 0, n))))


@pytest.mark.parametrize("n", [1, 10, 33])
def test_sgm_uniform(model, n):
    expected = sigma_at(np.linspace(999, 0, n + 1)[:-1])
    assert_schedule(sch.sgm_uniform(n, SIG_MIN, SIG_MAX, model), with_zero(expected))


@pytest.mark.parametrize("n", [10, 33])
def test_simple(model, n):
    expected = [SIGMAS[-(1 + int(x * 1000 / n))] for x in range(n)]
    assert_schedule(sch.simple(n, SIG_MIN, SIG_MAX, model), with_zero(expected))


def test_normal(model):
    assert_schedule(sch.normal(12, SIG_MIN, SIG_MAX, model), with_zero(sigma_at(np.linspace(999, 0, 12))))
    # a narrower range maps sigma_min/max through sigma_to_t first
    expected = sigma_at(np.linspace(t_at(10.0), t_at(0.1), 12))
    assert_schedule(sch.normal(12, 0.1, 10.0, model), with_zero(expected), rtol=1e-4)


@pytest.mark.parametrize("n", [10, 20, 25])
def test_ddim_uniform(model, n):
    step = 1000 // n
    expected = SIGMAS[np.arange(1, 1000, step)][::-1]
    assert_schedule(sch.ddim_uniform(n, SIG_MIN, SIG_MAX, model), with_zero(expected))


ENDS_AT_ZERO = [s for s in sch.SCHEDULERS if s.function is not None and s.name != "kl_optimal"]


@pytest.mark.parametrize("scheduler", ENDS_AT_ZERO, ids=[s.name for s in ENDS_AT_ZERO])
@pytest.mark.parametrize("n", [10, 20, 25])
def test_every_schedule_has_n_plus_1_decreasing_entries_ending_in_zero(model, scheduler, n):
    got = as_np(scheduler.function(n, SIG_MIN, SIG_MAX, model))
    assert got.shape == (n + 1,)
    assert got[-1] == 0.0
    assert np.all(np.diff(got) < 0)
    assert got[0] <= SIG_MAX * (1 + 1e-4)


# ---------------------------------------------------------------- scheduler names

SPEC_SCHEDULERS = [
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"), ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"),
    ("align_your_steps", "Align Your Steps"), ("simple", "Simple"), ("normal", "Normal"), ("ddim", "DDIM"),
    ("beta", "Beta"),
]


def test_scheduler_list_in_spec_order():
    assert [(s.name, s.label) for s in sch.SCHEDULERS] == SPEC_SCHEDULERS
    assert sch.SCHEDULERS[0].function is None


def test_scheduler_default_rho():
    assert sch.find_scheduler("karras").default_rho == 7.0
    assert sch.find_scheduler("polyexponential").default_rho == 1.0


@pytest.mark.parametrize(
    "query,name",
    [
        ("karras", "karras"), ("Karras", "karras"), ("KARRAS", "karras"),
        ("SGM Uniform", "sgm_uniform"), ("sgm_uniform", "sgm_uniform"), ("SGMUniform", "sgm_uniform"),
        ("sgmuniform", "sgm_uniform"), ("Align Your Steps", "align_your_steps"), ("kl optimal", "kl_optimal"),
        ("DDIM", "ddim"), ("Automatic", "automatic"),
    ],
)
def test_find_scheduler(query, name):
    found = sch.find_scheduler(query)
    assert found is not None and found.name == name


def test_find_scheduler_unknown():
    assert sch.find_scheduler("no such schedule") is None


# ---------------------------------------------------------------- sampler selection


@pytest.fixture
def run():
    # imported here so that the schedule tests above do not depend on the whole sampling runner
    from modules.core.sampling import run

    return run


@pytest.mark.parametrize(
    "query,name",
    [
        ("Euler a", "Euler a"), ("euler A", "Euler a"), ("k_euler_a", "Euler a"), ("K_EULER_A", "Euler a"),
        ("DPM++ 2M", "DPM++ 2M"), ("dpm++ 2m", "DPM++ 2M"), ("k_dpmpp_2m", "DPM++ 2M"),
        ("Euler", "Euler"), ("DDIM", "DDIM"), ("ddim", "DDIM"), ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
        ("DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun"), ("plms", "PLMS"), ("unipc", "UniPC"), ("k_lcm", "LCM"),
        ("ddim_cfgpp", "DDIM CFG++"), ("k_dpm_ad", "DPM adaptive"), ("restart", "Restart"),
    ],
)
def test_sampler_names_and_aliases(query, name):
    sampler, scheduler = resolve_sampler(query, "Automatic")
    assert sampler.name == name
    assert scheduler.name == "automatic"


@pytest.mark.parametrize(
    "query,name,schedule",
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "karras"),
        ("Euler a Karras", "Euler a", "karras"),
        ("DPM++ 2M Exponential", "DPM++ 2M", "exponential"),
        ("DPM++ 2M SGM Uniform", "DPM++ 2M", "sgm_uniform"),
        ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "karras"),
        ("DPM++ 2M SDE Heun Exponential", "DPM++ 2M SDE Heun", "exponential"),
        ("DPM++ SDE Karras", "DPM++ SDE", "karras"),
        ("DPM2 a Karras", "DPM2 a", "karras"),
        ("LMS Karras", "LMS", "karras"),
        ("Euler Beta", "Euler", "beta"),
    ],
)
def test_legacy_combined_names(query, name, schedule):
    sampler, scheduler = resolve_sampler(query, "Automatic")
    assert (sampler.name, scheduler.name) == (name, schedule)


def test_explicit_scheduler_by_name_or_label():
    assert resolve_sampler("Euler a", "Karras")[1].name == "karras"
    assert resolve_sampler("Euler a", "karras")[1].name == "karras"
    assert resolve_sampler("Euler a", "SGMUniform")[1].name == "sgm_uniform"


def test_unknown_sampler_names_the_choices():
    with pytest.raises(UnknownSamplerError) as info:
        resolve_sampler("Euler b", "Automatic")
    message = str(info.value)
    assert "Euler b" in message
    for valid in ("Euler a", "DPM++ 2M", "DDIM"):
        assert valid in message


def test_effective_scheduler():
    def eff(sampler, schedule):
        return effective_scheduler(*resolve_sampler(sampler, schedule)).name

    assert eff("DPM++ 2M", "Automatic") == "karras"
    assert eff("DPM++ 2M", "Exponential") == "exponential"
    assert eff("Euler a", "Automatic") == "automatic"
    assert eff("Euler a", "Karras") == "karras"


@pytest.mark.parametrize(
    "sampler,schedule,label",
    [
        ("DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 2M", "Uniform", "Uniform"),
        ("Euler a", "Automatic", "Automatic"),
        ("Euler a", "Karras", "Karras"),
        ("Euler", "Align Your Steps", "Align Your Steps"),
        ("DDIM", "Automatic", "Automatic"),
        ("DDIM", "Karras", "Karras"),
    ],
)
def test_schedule_label(run, sampler, schedule, label):
    assert run.schedule_label(run.plan(*resolve_sampler(sampler, schedule), run.SamplerOptions())) == label


def test_eta_infotext_only_when_not_default(run):
    SamplerOptions = run.SamplerOptions

    def info(sampler, options=SamplerOptions(), eta=None):
        return run.plan(*resolve_sampler(sampler, "Automatic"), options, eta=eta).infotext

    assert "Eta" not in info("Euler a") and "Eta DDIM" not in info("Euler a")
    assert info("Euler a", eta=0.5)["Eta"] == 0.5
    assert info("Euler a", SamplerOptions(eta_ancestral=0.7))["Eta"] == 0.7
    assert "Eta" not in info("Euler a", SamplerOptions(eta_ancestral=0.7), eta=1.0)
    assert "Eta DDIM" not in info("DDIM") and "Eta" not in info("DDIM")
    assert info("DDIM", eta=0.3)["Eta DDIM"] == 0.3
    assert info("DDIM", SamplerOptions(eta_ddim=0.2))["Eta DDIM"] == 0.2
    assert "Eta DDIM" not in info("DDIM", SamplerOptions(eta_ddim=0.2), eta=0.0)
    # samplers without eta never write it
    assert not {"Eta", "Eta DDIM"} & set(info("Euler", eta=0.5))
    assert not {"Eta", "Eta DDIM"} & set(info("DPM++ 2M"))


def test_plan_eta_values(run):
    plan, SamplerOptions = run.plan, run.SamplerOptions
    assert plan(*resolve_sampler("Euler a", "Automatic"), SamplerOptions()).eta == 1.0
    assert plan(*resolve_sampler("DDIM", "Automatic"), SamplerOptions()).eta == 0.0
    assert plan(*resolve_sampler("Euler", "Automatic"), SamplerOptions()).eta is None


def test_sigmas_for_automatic_uses_the_samplers_default(run, model):
    plan, SamplerOptions, sigmas_for = run.plan, run.SamplerOptions, run.sigmas_for
    # DPM++ 2M [karras]: Karras over the model's own range
    p = plan(*resolve_sampler("DPM++ 2M", "Automatic"), SamplerOptions())
    ramp = np.linspace(0, 1, 10)
    lo, hi = SIG_MIN ** (1 / 7), SIG_MAX ** (1 / 7)
    assert_schedule(sigmas_for(p, 10, model, SamplerOptions()), with_zero((hi + ramp * (lo - hi)) ** 7))
    # Euler a has no default: k-diffusion's own get_sigmas(n), i.e. evenly spaced timesteps
    p = plan(*resolve_sampler("Euler a", "Automatic"), SamplerOptions())
    assert_schedule(sigmas_for(p, 10, model, SamplerOptions()), with_zero(sigma_at(np.linspace(999, 0, 10))))


def test_sigmas_for_settings_override_range_and_rho(run, model):
    plan, SamplerOptions, sigmas_for = run.plan, run.SamplerOptions, run.sigmas_for
    options = SamplerOptions(sigma_min=0.1, sigma_max=10.0, rho=5.0)
    p = plan(*resolve_sampler("Euler", "Karras"), options)
    ramp = np.linspace(0, 1, 8)
    lo, hi = 0.1 ** (1 / 5), 10.0 ** (1 / 5)
    assert_schedule(sigmas_for(p, 8, model, options), with_zero((hi + ramp * (lo - hi)) ** 5))
