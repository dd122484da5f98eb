"""Why the sigma schedules are our own code and not diffusers' schedulers (issue: "where a
diffusers scheduler gives identical numbers, use it, and prove it in a test").

diffusers builds the Karras, exponential and Beta schedules from the same formulas and agrees with
ours to float32 rounding (< 2e-6 relative); its evenly spaced timesteps interpolate σ linearly
where k-diffusion (A1111's "Uniform"/Automatic) interpolates log σ. Even the first three are not
identical numbers: it takes the training ``alphas_cumprod`` as a float32 cumulative product, while
LDM (and so A1111) computes it in float64 and stores float32. Every sigma inherits that last-bit
difference, and A1111's images depend on the last bit of every step. The tests below pin both
facts: the formulas agree, and the training table differs — if diffusers ever matched it bit for
bit, the second test fails and the schedules should move to diffusers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from modules.core.sampling import schedulers as sch
from modules.core.sampling.beta_schedule import beta
from modules.core.sampling.noise_schedule import DiscreteSchedule, training_alphas_cumprod

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@pytest.fixture(scope="module")
def model():
    return DiscreteSchedule(training_alphas_cumprod(0.00085, 0.012, 1000))


def diffusers_sigmas(steps, **options):
    scheduler = EulerDiscreteScheduler(**SD, **options)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float()


@pytest.mark.parametrize("steps", [5, 10, 30])
@pytest.mark.parametrize("options, ours", [
    (dict(use_karras_sigmas=True), sch.karras),
    (dict(use_exponential_sigmas=True), sch.exponential),
    (dict(use_beta_sigmas=True), beta),
])
def test_diffusers_builds_the_same_schedules_to_float32_rounding(model, steps, options, ours):
    theirs = diffusers_sigmas(steps, **options)
    mine = ours(steps, model.sigma_min, model.sigma_max, model)
    assert theirs.shape == mine.shape and mine[-1] == theirs[-1] == 0
    torch.testing.assert_close(theirs, mine, rtol=2e-6, atol=0)


def test_uniform_differs_between_training_steps(model):
    """Evenly spaced timesteps: at whole timesteps (10 steps: 999, 888, …) both give the training
    sigmas; between them k-diffusion interpolates log σ, diffusers σ itself, so at 30 steps the
    schedules differ by far more than rounding."""
    at_whole_steps = diffusers_sigmas(10, timestep_spacing="linspace")
    torch.testing.assert_close(at_whole_steps, sch.uniform(10, model.sigma_min, model.sigma_max, model), rtol=2e-6, atol=0)
    between = diffusers_sigmas(30, timestep_spacing="linspace")
    mine = sch.uniform(30, model.sigma_min, model.sigma_max, model)
    relative = ((between[:-1] - mine[:-1]).abs() / mine[:-1]).max()
    assert relative > 1e-5
    # ours is log-linear: halfway between two training steps is their geometric mean
    t = torch.tensor([500.5])
    assert torch.allclose(model.t_to_sigma(t), (model.sigmas[500] * model.sigmas[501]).sqrt(), rtol=1e-6)


def test_diffusers_training_table_is_not_a1111s(model):
    theirs = EulerDiscreteScheduler(**SD).alphas_cumprod
    torch.testing.assert_close(theirs, model.alphas_cumprod, rtol=2e-6, atol=0)
    assert not torch.equal(theirs, model.alphas_cumprod)
    # LDM's table: float64 linspace of sqrt(beta), squared, float64 cumulative product, stored float32
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    assert torch.equal(model.alphas_cumprod, torch.tensor(np.cumprod(1 - betas), dtype=torch.float32))
