"""img2img, sketch and inpainting through the service on the tiny checkpoint: every resize mode and
masked-content mode runs; denoising 0 gives the input back (up to the VAE round trip); runs are
reproducible; the area outside the (blurred) mask is untouched, measured pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.core.generation import image_ops
from modules.core.generation.request import RESIZE_MODES, Img2ImgRequest, InvalidRequest
from modules.core.infotext import parse_infotext

SMALL = dict(prompt="a red cat", negative_prompt="blurry", seed=77, steps=4, width=64, height=64,
             sampler_name="Euler")


def picture(width=64, height=64, seed=0) -> Image.Image:
    """A smooth colourful picture (a gradient plus a disc), not noise, so resizes behave like photos."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), np.full_like(x, 96 + seed)], -1)
    image = Image.fromarray(rgb.astype(np.uint8))
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(200, 40, 40))
    return image


def box_mask(width=64, height=64, box=(16, 16, 40, 40)) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def run(service, **fields):
    request = Img2ImgRequest(**{**SMALL, "init_images": (picture(),), **fields})
    return service.img2img(request, save_images=False).result


def pixels(result, index=0) -> np.ndarray:
    return np.asarray(result.images[index].image).astype(int)


def test_same_seed_twice_is_bit_identical_and_another_seed_differs(service):
    first, again = run(service), run(service)
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(run(service, seed=78)))


def test_denoising_zero_returns_the_input_through_the_vae(service):
    from modules.core.generation.job import decode_latents, encode_images, image_tensor

    source = picture()
    result = run(service, init_images=(source,), denoising_strength=0.0)
    model = service.models.loaded.model
    round_trip = np.asarray(decode_latents(model, encode_images(model, image_tensor([source])))[0]).astype(int)
    assert np.array_equal(pixels(result), round_trip)
    assert not np.array_equal(pixels(run(service, denoising_strength=0.5)), round_trip)


def test_strength_changes_the_picture_more_as_it_grows(service):
    base = pixels(run(service, denoising_strength=0.0))
    small = np.abs(pixels(run(service, denoising_strength=0.3)) - base).mean()
    large = np.abs(pixels(run(service, denoising_strength=0.9)) - base).mean()
    assert 0 < small < large


@pytest.mark.parametrize("mode", range(len(RESIZE_MODES)))
def test_every_resize_mode_runs_to_the_requested_size(service, mode):
    result = run(service, init_images=(picture(96, 48),), resize_mode=mode, width=64, height=64)
    assert result.images[0].image.size == (64, 64)
    assert parse_infotext(result.infotexts[0])["Denoising strength"] == "0.75"


def test_resize_modes_differ_from_each_other(service):
    images = [pixels(run(service, init_images=(picture(96, 48),), resize_mode=mode, denoising_strength=0.2))
              for mode in range(len(RESIZE_MODES))]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j]), (RESIZE_MODES[i], RESIZE_MODES[j])


def unchanged_outside(result_image: Image.Image, source: Image.Image, keep: np.ndarray) -> bool:
    out, src = np.asarray(result_image).astype(int), np.asarray(source).astype(int)
    return np.array_equal(out[keep], src[keep])


@pytest.mark.parametrize("fill", range(4))
@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_leaves_pixels_outside_the_blurred_mask_unchanged(service, fill, full_res):
    source, mask = picture(), box_mask()
    result = run(service, init_images=(source,), mask=mask, mask_blur=4, inpainting_fill=fill,
                 inpaint_full_res=full_res, inpaint_full_res_padding=8, denoising_strength=0.9)
    blurred = np.asarray(image_ops.blur_mask(mask, 4))
    keep = blurred == 0
    assert keep.sum() > 1000  # most of the picture is outside the mask
    assert unchanged_outside(result.images[0].image, source, keep)
    inside = ~keep
    changed = np.abs(pixels(result)[inside] - np.asarray(source).astype(int)[inside]).mean()
    assert changed > 2  # and the masked area was repainted
    params = parse_infotext(result.infotexts[0])
    assert params["Mask blur"] == "4"
    assert params["Masked content"] == ["fill", "original", "latent noise", "latent nothing"][fill]
    assert params["Inpaint area"] == ("Only masked" if full_res else "Whole picture")


def test_inpaint_not_masked_keeps_the_masked_area_instead(service):
    source, mask = picture(), box_mask()
    result = run(service, init_images=(source,), mask=mask, mask_blur=0, inpainting_mask_invert=1)
    inside = np.asarray(mask) == 255
    assert unchanged_outside(result.images[0].image, source, inside)
    assert parse_infotext(result.infotexts[0])["Mask mode"] == "Inpaint not masked"


def test_only_masked_returns_the_original_size_and_records_the_padding(service):
    source = picture(96, 80)
    mask = box_mask(96, 80, (60, 50, 80, 70))
    result = run(service, init_images=(source,), mask=mask, inpaint_full_res=True, inpaint_full_res_padding=12)
    assert result.images[0].image.size == (96, 80)
    params = parse_infotext(result.infotexts[0])
    assert params["Masked area padding"] == "12"
    keep = np.asarray(image_ops.blur_mask(mask, 4)) == 0
    assert unchanged_outside(result.images[0].image, source, keep)


def test_an_rgba_mask_with_transparency_uses_its_alpha(service):
    source = picture()
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((16, 16, 40, 40), fill=(255, 255, 255, 255))
    from_alpha = run(service, init_images=(source,), mask=rgba, mask_blur=0)
    from_grey = run(service, init_images=(source,), mask=box_mask(), mask_blur=0)
    assert np.array_equal(pixels(from_alpha), pixels(from_grey))


def test_noise_multiplier_changes_the_picture_and_is_recorded(service):
    plain = run(service)
    lower = run(service, initial_noise_multiplier=0.5)
    assert not np.array_equal(pixels(plain), pixels(lower))
    assert parse_infotext(lower.infotexts[0])["Noise multiplier"] == "0.5"
    assert "Noise multiplier" not in plain.infotexts[0]


def test_fix_steps_setting_runs_exactly_the_requested_steps(service):
    counted = []
    service.img2img(Img2ImgRequest(**{**SMALL, "init_images": (picture(),), "denoising_strength": 0.5, "steps": 6}),
                    save_images=False, on_progress=lambda s: counted.append((s.sampling_step, s.sampling_steps)))
    service.settings.set("img2img_fix_steps", True)
    fixed = []
    service.img2img(Img2ImgRequest(**{**SMALL, "init_images": (picture(),), "denoising_strength": 0.5, "steps": 6}),
                    save_images=False, on_progress=lambda s: fixed.append((s.sampling_step, s.sampling_steps)))
    assert max(counted) == (4, 4)  # int(0.5 · 6) + 1 steps, as A1111, and the progress bar knows it
    assert max(fixed) == (6, 6)


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS", "UniPC", "DPM++ 2M SDE", "DPM adaptive", "LCM"])
def test_other_sampler_kinds_run_img2img_and_inpainting(service, sampler):
    result = run(service, sampler_name=sampler, mask=box_mask(), steps=6)
    again = run(service, sampler_name=sampler, mask=box_mask(), steps=6)
    assert np.array_equal(pixels(result), pixels(again))
    keep = np.asarray(image_ops.blur_mask(box_mask(), 4)) == 0
    assert unchanged_outside(result.images[0].image, picture(), keep)


def test_batches_reproduce_single_images(service):
    batch = service.img2img(Img2ImgRequest(**{**SMALL, "init_images": (picture(),), "batch_size": 2, "seed": 5}),
                            save_images=False).result
    second = run(service, seed=6)
    assert np.abs(pixels(batch, 1) - pixels(second)).max() <= 1


def test_bad_requests_name_the_field(service):
    with pytest.raises(InvalidRequest, match="init_images"):
        service.img2img(Img2ImgRequest(**SMALL), save_images=False)
    with pytest.raises(InvalidRequest, match="denoising_strength"):
        run(service, denoising_strength=1.5)
    with pytest.raises(InvalidRequest, match="inpainting_fill"):
        run(service, inpainting_fill=4)
    with pytest.raises(InvalidRequest, match="resize_mode"):
        run(service, resize_mode=7)


@pytest.fixture
def inpainting_service(service, data_dir):
    from tests.fixtures.tiny_sd import make_tiny_checkpoint

    make_tiny_checkpoint(data_dir / "models" / "Stable-diffusion", "tiny-inpainting.safetensors", seed=3, in_channels=9)
    service.models.refresh()
    service.select_checkpoint("tiny-inpainting")
    return service


def test_inpainting_model_gets_mask_and_masked_picture_channels(inpainting_service):
    service = inpainting_service
    assert service.models.loaded.model.unet.config.in_channels == 9
    source, mask = picture(), box_mask()
    result = run(service, init_images=(source,), mask=mask, mask_blur=0)
    keep = np.asarray(mask) == 0
    assert unchanged_outside(result.images[0].image, source, keep)
    params = parse_infotext(result.infotexts[0])
    assert params["Conditional mask weight"] == "1.0"
    # The conditioning is really used: another mask weight (setting) changes the repainted area.
    service.settings.set("inpainting_mask_weight", 0.5)
    half = run(service, init_images=(source,), mask=mask, mask_blur=0)
    assert not np.array_equal(pixels(result), pixels(half))
    assert parse_infotext(half.infotexts[0])["Conditional mask weight"] == "0.5"


def test_txt2img_and_hires_with_an_inpainting_model(inpainting_service):
    from modules.core.generation.request import Txt2ImgRequest

    service = inpainting_service
    request = Txt2ImgRequest(prompt="a cat", seed=4, steps=3, width=64, height=64, sampler_name="Euler")
    first = service.txt2img(request, save_images=False).result
    again = service.txt2img(request, save_images=False).result
    assert np.array_equal(pixels(first), pixels(again))
    hires = service.txt2img(Txt2ImgRequest(**{**request.__dict__, "enable_hr": True, "hr_scale": 1.5,
                                              "hr_upscaler": "Lanczos", "hr_second_pass_steps": 2}),
                            save_images=False).result
    assert hires.images[0].image.size == (96, 96)
