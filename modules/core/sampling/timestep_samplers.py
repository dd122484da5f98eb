"""A1111's other timestep samplers: PLMS, DDIM CFG++ and UniPC (``sd_samplers_timesteps_impl.py``).

Same signature as ``sample_ddim``: ``denoise_eps(x, t_batch)`` returns the CFG-combined noise
prediction, ``timesteps`` are A1111's (``ddim_timesteps``), ``alphas_cumprod`` the model's training
schedule (float32), ``noise.next()`` per-image noise and ``callback(step, x, pred_x0)`` progress.

UniPC follows A1111's copy of the reference implementation (``modules/models/diffusion/uni_pc``):
DPM-Solver's discrete VP noise schedule over ``alphas_cumprod``, data prediction (predict_x0, no
thresholding), the multistep predictor-corrector with variants bh1 / bh2 / vary_coeff, and the same
order of floating-point operations, so results agree with A1111's to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from modules.core.sampling.sampler_functions import Denoise, NoiseSource, StepCallback, _expand, ddim_tables
from modules.core.sampling.sampler_info import SamplerInfo


@torch.no_grad()
def sample_plms(denoise_eps: Denoise, x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                noise: NoiseSource, callback: StepCallback):
    """Pseudo linear multistep: a pseudo improved-Euler first step (one extra model call), then
    Adams–Bashforth of order 2, 3 and 4 on ε; ``len(timesteps) - 1`` steps, ending at ᾱ of timesteps[0]."""
    alphas, alphas_prev, sqrt_one_minus_alphas = ddim_tables(timesteps, alphas_cumprod)
    s_in = x.new_ones([x.shape[0]])

    def step_to_prev(x, e_t, index):
        a_t = _expand(alphas[index].item() * s_in, x.ndim)
        a_prev = _expand(alphas_prev[index].item() * s_in, x.ndim)
        sqrt_one_minus_at = _expand(sqrt_one_minus_alphas[index].item() * s_in, x.ndim)
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    old_eps: list[torch.Tensor] = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = denoise_eps(x, timesteps[index].item() * s_in)
        if not old_eps:
            x_prev, _ = step_to_prev(x, e_t, index)
            e_t_next = denoise_eps(x_prev, timesteps[max(index - 1, 0)].item() * s_in)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = step_to_prev(x, e_t_prime, index)
        old_eps = (old_eps + [e_t])[-3:]
        callback(i, x, pred_x0)
    return x


@torch.no_grad()
def sample_ddim_cfgpp(denoise_eps: Denoise, x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                      noise: NoiseSource, callback: StepCallback, eta=0.0):
    """DDIM with CFG++ (Chung et al. 2024): x0 from the guided ε, the step direction from the
    unconditional ε (``denoise_eps.last_uncond``). The runner divides the CFG scale by 12.5
    (``cfg_scale_multiplier``), mapping CFG 0…12.5 onto the paper's λ 0…1."""
    alphas, alphas_prev, sqrt_one_minus_alphas = ddim_tables(timesteps, alphas_cumprod)
    # 1 − ᾱ in float32, the rest in float64, as A1111 mixes them
    a_np, a_prev_np = alphas.numpy(), alphas_prev.numpy()
    sigmas = eta * np.sqrt((1 - a_prev_np) / (1 - a_np) * (1 - a_np / a_prev_np))
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = denoise_eps(x, timesteps[index].item() * s_in)
        e_uncond = denoise_eps.last_uncond
        a_t = _expand(alphas[index].item() * s_in, x.ndim)
        a_prev = _expand(alphas_prev[index].item() * s_in, x.ndim)
        sigma_t = _expand(float(sigmas[index]) * s_in, x.ndim)
        sqrt_one_minus_at = _expand(sqrt_one_minus_alphas[index].item() * s_in, x.ndim)
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_uncond
        # A1111 draws the step noise even when eta is 0 (it is then multiplied by 0).
        x = a_prev.sqrt() * pred_x0 + dir_xt + sigma_t * noise.next()
        callback(i, x, pred_x0)
    return x


# ------------------------------------------------------------------------------------------ UniPC

UNIPC_VARIANTS = ("bh1", "bh2", "vary_coeff")
UNIPC_SKIP_TYPES = ("time_uniform", "time_quadratic", "logSNR")


def _interpolate(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f through (xp, fp) with xp increasing, extended past the ends by the end
    segments. A value equal to a knot uses the segment that ends there, as DPM-Solver's
    ``interpolate_fn`` does."""
    start = (torch.searchsorted(xp, x.contiguous()) - 1).clamp(0, xp.shape[0] - 2)
    x_lo, x_hi, f_lo, f_hi = xp[start], xp[start + 1], fp[start], fp[start + 1]
    return f_lo + (x - x_lo) * (f_hi - f_lo) / (x_hi - x_lo)


class _DiscreteVP:
    """DPM-Solver's NoiseScheduleVP('discrete'): training step n sits at continuous time (n+1)/N and
    log αₜ (= ½ log ᾱ) is piecewise linear in t; σₜ = √(1−αₜ²), λₜ = log αₜ − log σₜ."""

    def __init__(self, alphas_cumprod: torch.Tensor, device: torch.device):
        self.log_alphas = (0.5 * torch.log(alphas_cumprod.float())).to(device)
        self.total_n = len(alphas_cumprod)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:].to(device)

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return _interpolate(t.reshape(-1), self.t_array, self.log_alphas)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def inverse_lambda(self, lambdas: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,), device=lambdas.device), -2.0 * lambdas)
        return _interpolate(log_alpha.reshape(-1), self.log_alphas.flip(0), self.t_array.flip(0))


def _unipc_times(ns: _DiscreteVP, skip_type: str, t_start, t_end: float, steps: int, device) -> torch.Tensor:
    """The ``steps + 1`` continuous times from ``t_start`` down to ``t_end``."""
    if skip_type == "logSNR":
        lambda_start = ns.lambda_(torch.as_tensor(t_start, dtype=torch.float32, device=device)).item()
        lambda_end = ns.lambda_(torch.tensor(t_end, device=device)).item()
        return ns.inverse_lambda(torch.linspace(lambda_start, lambda_end, steps + 1).to(device))
    if skip_type == "time_uniform":
        return torch.linspace(t_start, t_end, steps + 1).to(device)
    if skip_type == "time_quadratic":
        return torch.linspace(t_start**0.5, t_end**0.5, steps + 1).pow(2).to(device)
    raise ValueError(f"unknown UniPC skip type {skip_type!r}; choose one of: {', '.join(UNIPC_SKIP_TYPES)}")


def _weighted_sum(weights: torch.Tensor, diffs: torch.Tensor) -> torch.Tensor:
    """Σₖ weights[k]·diffs[:, k] over the stacked model differences (B, K, …)."""
    return torch.einsum("k,bk...->b...", weights.to(diffs.dtype), diffs)


class _UniPC:
    def __init__(self, denoise_eps: Denoise, ns: _DiscreteVP, variant: str):
        self.denoise_eps = denoise_eps
        self.ns = ns
        self.variant = variant

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 from the model's ε at continuous time t; the U-Net sees t as (t − 1/N)·1000."""
        eps = self.denoise_eps(x, (t - 1.0 / self.ns.total_n) * 1000.0)
        alpha_t, sigma_t = self.ns.alpha(t), self.ns.std(t)
        return (x - _expand(sigma_t, x.ndim) * eps) / _expand(alpha_t, x.ndim)

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        """One multistep step to time t; returns (x_t, the model's x0 at x_t or None without corrector)."""
        ns = self.ns
        t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
        lambda_prev_0, lambda_t = ns.lambda_(t_prev_0), ns.lambda_(t)
        sigma_prev_0, sigma_t = ns.std(t_prev_0), ns.std(t)
        alpha_t = torch.exp(ns.log_alpha(t))
        h = lambda_t - lambda_prev_0

        rks, d1s = [], []
        for i in range(1, order):
            rk = ((ns.lambda_(t_prev_list[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks = torch.tensor([float(rk) for rk in rks] + [1.0], device=x.device)
        d1s = torch.stack(d1s, dim=1) if d1s else None

        hh = -h[0]  # data prediction integrates in −λ
        x_t_ = (_expand(sigma_t / sigma_prev_0, x.ndim) * x
                - _expand(alpha_t * torch.expm1(hh), x.ndim) * model_prev_0)
        if self.variant == "vary_coeff":
            return self._vary_coeff(x_t_, x, t, rks, d1s, hh, alpha_t, model_prev_0, use_corrector)
        return self._bh(x_t_, x, t, order, rks, d1s, hh, alpha_t, model_prev_0, use_corrector)

    def _bh(self, x_t_, x, t, order, rks, d1s, hh, alpha_t, model_prev_0, use_corrector):
        """UniPC with B(h) = h (bh1) or eʰ − 1 (bh2): solve for the ρ weights of the differences."""
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        h_phi_k = torch.expm1(hh) / hh - 1
        factorial_i = 1
        powers, phis = [], []
        for i in range(1, order + 1):
            powers.append(torch.pow(rks, i - 1))
            phis.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        r_matrix = torch.stack(powers)
        b = torch.tensor([float(v) for v in phis], device=x.device)
        step_scale = _expand(alpha_t * b_h, x.ndim)

        pred_res = 0
        if d1s is not None:
            if order == 2:
                rhos_p = torch.tensor([0.5], device=x.device)
            else:
                rhos_p = torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
            pred_res = _weighted_sum(rhos_p, d1s)
        x_t = x_t_ - step_scale * pred_res
        if not use_corrector:
            return x_t, None
        rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(r_matrix, b)
        model_t = self.data_prediction(x_t, t)
        corr_res = _weighted_sum(rhos_c[:-1], d1s) if d1s is not None else 0
        d1_t = model_t - model_prev_0
        return x_t_ - step_scale * (corr_res + rhos_c[-1] * d1_t), model_t

    def _vary_coeff(self, x_t_, x, t, rks, d1s, hh, alpha_t, model_prev_0, use_corrector):
        """UniPC with coefficients from the inverse of C[i, k] = r_iᵏ / (k+1)!."""
        order = len(rks)
        columns, column = [], torch.ones_like(rks)
        for k in range(1, order + 1):
            columns.append(column)
            column = column * rks / (k + 1)
        c_matrix = torch.stack(columns, dim=1)
        h_phi_ks, h_phi_k, factorial_k = [], torch.expm1(hh), 1
        for k in range(1, order + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial_k
            factorial_k *= k + 1
        alpha = _expand(alpha_t, x.ndim)

        x_t = x_t_
        if d1s is not None:
            a_p = torch.linalg.inv(c_matrix[:-1, :-1])
            for k in range(order - 1):
                x_t = x_t - alpha * h_phi_ks[k + 1] * _weighted_sum(a_p[k], d1s)
        if not use_corrector:
            return x_t, None
        a_c = torch.linalg.inv(c_matrix)
        model_t = self.data_prediction(x_t, t)
        d1_t = model_t - model_prev_0
        x_t, k = x_t_, 0
        for k in range(order - 1):
            x_t = x_t - alpha * h_phi_ks[k + 1] * _weighted_sum(a_c[k][:-1], d1s)
        # The reference weighs the new difference with the last row used above (row 0 when none was).
        return x_t - alpha * h_phi_ks[order] * (d1_t * a_c[k][-1]), model_t


@torch.no_grad()
def sample_unipc(denoise_eps: Denoise, x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                 noise: NoiseSource, callback: StepCallback, variant="bh1", skip_type="time_uniform",
                 order=3, lower_order_final=True, is_img2img=False):
    """UniPC (Zhao et al. 2023) as A1111 runs it: ``len(timesteps)`` steps in continuous time from 1
    (or, for img2img, just above ``timesteps[-1]``) down to 1/N, one model call and one callback per
    step (the last step skips the corrector and its call)."""
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; choose one of: {', '.join(UNIPC_VARIANTS)}")
    steps, order = len(timesteps), int(order)  # the setting is a slider value
    if not 1 <= order <= steps:
        raise ValueError(f"UniPC order {order} must be between 1 and the number of sampling steps ({steps})")
    ns = _DiscreteVP(alphas_cumprod, x.device)
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else 1.0
    times = _unipc_times(ns, skip_type, t_start, 1.0 / ns.total_n, steps, x.device)
    solver = _UniPC(denoise_eps, ns, variant)
    batch = x.shape[0]

    t = times[0].expand(batch)
    model_prev_list, t_prev_list = [solver.data_prediction(x, t)], [t]
    for step in range(1, steps + 1):
        t = times[step].expand(batch)
        warming_up = step < order
        if warming_up:
            step_order = step
        elif lower_order_final:
            step_order = min(order, steps + 1 - step)
        else:
            step_order = order
        x, model_x = solver.update(x, model_prev_list, t_prev_list, t, step_order, use_corrector=step < steps)
        callback(step - 1, x, x if model_x is None else model_x)  # the last step has no x0 prediction
        if warming_up:
            model_prev_list.append(model_x)
            t_prev_list.append(t)
            continue
        model_prev_list = model_prev_list[1:] + model_prev_list[-1:]
        t_prev_list = t_prev_list[1:] + [t]
        if step < steps:
            model_prev_list[-1] = model_x
    return x


# A1111 settings key → ``sample_unipc`` keyword, for the runner's option mapping.
UNIPC_SETTING_KWARGS = {
    "uni_pc_variant": "variant",
    "uni_pc_skip_type": "skip_type",
    "uni_pc_order": "order",
    "uni_pc_lower_order_final": "lower_order_final",
}

# A1111 lists them after DDIM, in this order.
TIMESTEP_SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DDIM CFG++", sample_ddim_cfgpp, ("ddim_cfgpp",), kind="timestep", params=("eta",),
                cfg_scale_multiplier=1 / 12.5),
    SamplerInfo("PLMS", sample_plms, ("plms",), kind="timestep"),
    SamplerInfo("UniPC", sample_unipc, ("unipc",), kind="timestep", params=tuple(UNIPC_SETTING_KWARGS)),
)
