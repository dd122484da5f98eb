"""The k-diffusion samplers, Restart and LCM (spec §1.5) and the Brownian-tree noise (§4.4).

Analytic denoisers stand in for the U-Net: a constant x0 prediction (every sampler must end on it),
a linear one (one Heun step has a closed form), and a smooth elementwise nonlinearity (keeps the
images of a batch independent, for batch-versus-single checks). Expected numbers are written out
here from the formulas, not taken from the implementation.
"""

import inspect
import math

import numpy as np
import pytest
import torch

from modules.core.rng import ImageRNG
from modules.core.sampling import kdiffusion as kd
from modules.core.sampling.brownian import BrownianTreeNoise

SHAPE = (4, 8, 8)
SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642
CPU = torch.device("cpu")

# torchsde clamps queries that fall a rounding error outside the tree and warns; A1111 does the same.
pytestmark = pytest.mark.filterwarnings("ignore:Should have t:UserWarning")


def karras(n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def schedule_for(info, steps):
    if info.discard_penultimate:
        sigmas = karras(steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return karras(steps)


class CountingNoise:
    """A noise source that counts its draws (fixed per-image generators, like ImageRNG)."""

    def __init__(self, batch=1, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.batch = batch
        self.calls = 0

    def next(self):
        self.calls += 1
        return torch.randn((self.batch, *SHAPE), generator=self.generator)


class Recorder:
    def __init__(self):
        self.steps = []

    def __call__(self, step, x, denoised):
        self.steps.append(step)


def constant_denoiser(x0):
    def denoise(x, sigma):
        assert sigma.shape == (x.shape[0],)
        return x0.expand_as(x).clone()

    return denoise


def smooth_denoiser(x, sigma):
    return torch.tanh(x / (1 + sigma[:, None, None, None] ** 2) ** 0.5) * 0.8


def sampler_kwargs(info, x, sigmas, seeds=(1,)):
    """The keyword arguments the runner gives this sampler with A1111's default settings."""
    values = {"eta": 1.0, "s_noise": 1.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"),
              "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX}
    kwargs = {name: values[name] for name in info.params}
    kwargs.update(info.fixed)
    if info.brownian:
        kwargs["noise_sampler"] = BrownianTreeNoise(x, sigmas, list(seeds), CPU)
    return kwargs


def run(info, x, sigmas, noise, callback=None, seeds=(1,), denoise=smooth_denoiser, **overrides):
    kwargs = {**sampler_kwargs(info, x, sigmas, seeds), **overrides}
    return info.function(denoise, x, sigmas, noise, callback or Recorder(), **kwargs)


BY_NAME = {info.name: info for info in kd.KDIFFUSION_SAMPLERS}
ENDS_ON_SIGMA_MIN = {"DPM fast", "DPM adaptive"}  # they integrate down to sigma_min, not to 0
SAMPLER_IDS = [info.name for info in kd.KDIFFUSION_SAMPLERS]


# --- the sampler list ------------------------------------------------------------------------------

def test_sampler_list_matches_a1111_order_names_and_options():
    rows = [(i.name, i.aliases, i.default_scheduler, i.uses_ensd, i.second_order, i.brownian,
             i.discard_penultimate, i.fixed) for i in kd.KDIFFUSION_SAMPLERS]
    assert rows == [
        ("DPM++ SDE", ("k_dpmpp_sde",), "karras", False, True, True, False, {}),
        ("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "exponential", False, False, True, False, {}),
        ("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "exponential", False, False, True, False,
         {"solver_type": "heun"}),
        ("DPM++ 2S a", ("k_dpmpp_2s_a",), "karras", True, True, False, False, {}),
        ("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "exponential", False, False, True, True, {}),
        ("LMS", ("k_lms",), None, False, False, False, False, {}),
        ("Heun", ("k_heun",), None, False, True, False, False, {}),
        ("DPM2", ("k_dpm_2",), "karras", False, True, False, True, {}),
        ("DPM2 a", ("k_dpm_2_a",), "karras", True, True, False, True, {}),
        ("DPM fast", ("k_dpm_fast",), None, True, False, False, False, {}),
        ("DPM adaptive", ("k_dpm_ad",), None, True, False, False, False, {}),
        ("Restart", ("restart",), "karras", False, True, False, False, {}),
        ("LCM", ("k_lcm",), None, False, False, False, False, {}),
    ]


def test_params_are_the_settings_a1111_passes():
    churn = ("s_churn", "s_tmin", "s_tmax", "s_noise")
    expected = {
        "DPM++ SDE": ("eta", "s_noise"), "DPM++ 2M SDE": ("eta", "s_noise"),
        "DPM++ 2M SDE Heun": ("eta", "s_noise"), "DPM++ 2S a": ("eta", "s_noise"),
        "DPM++ 3M SDE": ("eta", "s_noise"), "LMS": (), "Heun": churn, "DPM2": churn,
        "DPM2 a": ("eta", "s_noise"), "DPM fast": ("eta", "s_noise", "sigma_min", "sigma_max"),
        "DPM adaptive": ("eta", "sigma_min", "sigma_max"), "Restart": (), "LCM": (),
    }
    assert {info.name: info.params for info in kd.KDIFFUSION_SAMPLERS} == expected


@pytest.mark.parametrize("name", SAMPLER_IDS)
def test_signature_takes_the_listed_keywords(name):
    info = BY_NAME[name]
    parameters = inspect.signature(info.function).parameters
    assert list(parameters)[:5] == ["denoise", "x", "sigmas", "noise", "callback"]
    for keyword in (*info.params, *info.fixed):
        assert keyword in parameters
    if info.brownian:
        assert parameters["noise_sampler"].default is inspect.Parameter.empty


# --- (a) a constant x0 prediction is where every sampler ends ---------------------------------------

@pytest.mark.parametrize("name", SAMPLER_IDS)
def test_constant_prediction_is_reached(name):
    info = BY_NAME[name]
    x0 = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(7)).clamp(-2, 2)
    sigmas = schedule_for(info, 10)
    x_start = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(8)) * sigmas[0]
    overrides = {"eta": 0.0} if name in ENDS_ON_SIGMA_MIN else {}
    out = run(info, x_start, sigmas, CountingNoise(), denoise=constant_denoiser(x0), **overrides)
    if name in ENDS_ON_SIGMA_MIN:
        # The exact ODE solution with a constant prediction: x0 + (x_T − x0) · σ_min / σ_max.
        expected = x0 + (x_start - x0) * (SIGMA_MIN / SIGMA_MAX)
        assert torch.allclose(out, expected, atol=1e-4)
    else:
        assert torch.allclose(out, x0, atol=1e-4)


def test_dpm_fast_with_noise_ends_within_sigma_min_of_the_prediction():
    x0 = torch.zeros((1, *SHAPE))
    x_start = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(3)) * SIGMA_MAX
    for function in (kd.sample_dpm_fast, kd.sample_dpm_adaptive):
        out = function(constant_denoiser(x0), x_start, karras(10), CountingNoise(), Recorder(),
                       sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, eta=1.0)
        assert 0.5 * SIGMA_MIN < out.std().item() < 2 * SIGMA_MIN


# --- (b) one callback per step, (c) noise draws ----------------------------------------------------

def dpm_fast_orders(n):
    m = n // 3 + 1
    return [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]


@pytest.mark.parametrize(
    "name, draws",
    [
        ("Heun", lambda n: n),  # k-diffusion draws the churn noise every step, used or not
        ("DPM2", lambda n: n),
        ("DPM2 a", lambda n: n - 1),  # none on the last step (sigma_down = 0)
        ("DPM++ 2S a", lambda n: n - 1),  # none when the next sigma is 0
        ("LCM", lambda n: n - 1),
        ("LMS", lambda n: 0),
        ("DPM++ SDE", lambda n: 0),  # SDE samplers use the Brownian tree only
        ("DPM++ 2M SDE", lambda n: 0),
        ("DPM++ 2M SDE Heun", lambda n: 0),
        ("DPM++ 3M SDE", lambda n: 0),
        ("Restart", lambda n: 0),  # no restart below 20 steps
    ],
)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_callback_per_step_and_noise_draws(name, draws, steps):
    info = BY_NAME[name]
    sigmas = schedule_for(info, steps)
    n = len(sigmas) - 1
    noise, recorder = CountingNoise(), Recorder()
    run(info, torch.randn((1, *SHAPE)) * sigmas[0], sigmas, noise, recorder)
    assert recorder.steps == list(range(n))
    assert noise.calls == draws(n)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 9, 20])
def test_dpm_fast_uses_n_model_calls_and_one_draw_per_solver_step(n):
    calls = []

    def denoise(x, sigma):
        calls.append(sigma[0].item())
        return smooth_denoiser(x, sigma)

    noise, recorder = CountingNoise(), Recorder()
    kd.sample_dpm_fast(denoise, torch.randn((1, *SHAPE)) * SIGMA_MAX, karras(n), noise, recorder,
                       sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, eta=1.0)
    orders = dpm_fast_orders(n)
    assert len(calls) == n == sum(orders)
    assert recorder.steps == list(range(len(orders)))
    assert noise.calls == len(orders)
    assert calls[0] == pytest.approx(SIGMA_MAX, rel=1e-6)


def test_dpm_adaptive_reports_every_attempt_and_draws_on_accepted_ones():
    calls, noise, recorder = [], CountingNoise(), Recorder()

    def denoise(x, sigma):
        calls.append(1)
        return smooth_denoiser(x, sigma)

    kd.sample_dpm_adaptive(denoise, torch.randn((1, *SHAPE)) * SIGMA_MAX, karras(5), noise, recorder,
                           sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, eta=1.0)
    attempts = len(recorder.steps)
    assert recorder.steps == list(range(attempts))
    assert len(calls) == 3 * attempts  # order 3: three model calls per attempt
    assert 1 <= noise.calls <= attempts


def test_dpm_fast_and_adaptive_need_a_positive_sigma_range():
    for function in (kd.sample_dpm_fast, kd.sample_dpm_adaptive):
        with pytest.raises(ValueError):
            function(smooth_denoiser, torch.zeros((1, *SHAPE)), karras(4), CountingNoise(), Recorder(),
                     sigma_min=0.0, sigma_max=SIGMA_MAX)


@pytest.mark.parametrize("steps, main_steps, restart_times, restart_len", [(20, 11, 1, 9), (40, 20, 2, 10)])
def test_restart_schedule(steps, main_steps, restart_times, restart_len):
    pairs = kd.restart_steps(karras(steps))
    assert len(pairs) == main_steps + restart_times * restart_len == steps
    jumps = [k for k in range(1, len(pairs)) if pairs[k][0] > pairs[k - 1][1]]
    assert len(jumps) == restart_times
    for k in jumps:  # each restart goes from sigma ≈ 0.1 back up to sigma ≈ 2
        assert pairs[k - 1][1].item() == pytest.approx(0.1, abs=0.05)
        assert pairs[k][0].item() == pytest.approx(2.0, rel=0.3)
    assert pairs[-1][1].item() == 0.0

    noise, recorder = CountingNoise(), Recorder()
    kd.sample_restart(smooth_denoiser, torch.randn((1, *SHAPE)) * SIGMA_MAX, karras(steps), noise, recorder)
    assert recorder.steps == list(range(steps))
    assert noise.calls == restart_times


def test_restart_below_20_steps_is_heun():
    sigmas = karras(12)
    x = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(2)) * sigmas[0]
    heun = kd.sample_heun(smooth_denoiser, x, sigmas, CountingNoise(), Recorder())
    restart = kd.sample_restart(smooth_denoiser, x, sigmas, CountingNoise(), Recorder())
    assert torch.equal(heun, restart)


# --- (d) determinism and batch independence --------------------------------------------------------

def image_rng(seeds, ensd=0):
    return ImageRNG(SHAPE, seeds, CPU, source="CPU", eta_noise_seed_delta=ensd)


def sample_with_rng(info, seeds, steps=6):
    rng = image_rng(seeds)
    sigmas = schedule_for(info, steps)
    x = rng.next() * sigmas[0]
    return run(info, x, sigmas, rng, seeds=seeds)


@pytest.mark.parametrize("name", SAMPLER_IDS)
def test_same_seeds_same_image_and_batch_equals_singles(name):
    info = BY_NAME[name]
    batch = sample_with_rng(info, [101, 202])
    assert torch.equal(batch, sample_with_rng(info, [101, 202]))
    if name == "DPM adaptive":
        return  # its step sizes follow the error norm of the whole batch, in A1111 too
    singles = torch.cat([sample_with_rng(info, [101]), sample_with_rng(info, [202])])
    assert torch.allclose(batch, singles, atol=1e-5)


@pytest.mark.parametrize("name", ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM2 a",
                                  "DPM++ 2S a", "DPM fast", "DPM adaptive", "LCM"])
def test_step_noise_depends_on_the_seed(name):
    info = BY_NAME[name]
    sigmas = schedule_for(info, 6)
    x = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(1)) * sigmas[0]
    first = run(info, x, sigmas, CountingNoise(seed=1), seeds=(1,))
    assert torch.equal(first, run(info, x, sigmas, CountingNoise(seed=1), seeds=(1,)))
    assert not torch.allclose(first, run(info, x, sigmas, CountingNoise(seed=2), seeds=(2,)), atol=1e-3)


# --- (e) numbers worked out by hand ----------------------------------------------------------------

class FixedNoise:
    """A Brownian-noise stand-in that returns a known tensor and records its queries."""

    def __init__(self, z):
        self.z = z
        self.queries = []

    def __call__(self, sigma, sigma_next):
        self.queries.append((float(sigma), float(sigma_next)))
        return self.z


def test_dpmpp_2m_sde_first_step_by_hand():
    """x₁ = (σ₁/σ₀)·e^(−ηh)·x + (1 − e^(−h−ηh))·D + σ₁·√(1 − e^(−2ηh))·s_noise·z, h = ln(σ₀/σ₁)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn((2, *SHAPE), generator=g, dtype=torch.float64) * 3.0
    x0 = torch.randn((2, *SHAPE), generator=g, dtype=torch.float64)
    z = torch.randn((2, *SHAPE), generator=g, dtype=torch.float64)
    s0, s1, eta, s_noise = 3.0, 1.7, 0.8, 1.05
    sigmas = torch.tensor([s0, s1], dtype=torch.float64)
    brownian = FixedNoise(z)
    out = kd.sample_dpmpp_2m_sde(constant_denoiser(x0), x, sigmas, CountingNoise(), Recorder(),
                                 noise_sampler=brownian, eta=eta, s_noise=s_noise)
    h = math.log(s0 / s1)
    expected = ((s1 / s0) * math.exp(-eta * h) * x + (1 - math.exp(-h - eta * h)) * x0
                + s1 * math.sqrt(1 - math.exp(-2 * eta * h)) * s_noise * z)
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert brownian.queries == [(s0, s1)]


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_second_step_correction_by_hand(solver_type):
    """The second step adds the multistep correction on D₁ − D₀ with r = h₀/h₁:
    midpoint ½·(1 − e^(−h−ηh))/r, heun ((1 − e^(−h−ηh))/(−h−ηh) + 1)/r."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn((1, *SHAPE), generator=g, dtype=torch.float64) * 5.0
    targets = [torch.randn((1, *SHAPE), generator=g, dtype=torch.float64) for _ in range(2)]
    z = torch.randn((1, *SHAPE), generator=g, dtype=torch.float64)
    sigmas = torch.tensor([5.0, 2.0, 0.6], dtype=torch.float64)
    eta = 1.0
    calls = []

    def denoise(x_in, sigma):
        calls.append(x_in)
        return targets[len(calls) - 1]

    out = kd.sample_dpmpp_2m_sde(denoise, x, sigmas, CountingNoise(), Recorder(), noise_sampler=FixedNoise(z),
                                 eta=eta, solver_type=solver_type)

    def base(x_in, d, sa, sb):
        h = math.log(sa / sb)
        return ((sb / sa) * math.exp(-eta * h) * x_in + (1 - math.exp(-h - eta * h)) * d
                + sb * math.sqrt(1 - math.exp(-2 * eta * h)) * z)

    x1 = base(x, targets[0], 5.0, 2.0)
    h0, h1 = math.log(5.0 / 2.0), math.log(2.0 / 0.6)
    r = h0 / h1
    phi = 1 - math.exp(-h1 - eta * h1)
    weight = 0.5 * phi / r if solver_type == "midpoint" else (phi / (-h1 - eta * h1) + 1) / r
    expected = base(x1, targets[1], 2.0, 0.6) + weight * (targets[1] - targets[0])
    assert torch.allclose(calls[1], x1, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out, expected, rtol=1e-11, atol=1e-11)


def test_dpmpp_2m_sde_last_step_returns_the_prediction():
    x0 = torch.randn((1, *SHAPE))
    out = kd.sample_dpmpp_2m_sde(constant_denoiser(x0), torch.randn((1, *SHAPE)), torch.tensor([1.0, 0.0]),
                                 CountingNoise(), Recorder(), noise_sampler=FixedNoise(None))
    assert torch.equal(out, x0)


def test_heun_step_with_a_linear_denoiser_by_hand():
    """D(x) = c·x gives d = (1−c)·x/σ; Heun: x' = x + ½(d(x) + d(x + d(x)·Δ))·Δ, Δ = σ₁ − σ₀."""
    c, s0, s1 = 0.3, 4.0, 1.5
    x = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out = kd.sample_heun(lambda x_in, sigma: c * x_in, x, torch.tensor([s0, s1], dtype=torch.float64),
                         CountingNoise(), Recorder())
    dt = s1 - s0
    euler = x * (1 + (1 - c) * dt / s0)
    expected = x + 0.5 * ((1 - c) * x / s0 + (1 - c) * euler / s1) * dt
    assert torch.allclose(out, expected, rtol=1e-13, atol=1e-13)


def test_heun_churn_raises_sigma_by_gamma():
    """With churn, the model sees σ̂ = σ·(1 + γ), γ = min(s_churn/n, √2 − 1), inside [s_tmin, s_tmax] only."""
    seen = []

    def denoise(x, sigma):
        seen.append(sigma[0].item())
        return torch.zeros_like(x)

    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    kd.sample_heun(denoise, torch.randn((1, *SHAPE)), sigmas, CountingNoise(), Recorder(),
                   s_churn=0.4, s_tmin=1.5, s_tmax=5.0)
    gamma = 0.4 / 4
    # Each step calls the model at σ̂ and (unless the next sigma is 0) at the next sigma.
    assert seen == pytest.approx([8.0, 4.0, 4.0 * (1 + gamma), 2.0, 2.0 * (1 + gamma), 1.0, 1.0])


def test_lms_coefficients_order_1_and_2_closed_form():
    """Order 1: t_{i+1} − t_i. Order 2 (Lagrange basis on t_i, t_{i−1}, integrated over [t_i, t_{i+1}]):
    node t_i: ((t_{i+1} − t_{i−1})² − (t_i − t_{i−1})²) / (2(t_i − t_{i−1})),
    node t_{i−1}: (t_{i+1} − t_i)² / (2(t_{i−1} − t_i)).
    A1111 (numpy 1.x) takes the node differences in the denominators in float32."""
    t = karras(12).numpy()
    t64 = t.astype(np.float64)
    for i in range(len(t) - 1):
        assert kd.lms_coefficient(1, t, i, 0) == pytest.approx(t64[i + 1] - t64[i], rel=1e-12, abs=1e-15)
    for i in range(1, len(t) - 1):
        a, b, c = t64[i - 1], t64[i], t64[i + 1]
        d_ab = float(np.float32(t[i]) - np.float32(t[i - 1]))
        node_i = ((c - a) ** 2 - (b - a) ** 2) / (2 * d_ab)
        node_prev = (c - b) ** 2 / (2 * -d_ab)
        assert kd.lms_coefficient(2, t, i, 0) == pytest.approx(node_i, rel=1e-12)
        assert kd.lms_coefficient(2, t, i, 1) == pytest.approx(node_prev, rel=1e-12)
        # Together they integrate a constant exactly.
        assert kd.lms_coefficient(2, t, i, 0) + kd.lms_coefficient(2, t, i, 1) == pytest.approx(c - b, rel=1e-6)
    with pytest.raises(ValueError):
        kd.lms_coefficient(3, t, 1, 0)


def test_lms_is_exact_for_a_linear_denoiser_path():
    """With D = 0 the ODE dx/dσ = x/σ has the solution x·σ/σ₀; LMS of order ≤ 4 follows it closely."""
    sigmas = torch.tensor([10.0, 7.0, 5.0, 3.5, 2.0, 1.0], dtype=torch.float64)
    x = torch.ones((1, *SHAPE), dtype=torch.float64) * 10.0
    out = kd.sample_lms(lambda x_in, sigma: torch.zeros_like(x_in), x, sigmas, CountingNoise(), Recorder())
    assert torch.allclose(out, torch.ones_like(out), rtol=1e-9)


def test_ancestral_noise_size_by_hand():
    """DPM2 a with a constant prediction: after the step down to σ_down the added noise is
    s_noise·σ_up·z, σ_up = min(σ₁, η·√(σ₁²(σ₀² − σ₁²)/σ₀²)), σ_down = √(σ₁² − σ_up²)."""
    s0, s1, eta, s_noise = 4.0, 2.0, 0.7, 1.1
    x0 = torch.zeros((1, *SHAPE), dtype=torch.float64)
    x = torch.ones((1, *SHAPE), dtype=torch.float64) * s0
    z = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    class OneDraw:
        def next(self):
            return z

    out = kd.sample_dpm_2_ancestral(constant_denoiser(x0), x, torch.tensor([s0, s1], dtype=torch.float64),
                                    OneDraw(), Recorder(), eta=eta, s_noise=s_noise)
    sigma_up = min(s1, eta * math.sqrt(s1**2 * (s0**2 - s1**2) / s0**2))
    sigma_down = math.sqrt(s1**2 - sigma_up**2)
    expected = x * (sigma_down / s0) + z * s_noise * sigma_up  # a constant prediction: straight line to 0
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_lcm_step_by_hand():
    x0 = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(10))
    z = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(11))

    class OneDraw:
        def next(self):
            return z

    out = kd.sample_lcm(constant_denoiser(x0), torch.randn((1, *SHAPE)), torch.tensor([3.0, 0.5]), OneDraw(),
                        Recorder())
    assert torch.allclose(out, x0 + 0.5 * z)


# --- Brownian-tree noise ---------------------------------------------------------------------------

def tree_noise(seeds, sigmas=None, shape=SHAPE):
    sigmas = karras(8) if sigmas is None else sigmas
    return BrownianTreeNoise(torch.zeros((len(seeds), *shape)), sigmas, seeds, CPU)


def test_brownian_same_seeds_same_noise_and_different_seeds_differ():
    sigmas = karras(8)
    a = tree_noise([5, 6])(sigmas[1], sigmas[2])
    assert a.shape == (2, *SHAPE) and a.dtype == torch.float32
    assert torch.equal(a, tree_noise([5, 6])(sigmas[1], sigmas[2]))
    assert not torch.allclose(a, tree_noise([5, 7])(sigmas[1], sigmas[2]))
    assert not torch.allclose(a[0], a[1])


def test_brownian_batch_equals_single_trees_stacked():
    sigmas = karras(8)
    batch = tree_noise([31, 47])
    first, second = tree_noise([31]), tree_noise([47])
    for i in range(len(sigmas) - 2):
        both = batch(sigmas[i], sigmas[i + 1])
        assert torch.equal(both, torch.cat([first(sigmas[i], sigmas[i + 1]), second(sigmas[i], sigmas[i + 1])]))


def test_brownian_query_order_does_not_matter():
    sigmas = karras(8)
    forward, backward = tree_noise([3]), tree_noise([3])
    pairs = [(sigmas[i], sigmas[i + 1]) for i in range(len(sigmas) - 2)]
    ahead = [forward(a, b) for a, b in pairs]
    behind = [backward(a, b) for a, b in reversed(pairs)][::-1]
    for p, q in zip(ahead, behind):
        assert torch.allclose(p, q, atol=1e-6)


def test_brownian_increments_are_unit_variance_and_additive():
    sigmas = karras(8)
    noise = tree_noise([2024], shape=(4, 64, 64))
    for i in range(len(sigmas) - 2):
        w = noise(sigmas[i], sigmas[i + 1])
        assert abs(w.mean().item()) < 0.05
        assert w.var().item() == pytest.approx(1.0, abs=0.05)
    # Unnormalised increments add up over adjacent intervals: W(a→c) = W(a→b) + W(b→c).
    a, b, c = sigmas[1], sigmas[2], sigmas[3]
    whole = noise(a, c) * (a - c).sqrt()
    parts = noise(a, b) * (a - b).sqrt() + noise(b, c) * (b - c).sqrt()
    assert torch.allclose(whole, parts, atol=1e-5)


def test_brownian_direction_flips_the_sign():
    sigmas = karras(8)
    noise = tree_noise([9])
    assert torch.equal(noise(sigmas[2], sigmas[3]), -noise(sigmas[3], sigmas[2]))


def test_brownian_spans_the_positive_sigmas_and_moves_to_the_latent_device():
    sigmas = karras(6)
    noise = BrownianTreeNoise(torch.zeros((1, *SHAPE), dtype=torch.float64), sigmas, [1], CPU)
    tree = noise.trees[0]
    assert tree._interval._start == pytest.approx(sigmas[-2].item(), abs=1e-6)
    assert tree._interval._end == pytest.approx(sigmas[0].item(), abs=1e-6)
    assert noise(sigmas[0], sigmas[1]).dtype == torch.float64
    with pytest.raises(ValueError):
        BrownianTreeNoise(torch.zeros((2, *SHAPE)), sigmas, [1], CPU)
