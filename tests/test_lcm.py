"""A1111's LCM sampler runs on its own denoiser (``LCMCompVisDenoiser``): LCM's 50 training
timesteps, nearest-timestep lookup, its own "Automatic" schedule and the consistency-model
boundary scalings. Expected numbers are derived here from those definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules.core.generation.request import Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.sampling.denoiser import LCMDenoiser, UNetDenoiser
from modules.core.sampling.noise_schedule import DiscreteSchedule, LCMSchedule, training_alphas_cumprod
from modules.core.sampling.run import SamplerOptions, plan, sigmas_for
from modules.core.sampling.samplers import resolve_sampler


@pytest.fixture(scope="module")
def full():
    return DiscreteSchedule(training_alphas_cumprod(0.00085, 0.012, 1000))


@pytest.fixture(scope="module")
def lcm():
    return LCMSchedule(training_alphas_cumprod(0.00085, 0.012, 1000))


def test_table_is_the_50_lcm_timesteps(full, lcm):
    assert len(lcm.sigmas) == 50
    assert torch.equal(lcm.sigmas, full.sigmas[19::20])
    assert (lcm.sigma_min, lcm.sigma_max) == (full.sigmas[19].item(), full.sigmas[999].item())


def test_sigma_to_t_is_the_nearest_lcm_timestep(full, lcm):
    assert lcm.sigma_to_t(full.sigmas[519:520]).tolist() == [519]
    assert lcm.sigma_to_t(full.sigmas[522:523]).tolist() == [519]  # nearer to 519 than to 539 in log σ
    assert lcm.sigma_to_t(full.sigmas[535:536]).tolist() == [539]
    assert lcm.sigma_to_t(torch.tensor([100.0, 1e-4])).tolist() == [999, 19]


def test_t_to_sigma_interpolates_over_the_50(full, lcm):
    assert torch.allclose(lcm.t_to_sigma(torch.tensor([519.0])), full.sigmas[519:520])
    halfway = lcm.t_to_sigma(torch.tensor([529.0]))  # between 519 and 539: geometric mean of their σ
    assert torch.allclose(halfway, (full.sigmas[519] * full.sigmas[539]).sqrt().reshape(1), rtol=1e-6)
    assert torch.allclose(lcm.t_to_sigma(torch.tensor([0.0, 5000.0])), lcm.sigmas[[0, -1]])


def test_automatic_schedule_is_evenly_spaced_lcm_time(lcm):
    sampler, scheduler = resolve_sampler("LCM", "Automatic")
    assert sampler.consistency
    sigmas = sigmas_for(plan(sampler, scheduler, SamplerOptions()), 4, lcm, SamplerOptions())
    expected = [lcm.t_to_sigma(torch.tensor([t])).item() for t in np.linspace(999, 19, 4)] + [0.0]
    assert torch.allclose(sigmas, torch.tensor(expected))
    # Karras with LCM uses LCM's σ range
    karras = sigmas_for(plan(*resolve_sampler("LCM", "Karras"), SamplerOptions()), 4, lcm, SamplerOptions())
    assert math.isclose(karras[0].item(), lcm.sigma_max, rel_tol=1e-6)
    assert math.isclose(karras[-2].item(), lcm.sigma_min, rel_tol=1e-6)


class ZeroEps(torch.nn.Module):
    """A U-Net stand-in predicting zero noise, recording the timesteps it is called with."""

    dtype = torch.float32

    def __init__(self):
        super().__init__()
        self.timesteps = []

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        self.timesteps.append(t.tolist())
        return (torch.zeros_like(x),)


def test_denoiser_applies_the_consistency_boundary(full, lcm):
    unet = ZeroEps()
    x = torch.randn((2, 4, 2, 2), generator=torch.Generator().manual_seed(0))
    sigma = torch.stack([full.sigmas[519], full.sigmas[19]])
    out = LCMDenoiser(unet, lcm, "epsilon").x0(x, sigma, torch.zeros((2, 77, 8)))
    assert unet.timesteps == [[519, 19]]
    for row, t in enumerate((519, 19)):
        scaled = t * 10.0
        c_skip = 0.25 / (scaled**2 + 0.25)
        c_out = scaled / (scaled**2 + 0.25) ** 0.5
        torch.testing.assert_close(out[row], (c_out + c_skip) * x[row])  # zero eps: the x0 prediction is x
    plain = UNetDenoiser(ZeroEps(), full, "epsilon").x0(x, sigma, torch.zeros((2, 77, 8)))
    assert torch.equal(plain, x)


def test_lcm_through_the_service_is_deterministic_and_named(service):
    request = Txt2ImgRequest(prompt="a cat", seed=3, width=64, height=64, steps=4, sampler_name="LCM", cfg_scale=1.5)
    result = service.txt2img(request, save_images=False).result
    params = parse_infotext(result.infotexts[0])
    assert (params["Sampler"], params["Schedule type"]) == ("LCM", "Automatic")
    again = service.txt2img(request, save_images=False).result
    assert np.array_equal(np.asarray(result.images[0].image), np.asarray(again.images[0].image))
