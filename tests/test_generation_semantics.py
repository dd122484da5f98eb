"""A1111 generation semantics through the whole txt2img path on the tiny checkpoint: every sampler
and schedule type runs and is deterministic, seeds and noise behave as §4 says, and the infotext
carries the keys those choices imply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.rng import ImageRNG
from modules.core.rng_philox import PhiloxGenerator
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS

SMALL = dict(width=64, height=64, steps=4)


def generate(service, overrides=None, **fields):
    request = Txt2ImgRequest(**{"prompt": "a red cat", "negative_prompt": "blurry", "seed": 77, **SMALL, **fields})
    return service.txt2img(request, save_images=False, override_settings=overrides).result


def pixels(result, index=0) -> np.ndarray:
    return np.asarray(result.images[index].image)


@pytest.mark.parametrize("name", [sampler.name for sampler in SAMPLERS])
def test_every_sampler_runs_on_the_tiny_model_and_is_deterministic(service, name):
    first = generate(service, sampler_name=name)
    again = generate(service, sampler_name=name)
    assert np.array_equal(pixels(first), pixels(again))
    params = parse_infotext(first.infotexts[0])
    assert params["Sampler"] == name
    other_seed = generate(service, sampler_name=name, seed=78)
    assert not np.array_equal(pixels(first), pixels(other_seed))


@pytest.mark.parametrize("scheduler", [s.label for s in SCHEDULERS])
def test_every_schedule_type_runs_and_is_named_in_the_infotext(service, scheduler):
    result = generate(service, sampler_name="Euler", scheduler=scheduler)
    params = parse_infotext(result.infotexts[0])
    assert params["Schedule type"] == scheduler
    assert np.array_equal(pixels(result), pixels(generate(service, sampler_name="Euler", scheduler=scheduler)))


def test_schedule_types_give_different_images(service):
    images = {label: pixels(generate(service, sampler_name="Euler", scheduler=label))
              for label in ("Uniform", "Karras", "Exponential", "Beta")}
    labels = list(images)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert not np.array_equal(images[a], images[b]), (a, b)


def test_automatic_resolves_to_the_samplers_default_in_the_infotext(service):
    assert parse_infotext(generate(service, sampler_name="DPM++ 2M").infotexts[0])["Schedule type"] == "Karras"
    assert parse_infotext(generate(service, sampler_name="DPM++ 2M SDE").infotexts[0])["Schedule type"] == "Exponential"
    assert parse_infotext(generate(service, sampler_name="Euler a").infotexts[0])["Schedule type"] == "Automatic"


def test_legacy_combined_name_gives_the_same_image_as_the_pair(service):
    legacy = generate(service, sampler_name="DPM++ 2M SDE Karras")
    pair = generate(service, sampler_name="DPM++ 2M SDE", scheduler="Karras")
    assert np.array_equal(pixels(legacy), pixels(pair))
    params = parse_infotext(legacy.infotexts[0])
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M SDE", "Karras")


def test_variation_strength_zero_is_the_plain_seed(service):
    plain = generate(service, sampler_name="Euler a")
    varied = generate(service, sampler_name="Euler a", subseed=999, subseed_strength=0.0)
    assert np.array_equal(pixels(plain), pixels(varied))
    assert "Variation seed" not in varied.infotexts[0]
    some = generate(service, sampler_name="Euler a", subseed=999, subseed_strength=0.3)
    assert not np.array_equal(pixels(plain), pixels(some))
    params = parse_infotext(some.infotexts[0])
    assert (params["Variation seed"], params["Variation seed strength"]) == ("999", "0.3")


def test_variation_seed_gives_every_image_the_same_seed_and_its_own_subseed(service):
    result = generate(service, sampler_name="Euler", subseed=500, subseed_strength=0.5, batch_size=2)
    assert result.all_seeds == [77, 77] and result.all_subseeds == [500, 501]


def test_seed_resize_from_is_recorded_and_changes_the_noise(service):
    plain = generate(service, sampler_name="Euler")
    resized = generate(service, sampler_name="Euler", seed_resize_from_w=32, seed_resize_from_h=32)
    assert "Seed resize from: 32x32" in resized.infotexts[0]
    assert not np.array_equal(pixels(plain), pixels(resized))


def test_ensd_changes_ancestral_samplers_only(service):
    """ENSD re-seeds the per-image generators after the initial latent: the first draw is unchanged,
    ancestral (uses_ensd) samplers change, deterministic ones do not, and only the former say so."""
    ensd = {"eta_noise_seed_delta": 31337}
    for name in ("Euler a", "DPM++ 2S a", "DPM2 a"):
        plain, reseeded = generate(service, sampler_name=name), generate(service, ensd, sampler_name=name)
        assert not np.array_equal(pixels(plain), pixels(reseeded)), name
        assert parse_infotext(reseeded.infotexts[0])["ENSD"] == "31337"
    for name in ("Euler", "DPM++ 2M", "DDIM", "DPM++ 2M SDE"):
        plain, reseeded = generate(service, sampler_name=name), generate(service, ensd, sampler_name=name)
        assert np.array_equal(pixels(plain), pixels(reseeded)), name
        assert "ENSD" not in reseeded.infotexts[0]
    # eta 0 makes an ancestral sampler deterministic, and A1111 then leaves ENSD out
    no_eta = generate(service, {**ensd, "eta_ancestral": 0.0}, sampler_name="Euler a")
    assert "ENSD" not in no_eta.infotexts[0] and "Eta: 0.0" in no_eta.infotexts[0]

    with_delta = ImageRNG((4, 8, 8), [77], torch.device("cpu"), eta_noise_seed_delta=31337)
    without = ImageRNG((4, 8, 8), [77], torch.device("cpu"))
    assert torch.equal(with_delta.next(), without.next())
    assert not torch.equal(with_delta.next(), without.next())


def test_nv_source_draws_cudas_philox_stream_and_is_recorded(service):
    rng = ImageRNG((4, 8, 8), [77, 78], torch.device("cpu"), source="NV")
    first, second = rng.next(), rng.next()
    for index, seed in enumerate([77, 78]):
        stream = PhiloxGenerator(seed)
        assert torch.equal(first[index], torch.from_numpy(stream.randn((4, 8, 8))))
        assert torch.equal(second[index], torch.from_numpy(stream.randn((4, 8, 8))))
    nv = generate(service, {"randn_source": "NV"}, sampler_name="Euler a")
    cpu = generate(service, {"randn_source": "CPU"}, sampler_name="Euler a")
    gpu = generate(service, sampler_name="Euler a")
    assert parse_infotext(nv.infotexts[0])["RNG"] == "NV"
    assert parse_infotext(cpu.infotexts[0])["RNG"] == "CPU"
    assert "RNG" not in gpu.infotexts[0]
    assert not np.array_equal(pixels(nv), pixels(cpu))
    assert np.array_equal(pixels(nv), pixels(generate(service, {"randn_source": "NV"}, sampler_name="Euler a")))


def test_unknown_rng_source_is_refused():
    with pytest.raises(ValueError, match="RNG source"):
        ImageRNG((4, 8, 8), [1], torch.device("cpu"), source="TPU")


def test_sde_sampler_batch_equals_singles(service):
    """Brownian noise comes from one tree per image seeded with that image's seed."""
    batch = generate(service, sampler_name="DPM++ 2M SDE", batch_size=2)
    for index, seed in enumerate(batch.all_seeds):
        alone = generate(service, sampler_name="DPM++ 2M SDE", seed=seed)
        difference = np.abs(pixels(batch, index).astype(int) - pixels(alone).astype(int))
        assert difference.max() <= 2


def test_sampler_settings_are_written_where_a1111_writes_them(service):
    churned = generate(service, {"s_churn": 0.5, "s_noise": 1.003}, sampler_name="Euler")
    params = parse_infotext(churned.infotexts[0])
    assert (params["Sigma churn"], params["Sigma noise"]) == ("0.5", "1.003")
    assert not np.array_equal(pixels(churned), pixels(generate(service, sampler_name="Euler")))
    # Euler a takes no churn settings: nothing written, nothing changed
    ancestral = generate(service, {"s_churn": 0.5, "s_noise": 1.003}, sampler_name="Euler a")
    assert "Sigma" not in ancestral.infotexts[0]
    assert np.array_equal(pixels(ancestral), pixels(generate(service, sampler_name="Euler a")))

    beta = parse_infotext(generate(service, {"beta_dist_alpha": 0.5}, sampler_name="Euler", scheduler="Beta").infotexts[0])
    assert (beta["Beta schedule alpha"], beta["Beta schedule beta"]) == ("0.5", "0.6")
    text = generate(service, {"sigma_max": 10.0, "rho": 5.0}, sampler_name="Euler", scheduler="Karras").infotexts[0]
    ranged = parse_infotext(text)
    assert (ranged["Schedule max sigma"], ranged["Schedule rho"]) == ("10.0", "5.0")
    assert "Schedule min sigma" not in text
    # without a schedule function (Euler + Automatic = the model's own timesteps) they do not apply
    uniform = generate(service, {"sigma_max": 10.0, "rho": 5.0}, sampler_name="Euler")
    assert "Schedule" not in uniform.infotexts[0].replace("Schedule type", "")
    assert np.array_equal(pixels(uniform), pixels(generate(service, sampler_name="Euler")))


def test_discard_penultimate_setting(service):
    plain = generate(service, sampler_name="Euler")
    discarded = generate(service, {"always_discard_next_to_last_sigma": True}, sampler_name="Euler")
    assert parse_infotext(discarded.infotexts[0])["Discard penultimate sigma"] == "True"
    assert not np.array_equal(pixels(plain), pixels(discarded))


def test_unipc_settings_change_the_image_and_order_above_steps_is_refused(service):
    default = generate(service, sampler_name="UniPC", steps=5)
    bh2 = generate(service, {"uni_pc_variant": "bh2"}, sampler_name="UniPC", steps=5)
    assert not np.array_equal(pixels(default), pixels(bh2))
    with pytest.raises(InvalidRequest, match="steps.*UniPC"):
        generate(service, {"uni_pc_order": 5}, sampler_name="UniPC", steps=3)


def test_second_order_samplers_double_the_prompt_schedule(service):
    """A1111 parses prompt schedules over 2×steps for second-order samplers (they call the model
    about twice per step), so with Heun at 4 steps ``[cat:dog:0.5]`` switches where the absolute
    ``[cat:dog:4]`` does, not where ``[cat:dog:2]`` does."""
    def heun(prompt):
        return pixels(generate(service, sampler_name="Heun", prompt=prompt))

    fractional = heun("a [cat:dog:0.5]")
    assert np.array_equal(fractional, heun("a [cat:dog:4]"))
    assert not np.array_equal(fractional, heun("a [cat:dog:2]"))
    # Euler (first order) over 4 steps: 0.5 is step 2
    euler = pixels(generate(service, sampler_name="Euler", prompt="a [cat:dog:0.5]"))
    assert np.array_equal(euler, pixels(generate(service, sampler_name="Euler", prompt="a [cat:dog:2]")))
