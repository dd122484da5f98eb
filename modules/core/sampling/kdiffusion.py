"""The rest of A1111's k-diffusion samplers, reimplemented in k-diffusion's formulation (v0.1.1, the
version A1111 v1.10.1 pins), plus A1111's own Restart and LCM samplers.

Every function has the sigma-sampler signature of ``sampler_functions``:
``fn(denoise, x, sigmas, noise, callback, **options) -> x``. The arithmetic follows k-diffusion's
expressions term by term, in the same order and with the same tensor/scalar mix, because A1111's
images depend on the last bit of every step. Where k-diffusion calls ``torch.randn_like(x)`` (which
A1111 redirects to its per-image generators) these functions call ``noise.next()``, also for draws
that end up multiplied by zero, so the generators advance exactly as in A1111. SDE samplers take the
Brownian-tree ``noise_sampler(sigma, sigma_next)`` that A1111 always builds for them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import integrate

from modules.core.sampling.sampler_functions import (
    Denoise, NoiseSource, StepCallback, _to_d, ancestral_step, churn, sigma_of, t_of,
)
from modules.core.sampling.schedulers import karras
from modules.core.sampling.sampler_info import SamplerInfo

CHURN_PARAMS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
ETA_PARAMS = ("eta", "s_noise")


@torch.no_grad()
def sample_heun(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Karras et al. (2022) Algorithm 2 with Heun steps; the step to sigma 0 is an Euler step."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoise(x, sigma_hat * s_in)
        d = _to_d(x, sigma_hat, denoised)
        callback(i, x, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1] * s_in))
            x = x + ((d + d_2) / 2) * dt
    return x


@torch.no_grad()
def sample_dpm_2(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM-Solver-2 style midpoint steps (midpoint in log sigma), with Karras churn."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoise(x, sigma_hat * s_in)
        d = _to_d(x, sigma_hat, denoised)
        callback(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = _midpoint_step(denoise, x, d, sigma_hat, sigmas[i + 1], s_in)
    return x


def _midpoint_step(denoise: Denoise, x, d, sigma_from, sigma_to, s_in):
    sigma_mid = sigma_from.log().lerp(sigma_to.log(), 0.5).exp()
    dt_1 = sigma_mid - sigma_from
    dt_2 = sigma_to - sigma_from
    x_2 = x + d * dt_1
    d_2 = _to_d(x_2, sigma_mid, denoise(x_2, sigma_mid * s_in))
    return x + d_2 * dt_2


@torch.no_grad()
def sample_dpm_2_ancestral(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                           eta=1.0, s_noise=1.0):
    """Ancestral DPM2: a midpoint step down to sigma_down, then fresh noise of size sigma_up.
    The last step (sigma_down = 0) is a plain Euler step and draws no noise."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        callback(i, x, denoised)
        d = _to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = _midpoint_step(denoise, x, d, sigmas[i], sigma_down, s_in)
            x = x + noise.next() * s_noise * sigma_up
    return x


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial for node t_{i-j}.

    A1111 runs numpy 1.x, where (Python float τ) − (float32 sigma) is computed in float64 while the
    sigma differences in the denominators stay in the array's float32; written out explicitly so
    numpy 2, which would keep τ − sigma in float32, gives the same coefficients."""
    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")
    t = np.asarray(t)
    nodes = [(float(t[i - k]), float(t[i - j] - t[i - k])) for k in range(order) if k != j]

    def basis(tau: float) -> float:
        prod = 1.0
        for node, denominator in nodes:
            prod *= (tau - node) / denominator
        return prod

    return integrate.quad(basis, float(t[i]), float(t[i + 1]), epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback, order=4):
    """Linear multistep over the last ``order`` derivatives, coefficients by numeric integration."""
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        ds.append(_to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        callback(i, x, denoised)
        cur_order = min(i + 1, order)
        coeffs = [lms_coefficient(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
        update = 0
        for coeff, d in zip(coeffs, reversed(ds)):
            update = update + coeff * d
        x = x + update
    return x


class _PIDStepSize:
    """k-diffusion's PID controller for DPM-Solver's adaptive step size."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class _DPMSolver:
    """DPM-Solver 1/2/3 steps in t = -log sigma on the noise prediction (Lu et al., 2022).

    ``cache`` holds the eps evaluations of the current step ("eps", "eps_r1", "eps_r2") so the
    low- and high-order solutions of an adaptive step share model calls."""

    def __init__(self, denoise: Denoise):
        self.denoise = denoise

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            sigma = sigma_of(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.denoise(x, sigma)) / sigma_of(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        return x - sigma_of(t_next) * h.expm1() * eps

    def step_2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - sigma_of(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - sigma_of(t_next) * h.expm1() * eps - sigma_of(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - sigma_of(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - sigma_of(s2) * (r2 * h).expm1() * eps
              - sigma_of(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - sigma_of(t_next) * h.expm1() * eps - sigma_of(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def step(self, order: int, x, t, t_next, cache):
        if order == 1:
            return self.step_1(x, t, t_next, cache)
        if order == 2:
            return self.step_2(x, t, t_next, cache)
        return self.step_3(x, t, t_next, cache)

    def ancestral_target(self, t, t_next, t_end, eta):
        """Where the deterministic part of an ancestral step ends, and the noise to add after it."""
        sd, _ = ancestral_step(sigma_of(t), sigma_of(t_next), eta)
        t_next_ = torch.minimum(t_end, t_of(sd))
        return t_next_, (sigma_of(t_next) ** 2 - sigma_of(t_next_) ** 2) ** 0.5


def _check_sigma_range(sigma_min, sigma_max):
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")


@torch.no_grad()
def sample_dpm_fast(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback, *,
                    sigma_min, sigma_max, eta=0.0, s_noise=1.0):
    """DPM-Solver-Fast: ``n = len(sigmas) - 1`` model calls spread over steps of order 3 (the last
    one or two of lower order), evenly spaced in log sigma from sigma_max to sigma_min. Only the
    count of ``sigmas`` is used; one noise draw per step (A1111: ``n`` = steps)."""
    _check_sigma_range(sigma_min, sigma_max)
    solver = _DPMSolver(denoise)
    nfe = len(sigmas) - 1
    t_start, t_end = t_of(torch.as_tensor(sigma_max)), t_of(torch.as_tensor(sigma_min))
    if not t_end > t_start and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        if eta:
            t_next_, su = solver.ancestral_target(t, t_next, t_end, eta)
        else:
            t_next_, su = t_next, 0.0
        eps = solver.eps(cache, "eps", x, t)
        callback(i, x, x - sigma_of(t) * eps)
        x = solver.step(order, x, t, t_next_, cache)
        x = x + su * s_noise * noise.next()
    return x


@torch.no_grad()
def sample_dpm_adaptive(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback, *,
                        sigma_min, sigma_max, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
                        icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0):
    """DPM-Solver-12/23 with PID step-size control from sigma_max to sigma_min; ``sigmas`` is unused.
    The callback reports every attempt (accepted or rejected), as k-diffusion's info callback does."""
    _check_sigma_range(sigma_min, sigma_max)
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    solver = _DPMSolver(denoise)
    t_start, t_end = t_of(torch.as_tensor(sigma_max)), t_of(torch.as_tensor(sigma_min))
    forward = t_end > t_start
    if not forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    h_init = abs(h_init) * (1 if forward else -1)
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    s = t_start
    x_prev = x
    pid = _PIDStepSize(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    attempts = 0
    while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
        if eta:
            t_, su = solver.ancestral_target(s, t, t_end, eta)
        else:
            t_, su = t, 0.0
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - sigma_of(s) * eps
        if order == 2:
            x_low = solver.step_1(x, s, t_, cache)
            x_high = solver.step_2(x, s, t_, cache)
        else:
            x_low = solver.step_2(x, s, t_, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, t_, cache)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + su * s_noise * noise.next()
            s = t
        callback(attempts, x, denoised)
        attempts += 1
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                              eta=1.0, s_noise=1.0):
    """Ancestral DPM-Solver++(2S): a single-step second-order update down to sigma_down, then noise
    of size sigma_up (drawn whenever the next sigma is above zero)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        callback(i, x, denoised)
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = t_of(sigmas[i]), t_of(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (sigma_of(s) / sigma_of(t)) * x - (-h * r).expm1() * denoised
            denoised_2 = denoise(x_2, sigma_of(s) * s_in)
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise.next() * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback, *,
                     noise_sampler, eta=1.0, s_noise=1.0, r=1 / 2):
    """DPM-Solver++ (stochastic): two ancestral half-steps per step with Brownian-tree noise."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        callback(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = t_of(sigmas[i]), t_of(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)

        sd, su = ancestral_step(sigma_of(t), sigma_of(s), eta)
        s_ = t_of(sd)
        x_2 = (sigma_of(s_) / sigma_of(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(sigma_of(t), sigma_of(s)) * s_noise * su
        denoised_2 = denoise(x_2, sigma_of(s) * s_in)

        sd, su = ancestral_step(sigma_of(t), sigma_of(t_next), eta)
        t_next_ = t_of(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (sigma_of(t_next_) / sigma_of(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(sigma_of(t), sigma_of(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback, *,
                        noise_sampler, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE; ``solver_type`` "midpoint" or "heun" picks the second-order correction.
    The step to sigma 0 returns the denoised prediction."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    h = h_last = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        callback(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                z = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + z * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback, *,
                        noise_sampler, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE: a third-order multistep update from the last three predictions."""
    s_in = x.new_ones([x.shape[0]])
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        callback(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                z = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + z * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def restart_steps(sigmas: torch.Tensor, restart_list: dict | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, next sigma) pairs A1111's Restart sampler walks, restart segments included.

    With ``restart_list`` None and 20+ steps, the main schedule is rebuilt as a Karras schedule with
    fewer steps and one restart (two from 36 steps) jumps from sigma ≈ 0.1 back up to sigma ≈ 2.
    ``restart_list`` maps a sigma to [restart steps, restart times, max sigma]."""
    steps = sigmas.shape[0] - 1
    if restart_list is None:
        restart_list = {}
        if steps >= 20:
            n_steps, n_times = (steps // 4, 2) if steps >= 36 else (9, 1)
            sigmas = karras(steps - n_steps * n_times, sigmas[-2].item(), sigmas[0].item(), None).to(sigmas.device)
            restart_list = {0.1: [n_steps + 1, n_times, 2]}
    by_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}

    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            n_steps, n_times, restart_max = by_index[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                segment = karras(n_steps, sigmas[min_idx].item(), sigmas[max_idx].item(), None).to(sigmas.device)[:-1]
                pairs.extend(list(zip(segment[:-1], segment[1:])) * n_times)
    return pairs


@torch.no_grad()
def sample_restart(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                   s_noise=1.0, restart_list=None):
    """A1111's Restart sampler (Xu et al., 2023): Heun steps; on each jump back up in sigma, noise
    of the matching size is added. The callback counts every Heun step, restarts included."""
    s_in = x.new_ones([x.shape[0]])
    last_sigma = None
    for step, (old_sigma, new_sigma) in enumerate(restart_steps(sigmas, restart_list)):
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise.next() * s_noise * (old_sigma**2 - last_sigma**2) ** 0.5
        denoised = denoise(x, old_sigma * s_in)
        d = _to_d(x, old_sigma, denoised)
        callback(step, x, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, new_sigma, denoise(x_2, new_sigma * s_in))
            x = x + ((d + d_2) / 2) * dt
        last_sigma = new_sigma
    return x


@torch.no_grad()
def sample_lcm(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback):
    """Latent Consistency Model sampling: jump to the prediction, re-noise to the next sigma.

    A1111 runs this with its own LCM denoiser (``LCMCompVisDenoiser``: 50 of the 1000 training
    timesteps, nearest-timestep lookup and the consistency-model boundary scalings) and, for
    "Automatic", that denoiser's schedule: ``consistency=True`` in its entry makes the runner use
    ``LCMSchedule`` and ``LCMDenoiser``; this function is only the step rule."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        callback(i, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise.next()
    return x


# A1111 v1.10.1's list order (sd_samplers_kdiffusion.samplers_k_diffusion, then LCM), without the
# entries that live elsewhere (DPM++ 2M, Euler a, Euler). ``params`` are the settings A1111 passes:
# ``eta`` when the function takes it, plus its ``sampler_extra_params`` list.
KDIFFUSION_SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ SDE", sample_dpmpp_sde, ("k_dpmpp_sde",), default_scheduler="karras",
                params=ETA_PARAMS, second_order=True, brownian=True),
    SamplerInfo("DPM++ 2M SDE", sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde",), default_scheduler="exponential",
                params=ETA_PARAMS, brownian=True),
    SamplerInfo("DPM++ 2M SDE Heun", sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde_heun",), default_scheduler="exponential",
                params=ETA_PARAMS, brownian=True, fixed={"solver_type": "heun"}),
    SamplerInfo("DPM++ 2S a", sample_dpmpp_2s_ancestral, ("k_dpmpp_2s_a",), default_scheduler="karras",
                uses_ensd=True, params=ETA_PARAMS, second_order=True),
    SamplerInfo("DPM++ 3M SDE", sample_dpmpp_3m_sde, ("k_dpmpp_3m_sde",), default_scheduler="exponential",
                params=ETA_PARAMS, brownian=True, discard_penultimate=True),
    SamplerInfo("LMS", sample_lms, ("k_lms",)),
    SamplerInfo("Heun", sample_heun, ("k_heun",), params=CHURN_PARAMS, second_order=True),
    SamplerInfo("DPM2", sample_dpm_2, ("k_dpm_2",), default_scheduler="karras", params=CHURN_PARAMS,
                second_order=True, discard_penultimate=True),
    SamplerInfo("DPM2 a", sample_dpm_2_ancestral, ("k_dpm_2_a",), default_scheduler="karras", uses_ensd=True,
                params=ETA_PARAMS, second_order=True, discard_penultimate=True),
    SamplerInfo("DPM fast", sample_dpm_fast, ("k_dpm_fast",), uses_ensd=True,
                params=("eta", "s_noise", "sigma_min", "sigma_max")),
    SamplerInfo("DPM adaptive", sample_dpm_adaptive, ("k_dpm_ad",), uses_ensd=True,
                params=("eta", "sigma_min", "sigma_max")),
    SamplerInfo("Restart", sample_restart, ("restart",), default_scheduler="karras", second_order=True),
    SamplerInfo("LCM", sample_lcm, ("k_lcm",), consistency=True),
)
