"""Hires fix on the tiny checkpoint: the target size rule of §1.4 for every combination, every
upscaler, the second pass's seeds and infotext keys, the round trip through paste, and ✨."""

from __future__ import annotations

import numpy as np
import pytest

from modules.core.generation.hires import hires_target
from modules.core.generation.request import HIRES_UPSCALERS, InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext

SMALL = dict(prompt="a red cat", negative_prompt="blurry", seed=77, steps=3, width=96, height=64,
             sampler_name="Euler", enable_hr=True, hr_second_pass_steps=2)


def generate(service, **fields):
    return service.txt2img(Txt2ImgRequest(**{**SMALL, **fields}), save_images=False).result


@pytest.mark.parametrize(
    "width, height, scale, resize_x, resize_y, expected",
    [
        (512, 512, 2.0, 0, 0, (1024, 1024, 0, 0)),
        (512, 768, 1.5, 0, 0, (768, 1152, 0, 0)),
        (500, 300, 1.37, 0, 0, (685, 411, 0, 0)),  # int(), not rounding: 685.0, 411.0
        (512, 768, 2.0, 1024, 0, (1024, 1536, 0, 0)),  # one value: the other follows the aspect
        (512, 768, 2.0, 0, 1000, (666, 1000, 0, 0)),
        (512, 768, 2.0, 1024, 1024, (1024, 1536, 0, 64)),  # both: cover, then crop 512 px of height
        (768, 512, 2.0, 1024, 1024, (1536, 1024, 64, 0)),
        (512, 512, 2.0, 1000, 600, (1000, 1000, 0, 50)),
        (640, 512, 2.0, 1000, 1000, (1250, 1000, 31, 0)),  # truncation floors to whole latent columns
    ],
)
def test_target_size_rule(width, height, scale, resize_x, resize_y, expected):
    target = hires_target(width, height, scale, resize_x, resize_y)
    assert (target.width, target.height, target.truncate_x, target.truncate_y) == expected


@pytest.mark.parametrize(
    "fields, size",
    [
        (dict(hr_scale=2.0), (192, 128)),
        (dict(hr_scale=1.5), (144, 96)),
        (dict(hr_resize_x=144), (144, 96)),
        (dict(hr_resize_y=96), (144, 96)),
        (dict(hr_resize_x=128, hr_resize_y=128), (128, 128)),  # covered 192×128, centre-cropped in latent space
        (dict(hr_resize_x=128, hr_resize_y=64), (128, 64)),  # covered 128×85, 2 latent rows cut
    ],
)
def test_generated_size_follows_the_target_rule(service, fields, size):
    result = generate(service, **fields)
    assert result.images[0].image.size == size
    assert "Size: 96x64," in result.infotexts[0]  # Size is the first pass


@pytest.mark.parametrize("upscaler", HIRES_UPSCALERS)
def test_every_upscaler_runs_and_is_deterministic(service, upscaler):
    first = generate(service, hr_upscaler=upscaler)
    again = generate(service, hr_upscaler=upscaler)
    assert np.array_equal(np.asarray(first.images[0].image), np.asarray(again.images[0].image))
    assert parse_infotext(first.infotexts[0])["Hires upscaler"] == upscaler


def test_latent_modes_and_image_upscalers_give_different_pictures(service):
    pictures = {name: np.asarray(generate(service, hr_upscaler=name).images[0].image)
                for name in ("Latent", "Latent (nearest)", "Lanczos", "Nearest")}
    names = list(pictures)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.array_equal(pictures[a], pictures[b]), (a, b)


def test_infotext_keys_in_a1111_order(service):
    text = generate(service, hr_scale=2, denoising_strength=0.6, hr_sampler_name="DPM++ 2M",
                    hr_prompt="a blue cat").infotexts[0]
    line = text.split("\n")[-1]
    expected = ("Steps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 77, Size: 96x64, "
                "Model hash: ")
    assert line.startswith(expected)
    tail = line[line.index("Denoising strength"):]
    assert tail.startswith("Denoising strength: 0.6, Hires sampler: DPM++ 2M, Hires prompt: a blue cat, "
                           "Hires schedule type: Karras, Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent")


def test_same_sampler_and_prompt_add_no_hires_sampler_or_prompt_keys(service):
    text = generate(service, hr_prompt="a red cat").infotexts[0]
    for key in ("Hires sampler", "Hires prompt", "Hires schedule type", "Hires negative prompt"):
        assert key not in text
    assert "Hires resize: 144x0" in generate(service, hr_resize_x=144).infotexts[0]


def test_second_pass_changes_the_first_pass_and_uses_the_same_seeds(service):
    plain = service.txt2img(Txt2ImgRequest(**{**SMALL, "enable_hr": False}), save_images=False).result
    hires = generate(service)
    assert plain.images[0].image.size == (96, 64) and hires.images[0].image.size == (192, 128)
    batch = generate(service, batch_size=2)
    second = generate(service, seed=78)
    diff = np.abs(np.asarray(batch.images[1].image).astype(int) - np.asarray(second.images[0].image).astype(int))
    assert diff.max() <= 1


def test_infotext_round_trips_through_paste(service):
    result = generate(service, hr_resize_x=128, hr_resize_y=128, denoising_strength=0.55, hr_upscaler="Lanczos",
                      hr_sampler_name="DDIM", hr_negative_prompt="ugly")
    pasted = service.paste(result.infotexts[0]).fields
    request = Txt2ImgRequest(**{name: value for name, value in pasted.items() if name in Txt2ImgRequest.__dataclass_fields__})
    assert (request.enable_hr, request.hr_resize_x, request.hr_resize_y, request.denoising_strength) == (True, 128, 128, 0.55)
    assert (request.hr_upscaler, request.hr_sampler_name, request.hr_negative_prompt) == ("Lanczos", "DDIM", "ugly")
    again = service.txt2img(request, save_images=False).result
    assert again.infotexts[0] == result.infotexts[0]
    assert np.array_equal(np.asarray(again.images[0].image), np.asarray(result.images[0].image))


def test_an_infotext_without_hires_pastes_hires_off_only_with_denoising(service):
    plain = service.txt2img(Txt2ImgRequest(**{**SMALL, "enable_hr": False}), save_images=False).result
    assert "enable_hr" not in service.paste(plain.infotexts[0]).fields


def test_first_pass_size_of_old_infotexts_becomes_hires_resize(service):
    old = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 1024x768, Denoising strength: 0.7, First pass size: 0x0"
    fields = service.paste(old).fields
    assert (fields["width"], fields["height"]) == (640, 448)  # ≈512² pixels, rounded up to multiples of 64
    assert (fields["hr_resize_x"], fields["hr_resize_y"], fields["enable_hr"]) == (1024, 768, True)


def test_upscale_button_runs_only_the_second_pass_on_the_chosen_image(service):
    first = service.txt2img(Txt2ImgRequest(**{**SMALL, "enable_hr": False, "seed": 90, "batch_size": 2}),
                            save_images=False).result
    chosen = first.images[1]
    outcome = service.upscale_image(Txt2ImgRequest(**{**SMALL, "seed": -1}), chosen.image, chosen.infotext,
                                    save_images=False)
    upscaled = outcome.result
    assert upscaled.images[0].image.size == (192, 128)
    assert upscaled.all_seeds == [91]
    assert "Hires upscale: 2" in upscaled.infotexts[0]
    again = service.upscale_image(Txt2ImgRequest(**SMALL), chosen.image, chosen.infotext, save_images=False).result
    assert np.array_equal(np.asarray(again.images[0].image), np.asarray(upscaled.images[0].image))
    other = service.upscale_image(Txt2ImgRequest(**SMALL), first.images[0].image, first.images[0].infotext,
                                  save_images=False).result
    assert not np.array_equal(np.asarray(other.images[0].image), np.asarray(upscaled.images[0].image))


def test_bad_hires_fields_name_the_field(service):
    with pytest.raises(InvalidRequest, match="hr_upscaler"):
        generate(service, hr_upscaler="ESRGAN_4x")
    with pytest.raises(InvalidRequest, match="hr_scale"):
        generate(service, hr_scale=0.5)
    with pytest.raises(InvalidRequest, match="hr_sampler_name"):
        generate(service, hr_sampler_name="Nope")
    with pytest.raises(InvalidRequest, match="hr_second_pass_steps"):
        generate(service, hr_sampler_name="UniPC", hr_second_pass_steps=2)


def test_hires_checkpoint_runs_the_second_pass_on_another_model(service, data_dir):
    from tests.fixtures.tiny_sd import make_tiny_checkpoint

    make_tiny_checkpoint(data_dir / "models" / "Stable-diffusion", "other.safetensors", seed=5)
    service.models.refresh()
    service.select_checkpoint("tiny-sd1")
    plain = generate(service, batch_size=2, n_iter=2)
    other = service.models.find("other")
    switched = generate(service, batch_size=2, n_iter=2, hr_checkpoint_name=other.title)
    params = parse_infotext(switched.infotexts[0])
    other = service.models.find("other")  # hashed now
    assert other.shorthash and params["Hires checkpoint"] == f"other [{other.shorthash}]"
    assert params["Model"] == "tiny-sd1"  # the first pass's model names the picture
    for a, b in zip(plain.images, switched.images):
        assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))
    # Every batch's first pass ran on the first model: the second batch equals the first one's seeds + 2.
    again = generate(service, seed=79, batch_size=2, hr_checkpoint_name=other.title)
    assert np.abs(np.asarray(again.images[0].image).astype(int)
                  - np.asarray(switched.images[2].image).astype(int)).max() <= 1
    assert service.settings.get("sd_model_checkpoint") == service.models.find("tiny-sd1").title  # still the model
    pasted = service.paste(switched.infotexts[0]).fields
    assert service.models.find(pasted["hr_checkpoint_name"]).path == other.path
    with pytest.raises(InvalidRequest, match="hr_checkpoint_name"):
        generate(service, hr_checkpoint_name="missing")
