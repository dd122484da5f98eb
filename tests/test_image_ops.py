"""The picture-side steps of img2img: A1111's resize modes, crop-region arithmetic, mask blur,
masked-content fill and the final overlay, checked on small synthetic pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.core.generation import image_ops
from modules.core.generation.img2img import binary_mask


def striped(width, height) -> Image.Image:
    """Red left half, blue right half, a green top row and a yellow bottom row: edges are easy to find."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    array[0] = (0, 255, 0)
    array[-1] = (255, 255, 0)
    return Image.fromarray(array)


def test_just_resize_stretches_to_the_size():
    out = image_ops.resize_image(0, striped(100, 50), 64, 64)
    assert out.size == (64, 64)
    assert tuple(np.asarray(out)[32, 2]) == (255, 0, 0) and tuple(np.asarray(out)[32, 61]) == (0, 0, 255)


def test_crop_and_resize_covers_and_cuts_the_sides():
    out = np.asarray(image_ops.resize_image(1, striped(128, 64), 64, 64))
    # The 128×64 picture is scaled to 128×64 (height fits) and its middle 64 columns kept.
    assert out.shape == (64, 64, 3)
    assert tuple(out[32, 0]) == (255, 0, 0) and tuple(out[32, 63]) == (0, 0, 255)
    assert tuple(out[0, 10]) == (0, 255, 0)  # the top row survives: nothing cut vertically


def test_resize_and_fill_fits_and_stretches_the_edges_into_the_bars():
    out = np.asarray(image_ops.resize_image(2, striped(128, 64), 64, 64))
    # Fitted 64×32 in the middle (rows 16–47); the 16-row bars are the edge rows stretched.
    top, bottom = out[:16].astype(int), out[48:].astype(int)
    assert (top == top[0]).all() and (bottom == bottom[0]).all()
    assert top[0, 10, 1] > 100 and top[0, 10, 2] < 50  # green, from the green top row
    assert bottom[0, 10, 0] > 100 and bottom[0, 10, 1] > 100  # yellow, from the yellow bottom row
    tall = np.asarray(image_ops.resize_image(2, striped(32, 64), 64, 64))
    assert tuple(tall[32, 2]) == (255, 0, 0) and tuple(tall[32, 61]) == (0, 0, 255)  # side bars from the edges


def test_crop_region_and_its_expansion_to_the_processing_aspect():
    mask = Image.new("L", (200, 100), 0)
    ImageDraw.Draw(mask).rectangle((50, 40, 69, 49), fill=255)
    assert image_ops.crop_region(mask) == (50, 40, 70, 50)
    assert image_ops.crop_region(mask, 10) == (40, 30, 80, 60)
    assert image_ops.crop_region(mask, 100) == (0, 0, 170, 100)  # kept inside the picture
    assert image_ops.crop_region(Image.new("L", (10, 10), 0)) is None
    # 40×30 box, square processing size: widened to 40×40 around its centre.
    assert image_ops.expand_crop_region((40, 30, 80, 60), 512, 512, 200, 100) == (40, 25, 80, 65)
    # Near the edge the box is shifted back in rather than cut.
    assert image_ops.expand_crop_region((0, 0, 40, 10), 512, 512, 200, 100) == (0, 0, 40, 40)
    assert image_ops.expand_crop_region((150, 90, 190, 100), 512, 512, 200, 100) == (150, 60, 190, 100)


def test_mask_blur_spreads_symmetrically_and_zero_keeps_the_mask():
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    blurred = np.asarray(image_ops.blur_mask(mask, 4)).astype(int)
    assert blurred[31, 31] > 200 and 0 < blurred[31, 20] < 128 and blurred[31, 5] == 0
    assert np.array_equal(blurred, blurred[::-1, ::-1])  # a centred square stays symmetric
    assert np.array_equal(np.asarray(image_ops.blur_mask(mask, 0)), np.asarray(mask))


def test_fill_paints_the_masked_area_from_its_surroundings():
    picture = Image.new("RGB", (64, 64), (10, 200, 30))
    ImageDraw.Draw(picture).rectangle((16, 16, 47, 47), fill=(255, 255, 255))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    filled = np.asarray(image_ops.fill(picture, mask)).astype(int)
    assert np.abs(filled[32, 32] - (10, 200, 30)).max() < 10  # the white square is gone
    assert tuple(filled[2, 2]) == (10, 200, 30)


def test_overlay_puts_the_original_back_outside_the_mask():
    original = striped(64, 64)
    generated = Image.new("RGB", (64, 64), (1, 2, 3))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 20, 20), fill=255)
    out = np.asarray(image_ops.apply_overlay(generated, None, image_ops.overlay_image(original, mask)))
    assert tuple(out[15, 15]) == (1, 2, 3)
    assert tuple(out[40, 40]) == tuple(np.asarray(original)[40, 40])


def test_overlay_uncrops_an_only_masked_result_into_place():
    original = striped(100, 80)
    mask = Image.new("L", (100, 80), 0)
    ImageDraw.Draw(mask).rectangle((40, 30, 59, 49), fill=255)
    generated = Image.new("RGB", (64, 64), (1, 2, 3))
    out = np.asarray(image_ops.apply_overlay(generated, (30, 20, 40, 40), image_ops.overlay_image(original, mask)))
    assert out.shape == (80, 100, 3)
    assert tuple(out[40, 50]) == (1, 2, 3)
    assert tuple(out[5, 5]) == tuple(np.asarray(original)[5, 5])


@pytest.mark.parametrize("upscaler", ["None", "Lanczos", "Nearest"])
def test_upscale_reaches_the_scaled_size_rounded_to_8(upscaler):
    assert image_ops.upscale(striped(50, 30), 2.5, upscaler).size == (120, 72)


def test_nearest_upscale_keeps_hard_edges():
    out = np.asarray(image_ops.upscale(striped(16, 16), 2, "Nearest"))
    assert set(map(tuple, out[10])) == {(255, 0, 0), (0, 0, 255)}


def test_unknown_upscaler_is_an_error():
    with pytest.raises(ValueError, match="Lanczos"):
        image_ops.upscale(striped(8, 8), 2, "ESRGAN")


def test_binary_mask_reads_alpha_only_when_there_is_transparency():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 0, 200))
    rgba.putpixel((2, 2), (255, 255, 255, 100))
    mask = np.asarray(binary_mask(rgba))
    assert mask[1, 1] == 255 and mask[2, 2] == 0 and mask[0, 0] == 0
    opaque = Image.new("RGBA", (8, 8), (255, 255, 255, 255))
    assert np.asarray(binary_mask(opaque)).min() == 255
