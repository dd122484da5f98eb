"""txt2img through the generation service: determinism, seeds, files, infotext, stopping."""

from __future__ import annotations

import datetime
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.png_meta import read_infotext
from modules.core.rng import ImageRNG
from modules.service.settings import InvalidSetting, Settings

SMALL = dict(width=64, height=64, steps=6)


def pixels(image) -> np.ndarray:
    return np.asarray(image.image if hasattr(image, "image") else image)


@pytest.mark.parametrize("sampler", ["Euler a", "Euler", "DPM++ 2M", "DDIM"])
def test_same_request_twice_gives_identical_pixels(service, sampler):
    request = Txt2ImgRequest(prompt="a (red:1.2) cat", negative_prompt="blurry", sampler_name=sampler, seed=1234, **SMALL)
    first = service.txt2img(request, save_images=False).result.images[0]
    second = service.txt2img(request, save_images=False).result.images[0]
    assert np.array_equal(pixels(first), pixels(second))
    other = service.txt2img(Txt2ImgRequest(**{**request.__dict__, "seed": 1235}), save_images=False).result.images[0]
    assert not np.array_equal(pixels(first), pixels(other))


def test_batch_reproduces_single_images(service):
    """Image k of a batch uses seed+k and its own generator, so it is the image made alone.

    The noise is bit-identical; the U-Net's float arithmetic is not batch-invariant (CPU and GPU
    kernels round differently for different batch sizes, ~1e-6), so pixels may differ by a level.
    """
    batch = service.txt2img(Txt2ImgRequest(prompt="a cat", seed=100, batch_size=3, sampler_name="Euler a", **SMALL), save_images=False)
    assert [image.seed for image in batch.result.images] == [100, 101, 102]
    for image in batch.result.images:
        alone = service.txt2img(Txt2ImgRequest(prompt="a cat", seed=image.seed, sampler_name="Euler a", **SMALL), save_images=False)
        difference = np.abs(pixels(image).astype(int) - pixels(alone.result.images[0]).astype(int))
        assert difference.max() <= 2 and difference.mean() < 0.05
    together = ImageRNG((4, 8, 8), [100, 101, 102], torch.device("cpu"))
    first, second = together.next(), together.next()
    for index, seed in enumerate([100, 101, 102]):
        single = ImageRNG((4, 8, 8), [seed], torch.device("cpu"))
        assert torch.equal(single.next()[0], first[index]) and torch.equal(single.next()[0], second[index])


def test_batch_count_continues_seeds(service):
    outcome = service.txt2img(Txt2ImgRequest(prompt="a cat", seed=7, batch_size=2, n_iter=2, **SMALL), save_images=False)
    assert outcome.result.all_seeds == [7, 8, 9, 10]
    assert [parse_infotext(text)["Seed"] for text in outcome.result.infotexts] == ["7", "8", "9", "10"]


def test_saved_png_carries_parseable_infotext(service, data_dir):
    request = Txt2ImgRequest(prompt="a photo of a cat, 8k", negative_prompt="ugly, blurry", sampler_name="DPM++ 2M",
                             cfg_scale=6.5, seed=4321, **SMALL)
    outcome = service.txt2img(request, save_images=True)
    path = outcome.saved[0]
    day = datetime.date.today().isoformat()
    assert path.parent == data_dir / "outputs" / "txt2img-images" / day
    assert re.fullmatch(r"\d{5}-4321-a photo of a cat, 8k\.png", path.name)
    with Image.open(path) as image:
        text, _ = read_infotext(image)
        assert np.array_equal(np.asarray(image.convert("RGB")), pixels(outcome.result.images[0]))
    params = parse_infotext(text)
    sha = service.models.loaded.info.sha256
    assert params["Prompt"] == "a photo of a cat, 8k"
    assert params["Negative prompt"] == "ugly, blurry"
    assert (params["Steps"], params["Sampler"], params["Schedule type"]) == ("6", "DPM++ 2M", "Karras")
    assert (params["CFG scale"], params["Seed"], params["Size-1"], params["Size-2"]) == ("6.5", "4321", "64", "64")
    assert (params["Model hash"], params["Model"]) == (sha[:10], "tiny-sd1")
    assert text.splitlines()[-1].startswith("Steps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 4321")
    assert (data_dir / "params.txt").read_text() == text
    second = service.txt2img(request, save_images=True).saved[0]
    assert int(second.name[:5]) == int(path.name[:5]) + 1


def test_random_seed_is_recorded(service):
    outcome = service.txt2img(Txt2ImgRequest(prompt="x", seed=-1, **SMALL), save_images=False)
    seed = outcome.result.seed
    assert 0 <= seed < 4294967294
    assert parse_infotext(outcome.result.infotexts[0])["Seed"] == str(seed)


def test_interrupt_stops_and_does_not_save(service):
    calls = []

    def interrupt_at_step_two(snapshot):
        calls.append(snapshot.sampling_step)
        if snapshot.sampling_step == 2:
            service.interrupt()

    request = Txt2ImgRequest(prompt="x", seed=3, n_iter=3, width=64, height=64, steps=10)
    outcome = service.txt2img(request, save_images=True, on_progress=interrupt_at_step_two)
    assert outcome.result.interrupted
    assert len(outcome.result.images) == 1 and outcome.saved == [None]
    assert max(calls) == 2
    assert not list(service.paths.outputs.rglob("*.png"))


def test_override_settings_apply_to_one_job(service):
    request = Txt2ImgRequest(prompt="x", seed=3, **SMALL)
    overridden = service.txt2img(request, save_images=False, override_settings={"CLIP_stop_at_last_layers": 2})
    assert "Clip skip: 2" in overridden.result.infotexts[0]
    assert service.settings.get("CLIP_stop_at_last_layers") == 1
    plain = service.txt2img(request, save_images=False)
    assert "Clip skip" not in plain.result.infotexts[0]
    assert not np.array_equal(pixels(plain.result.images[0]), pixels(overridden.result.images[0]))
    with pytest.raises(InvalidSetting, match="CLIP_stop_at_last_layers"):
        service.txt2img(request, override_settings={"CLIP_stop_at_last_layers": 40})


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"width": 65}, "width", "multiple of 8"),
        ({"height": 16}, "height", "between 64 and 8192"),
        ({"steps": 0}, "steps", "between 1 and 500"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"cfg_scale": float("nan")}, "cfg_scale", "number"),
        ({"batch_size": 0}, "batch_size", "between 1 and 64"),
        ({"sampler_name": "Euler b"}, "sampler_name", "DPM++ 2M, DPM++ SDE, DPM++ 2M SDE, DPM++ 2M SDE Heun, DPM++ 2S a, DPM++ 3M SDE, Euler a, Euler, LMS, Heun, DPM2, DPM2 a, DPM fast, DPM adaptive, Restart, DDIM, DDIM CFG++, PLMS, UniPC, LCM"),
        ({"scheduler": "Wobbly"}, "scheduler", "Karras"),
        ({"prompt": None}, "prompt", "text"),
    ],
)
def test_invalid_requests_name_the_field_and_range(service, change, field, words):
    with pytest.raises(InvalidRequest) as error:
        service.txt2img(Txt2ImgRequest(**{**Txt2ImgRequest().__dict__, **change}))
    assert error.value.field == field and words in str(error.value)


def test_corrupt_config_is_kept_aside(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"CLIP_stop_at_last_layers": 2,')
    settings = Settings(config)
    assert settings.get("CLIP_stop_at_last_layers") == 1
    kept = list(tmp_path.glob("config.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"CLIP_stop_at_last_layers": 2,'
    settings.set("CLIP_stop_at_last_layers", 3)
    assert json.loads(config.read_text()) == {"CLIP_stop_at_last_layers": 3}
    assert kept[0].exists()


def test_settings_validate_and_keep_unknown_keys(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"eta_noise_seed_delta": "lots", "some_extension_key": [1, 2], "randn_source": "CPU"}))
    settings = Settings(config)
    assert settings.get("eta_noise_seed_delta") == 0  # wrong type ignored
    assert settings.get("randn_source") == "CPU"
    with pytest.raises(InvalidSetting, match="randn_source"):
        settings.set("randn_source", "quantum")
    settings.set("eta_noise_seed_delta", 31337)
    assert json.loads(config.read_text())["some_extension_key"] == [1, 2]
