"""The outpainting scripts: "Outpainting mk2" (A1111's ``scripts/outpainting_mk_2.py``) and "Poor
man's outpainting" (``scripts/poor_mans_outpainting.py``). Both grow the canvas (to the next
multiple of 64 along each axis that grows) and inpaint the new border with the original kept.

mk2 grows one side at a time: the new strip is first filled with "matched noise" (random noise
shaped in frequency space like the existing picture and histogram-matched to its colours), then a
processing-size window over that side is inpainted. Poor man's pastes the picture on a black
canvas, cuts it into overlapping tiles of the processing size and inpaints every tile that reaches
into the new border.

The masks are blurred here, per axis, before they reach img2img (which then blurs nothing): mk2
blurs only along the axes it grows, and both scripts may ask for more blur (up to 4 × 64) than a
request's ``mask_blur`` allows. The result is what img2img's own blur of the same mask would give.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from modules.core.generation import image_ops
from modules.core.grid import image_grid
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import CheckboxGroup, Control, Radio, Script, Slider
from modules.service.scripts.sd_upscale import combine_grid, split_grid

DIRECTIONS = ("left", "right", "up", "down")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
MK2_INFO_HTML = ('<p style="margin-bottom:0.75em">Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, '
                 'Denoising strength: 0.8</p>')
NOISE_SEED = 0  # A1111 draws the matched noise from a fixed seed: the picture depends on the job's seed alone


def outpaint_margins(width: int, height: int, pixels: int, directions) -> tuple[int, int, int, int]:
    """(left, right, up, down): ``pixels`` on each chosen side, then shared out so the grown canvas
    is the next multiple of 64 (the first side of an axis gets its share rounded down)."""
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown outpainting direction {sorted(unknown)}; allowed: {', '.join(DIRECTIONS)}")
    left, right, up, down = (pixels if side in directions else 0 for side in DIRECTIONS)
    target_w = math.ceil((width + left + right) / 64) * 64
    target_h = math.ceil((height + up + down) / 64) * 64
    if left > 0:
        left = left * (target_w - width) // (left + right)
    if right > 0:
        right = target_w - width - left
    if up > 0:
        up = up * (target_h - height) // (up + down)
    if down > 0:
        down = target_h - height - up
    return left, right, up, down


def _keep_box(mask: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Paint the kept box black (corners inclusive, as PIL draws). A box turned inside out (a
    processing window narrower than the new strip plus its margin) keeps nothing, where Pillow
    would refuse to draw it."""
    if box[2] >= box[0] and box[3] >= box[1]:
        ImageDraw.Draw(mask).rectangle(box, fill="black")


def _blurred(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    return image_ops.blur_mask(mask, blur_x, blur_y) if blur_x > 0 or blur_y > 0 else mask


def _blur_infotext(p: Processing, blur_x: float, blur_y: float) -> None:
    """img2img's "Mask blur" key: written when anything is blurred, and only when both axes agree."""
    if (blur_x > 0 or blur_y > 0) and blur_x == blur_y:
        p.extra_generation_params["Mask blur"] = blur_x


# -- matched noise ------------------------------------------------------------------------------


def _fft2(data: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D FFT per channel with the spectrum centred (shift before and after)."""
    shifted = np.fft.fftshift(data, axes=(0, 1))
    return np.fft.ifftshift(np.fft.fft2(shifted, axes=(0, 1), norm="ortho"), axes=(0, 1))


def _ifft2(data: np.ndarray) -> np.ndarray:
    shifted = np.fft.fftshift(data, axes=(0, 1))
    return np.fft.ifftshift(np.fft.ifft2(shifted, axes=(0, 1), norm="ortho"), axes=(0, 1))


def _falloff_window(rows: int, cols: int) -> np.ndarray:
    """A 1/((x²+1)(y²+1)) bump over the (aspect-scaled) [-1, 1) square: the low-pass the starting noise gets."""
    shortest = min(rows, cols)
    u = (np.arange(rows) / rows * 2.0 - 1.0) * (rows / shortest)
    v = (np.arange(cols) / cols * 2.0 - 1.0) * (cols / shortest)
    return 1.0 / np.outer(u**2 + 1.0, v**2 + 1.0)


def _match_histogram(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``source`` values so their distribution follows ``reference``'s (skimage's
    ``match_histograms`` for float data: interpolate the reference quantiles at the source's)."""
    values, inverse, counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    return np.interp(quantiles, ref_quantiles, ref_values)[inverse].reshape(source.shape)


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float = 1.0, color_variation: float = 0.05) -> np.ndarray:
    """Fill the masked part of ``image`` (H×W×3 floats in [0, 1]; ``mask`` the same shape, 1 = new)
    with noise whose spectrum follows the kept part's and whose colours match its histogram.
    ``noise_q`` is the fall-off exponent applied to the picture's spectrum (lower keeps more detail)."""
    rows, cols, channels = image.shape
    grey_mask = mask.sum(axis=2) / 3.0
    to_fill = grey_mask > 1e-6
    reference = grey_mask < 1e-3

    windowed = image * (1.0 - grey_mask[..., None])
    peak = windowed.max()
    if peak > 0:
        windowed /= peak
    windowed += image.mean() * mask  # the mean colour in the hole suits the FFT better than black
    picture_fft = _fft2(windowed)
    magnitude = np.abs(picture_fft)
    phase = np.divide(picture_fft, magnitude, out=np.zeros_like(picture_fft), where=magnitude > 0)

    generator = np.random.default_rng(NOISE_SEED)
    noise = generator.random((rows, cols, channels))
    grey = noise.sum(axis=2, keepdims=True) / 3.0
    noise = noise * color_variation + (1.0 - color_variation) * grey
    noise = np.real(_ifft2(_fft2(noise) * _falloff_window(rows, cols)[..., None]))
    shaped = np.real(_ifft2(np.abs(_fft2(noise)) ** 2 * magnitude**noise_q * phase))
    shaped -= shaped.min()
    top = shaped.max()
    if top > 0:
        shaped /= top

    if to_fill.any() and reference.any():
        hole, known = shaped[to_fill], image[reference]
        shaped[to_fill] = np.stack([_match_histogram(hole[:, c], known[:, c]) for c in range(channels)], axis=1)
    return np.clip(image * (1.0 - mask) + shaped * mask, 0.0, 1.0)


def _to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(array * 255.0, 0, 255).astype(np.uint8), "RGB")


# -- Outpainting mk2 ----------------------------------------------------------------------------


def mk2_canvas(picture: Image.Image, pixels: int, side: str, blur_x: int,
               blur_y: int) -> tuple[Image.Image, Image.Image, tuple[int, int]]:
    """One side's step: the picture on a black canvas of the next multiple of 64 and its mask (white
    = to paint, the new strip plus the blur margin), plus the size the picture grows to."""
    horizontal = side in ("left", "right")
    res_w = picture.width + (pixels if horizontal else 0)
    res_h = picture.height + (0 if horizontal else pixels)
    canvas_w, canvas_h = math.ceil(res_w / 64) * 64, math.ceil(res_h / 64) * 64
    canvas = Image.new("RGB", (canvas_w, canvas_h))
    canvas.paste(picture, (pixels if side == "left" else 0, pixels if side == "up" else 0))
    mask = Image.new("RGB", (canvas_w, canvas_h), "white")
    _keep_box(mask, (
        pixels + blur_x if side == "left" else 0,
        pixels + blur_y if side == "up" else 0,
        canvas_w - pixels - blur_x if side == "right" else res_w,
        canvas_h - pixels - blur_y if side == "down" else res_h,
    ))
    return canvas, mask, (res_w, res_h)


def mk2_window(canvas_size: tuple[int, int], side: str, picture_size: tuple[int, int], pixels: int,
               process_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part of the canvas that is inpainted: the processing size (at most the grown picture)
    along the growing axis, the whole canvas across it, at the growing side."""
    canvas_w, canvas_h = canvas_size
    if side in ("left", "right"):
        width, height = min(process_size[0], picture_size[0] + pixels), canvas_h
    else:
        width, height = canvas_w, min(process_size[1], picture_size[1] + pixels)
    x0 = 0 if side == "left" else canvas_w - width
    y0 = 0 if side == "up" else canvas_h - height
    return x0, y0, x0 + width, y0 + height


def mk2_latent_mask(size: tuple[int, int], side: str, pixels: int, blur_x: int, blur_y: int,
                    grown: tuple[int, int]) -> Image.Image:
    """The latent blend's mask: the painted area reaches twice the blur margin into the picture."""
    width, height = size
    latent_mask = Image.new("RGB", size, "white")
    _keep_box(latent_mask, (
        pixels + blur_x * 2 if side == "left" else 0,
        pixels + blur_y * 2 if side == "up" else 0,
        width - pixels - blur_x * 2 if side == "right" else grown[0],
        height - pixels - blur_y * 2 if side == "down" else grown[1],
    ))
    return latent_mask


class OutpaintingMk2(Script):
    def title(self) -> str:
        return "Outpainting mk2"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        return [
            Control("", value=MK2_INFO_HTML),
            Slider("Pixels to expand", value=128, minimum=8, maximum=256, step=8, elem_id="pixels"),
            Slider("Mask blur", value=8, minimum=0, maximum=64, step=1, elem_id="mask_blur"),
            CheckboxGroup("Outpainting direction", value=DIRECTIONS, choices=DIRECTIONS, elem_id="direction"),
            Slider("Fall-off exponent (lower=higher detail)", value=1.0, minimum=0.0, maximum=4.0, step=0.01, elem_id="noise_q"),
            Slider("Color variation", value=0.05, minimum=0.0, maximum=1.0, step=0.01, elem_id="color_variation"),
        ]

    def run(self, p: Processing, _info=None, pixels=128, mask_blur=8, direction=DIRECTIONS, noise_q=1.0,
            color_variation=0.05) -> Processed:
        pixels, mask_blur = int(pixels), int(mask_blur)
        process_size = (p.width, p.height)
        p.inpaint_full_res = False
        p.inpainting_fill = 1
        p.do_not_save_samples = p.do_not_save_grid = True
        picture = p.init_images[0]
        margins = dict(zip(DIRECTIONS, outpaint_margins(picture.width, picture.height, pixels, direction)))
        blur_x = mask_blur if margins["left"] or margins["right"] else 0
        blur_y = mask_blur if margins["up"] or margins["down"] else 0
        p.mask_blur = 0
        _blur_infotext(p, blur_x * 4, blur_y * 4)

        jobs: list[Processed] = []

        def grow(pictures: list[Image.Image], side: str) -> list[Image.Image]:
            amount = margins[side]
            outputs, windows, mask, grown = [], [], None, None
            for source in pictures:
                canvas, full_mask, grown = mk2_canvas(source, amount, side, blur_x, blur_y)
                noised = _to_image(matched_noise(_to_float(canvas), _to_float(full_mask), noise_q, color_variation))
                box = mk2_window(canvas.size, side, source.size, amount, process_size)
                mask = full_mask.crop(box)
                outputs.append(noised)
                windows.append(noised.crop(box))
            p.width, p.height = mask.size
            p.mask = _blurred(mask, blur_x * 4, blur_y * 4)
            p.init_images = windows
            p.latent_mask = mk2_latent_mask(mask.size, side, amount, blur_x, blur_y, grown)
            processed = process_images(p)
            jobs.append(processed)
            for output, painted in zip(outputs, processed.images):  # an interrupted job may return fewer
                x = 0 if side == "left" else output.width - painted.width
                y = 0 if side == "up" else output.height - painted.height
                output.paste(painted, (x, y))
            return [output.crop((0, 0, *grown)) for output in outputs]

        batch_count, batch_size = p.n_iter, p.batch_size
        p.n_iter = 1
        finished: list[Image.Image] = []
        for _ in range(batch_count):
            pictures = [picture] * batch_size
            for side in DIRECTIONS:
                if margins[side] > 0 and not (jobs and jobs[-1].interrupted):
                    pictures = grow(pictures, side)
            finished += pictures
            if jobs and jobs[-1].interrupted:
                break

        info = jobs[0].info if jobs else ""
        seed = jobs[0].seed if jobs else p.seed
        interrupted = any(result.interrupted for result in jobs)
        grids, saved = [], []
        if len(finished) > 1:
            grid = image_grid(finished, n_rows=getattr(p, "n_rows", -1))
            grids = [grid]
            saved.append(p.save_grid(grid, info, "grid"))
        saved += [None if interrupted else p.save_sample(image, info, seed, p.prompt) for image in finished]
        return _outcome(p, grids + finished, info, seed, len(grids), saved, interrupted)


# -- Poor man's outpainting ---------------------------------------------------------------------


def poor_mans_canvas(picture: Image.Image, margins: tuple[int, int, int, int], mask_blur: int):
    """The picture on the grown black canvas, the mask (white = paint; reaching ``2·mask_blur`` into
    the picture on the grown sides) and the latent mask (reaching ``mask_blur // 2``)."""
    left, right, up, down = margins
    # An axis that does not grow still rounds up to 64 (its extra strip stays black and unpainted, as A1111)
    canvas = Image.new("RGB", (math.ceil((picture.width + left + right) / 64) * 64,
                               math.ceil((picture.height + up + down) / 64) * 64))
    canvas.paste(picture, (left, up))

    def mask_with_margin(margin: int) -> Image.Image:
        mask = Image.new("L", canvas.size, "white")
        _keep_box(mask, (
            left + (margin if left > 0 else 0),
            up + (margin if up > 0 else 0),
            canvas.width - right - (margin if right > 0 else 0),
            canvas.height - down - (margin if down > 0 else 0),
        ))
        return mask

    return canvas, mask_with_margin(mask_blur * 2), mask_with_margin(mask_blur // 2)


def _inside(tile_x: int, tile_y: int, tile_w: int, tile_h: int, size: tuple[int, int], margins) -> bool:
    """Whether a tile lies wholly within the original picture (then it is not repainted)."""
    left, right, up, down = margins
    return tile_x >= left and tile_x + tile_w <= size[0] - right and tile_y >= up and tile_y + tile_h <= size[1] - down


class PoorMansOutpainting(Script):
    def title(self) -> str:
        return "Poor man's outpainting"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        return [
            Slider("Pixels to expand", value=128, minimum=8, maximum=256, step=8, elem_id="pixels"),
            Slider("Mask blur", value=4, minimum=0, maximum=64, step=1, elem_id="mask_blur"),
            Radio("Masked content", value="fill", choices=MASKED_CONTENT, type="index", elem_id="inpainting_fill"),
            CheckboxGroup("Outpainting direction", value=DIRECTIONS, choices=DIRECTIONS, elem_id="direction"),
        ]

    def run(self, p: Processing, pixels=128, mask_blur=4, inpainting_fill=0, direction=DIRECTIONS) -> Processed:
        pixels, mask_blur, inpainting_fill = int(pixels), int(mask_blur), int(inpainting_fill)
        if not 0 <= inpainting_fill < len(MASKED_CONTENT):
            raise ValueError(f"Poor man's outpainting: masked content index must be 0..{len(MASKED_CONTENT) - 1}; "
                             f"got {inpainting_fill}")
        picture = p.init_images[0]
        margins = outpaint_margins(picture.width, picture.height, pixels, direction)
        canvas, mask, latent_mask = poor_mans_canvas(picture, margins, mask_blur)
        p.mask_blur = 0
        _blur_infotext(p, mask_blur * 2, mask_blur * 2)
        p.inpainting_fill = inpainting_fill
        p.inpaint_full_res = False

        grid = split_grid(canvas, p.width, p.height, pixels)
        masks = split_grid(mask, p.width, p.height, pixels).tiles()
        latent_masks = split_grid(latent_mask, p.width, p.height, pixels).tiles()
        p.n_iter = p.batch_size = 1
        p.do_not_save_grid = p.do_not_save_samples = True

        placed = [(row, tile) for row in grid.rows for tile in row.tiles]  # the three grids share one layout
        todo = [(tile, tile_mask.image, tile_latent.image)
                for (row, tile), tile_mask, tile_latent in zip(placed, masks, latent_masks)
                if not _inside(tile.x, row.y, tile.width, row.height, canvas.size, margins)]
        first: Processed | None = None
        interrupted = False
        painted: list[Image.Image] = []
        for tile, tile_mask, tile_latent in todo:
            p.init_images = [tile.image]
            p.mask = _blurred(tile_mask, mask_blur * 2, mask_blur * 2)
            p.latent_mask = tile_latent
            processed = process_images(p)
            first = first or processed
            p.seed = processed.seed + 1
            painted += processed.images
            if processed.interrupted:
                interrupted = True
                break
        for index, (tile, _, _) in enumerate(todo):
            tile.image = painted[index] if index < len(painted) else Image.new("RGB", (p.width, p.height))

        info = first.info if first else ""
        seed = first.seed if first else p.seed
        combined = combine_grid(grid)
        saved = None if interrupted else p.save_sample(combined, info, seed, p.prompt)
        return _outcome(p, [combined], info, seed, 0, [saved], interrupted)


def _outcome(p: Processing, images: list[Image.Image], info: str, seed: int, grids: int, saved: list,
             interrupted: bool) -> Processed:
    """A1111's ``Processed(p, images, seed, info)``: every picture carries the first step's infotext."""
    count = len(images) - grids
    return Processed(
        images=images,
        infotexts=[info] * len(images),
        all_prompts=[p.prompt] * count,
        all_negative_prompts=[p.negative_prompt] * count,
        all_seeds=[seed] * count,
        all_subseeds=[p.subseed] * count,
        index_of_first_image=grids,
        width=p.width,
        height=p.height,
        interrupted=interrupted,
        saved=saved,
    )
