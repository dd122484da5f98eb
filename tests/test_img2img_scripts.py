"""The img2img scripts Loopback, Outpainting mk2, Poor man's outpainting and SD upscale: their pure
geometry (tiles, canvases, masks, strength curve, matched noise), their job sequence with a fake
runner that records each job, and a few end-to-end runs on the tiny checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.core.generation import image_ops
from modules.core.generation.request import Img2ImgRequest
from modules.core.infotext import parse_infotext
from modules.service.processing import Processed, Processing
from modules.service.scripts.api import ScriptRegistry
from modules.service.scripts.loopback import Loopback, denoising_strength_at
from modules.service.scripts.outpainting import (
    OutpaintingMk2, PoorMansOutpainting, matched_noise, mk2_canvas, mk2_latent_mask, mk2_window, outpaint_margins,
    poor_mans_canvas,
)
from modules.service.scripts.sd_upscale import SDUpscale, combine_grid, split_grid
from tests.test_img2img import picture

ALL = ("left", "right", "up", "down")


def noise_picture(width, height, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def as_int(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


# -- split_grid / combine_grid ------------------------------------------------------------------


def test_tiles_follow_a1111s_positions_and_cover_the_picture():
    grid = split_grid(noise_picture(200, 150), tile_w=64, tile_h=48, overlap=16)
    # columns: ceil((200-16)/48) = 4 spread by (200-64)/3; rows: ceil((150-16)/32) = 5 spread by (150-48)/4
    assert [tile.x for tile in grid.rows[0].tiles] == [0, 45, 90, 136]
    assert [row.y for row in grid.rows] == [0, 25, 51, 76, 102]
    assert all(tile.image.size == (64, 48) for tile in grid.tiles())


@pytest.mark.parametrize("size, tile, overlap", [((200, 150), (64, 48), 16), ((128, 128), (64, 64), 0),
                                                 ((130, 70), (64, 64), 32), ((48, 40), (64, 64), 8)])
def test_split_then_combine_gives_the_picture_back_exactly(size, tile, overlap):
    source = noise_picture(*size, seed=sum(size))
    combined = combine_grid(split_grid(source, *tile, overlap))
    assert combined.size == source.size
    assert np.array_equal(as_int(combined), as_int(source))


def test_overlaps_fade_from_the_earlier_tile_into_the_later():
    grid = split_grid(Image.new("RGB", (112, 64)), 64, 64, 16)  # two tiles at x 0 and 48
    assert [tile.x for tile in grid.tiles()] == [0, 48]
    grid.rows[0].tiles[0].image = Image.new("RGB", (64, 64), (0, 0, 0))
    grid.rows[0].tiles[1].image = Image.new("RGB", (64, 64), (255, 255, 255))
    row = as_int(combine_grid(grid))[10, :, 0]
    assert (row[:48] == 0).all() and (row[64:] == 255).all()
    fade = row[48:64]
    assert fade[0] == 0 and 0 < fade[8] < 255 and (np.diff(fade) > 0).all()


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        split_grid(noise_picture(100, 100), 64, 64, 64)


# -- fake runner ---------------------------------------------------------------------------------


class FakeRunner:
    """Records each job's request and extras; returns the init images recoloured by ``paint`` (or unchanged)."""

    def __init__(self, paint=None, interrupt_at=None):
        self.jobs: list[Img2ImgRequest] = []
        self.extras: list[dict] = []
        self.paint = paint
        self.interrupt_at = interrupt_at

    def __call__(self, p: Processing) -> Processed:
        self.jobs.append(p.request)
        self.extras.append(dict(p.extra_generation_params))
        sources = list(p.init_images) * (p.batch_size if len(p.init_images) == 1 else 1)
        images = [self.paint(image, p.seed + i) if self.paint else image.copy() for i, image in enumerate(sources)]
        seeds = [p.seed + i for i in range(len(images))]
        return Processed(images=images, infotexts=[f"job {len(self.jobs)}\nSeed: {s}" for s in seeds],
                         all_prompts=[p.prompt] * len(images), all_negative_prompts=[p.negative_prompt] * len(images),
                         all_seeds=seeds, all_subseeds=[p.subseed] * len(images), width=p.width, height=p.height,
                         interrupted=len(self.jobs) == self.interrupt_at)


def make_p(runner, init=None, **fields) -> Processing:
    request = Img2ImgRequest(**{"prompt": "a cat", "seed": 100, "subseed": 5, "width": 64, "height": 64,
                                "init_images": (init or picture(),), **fields})
    p = Processing(request, is_img2img=True, runner=runner)
    p.saved_grids = []
    p.save_grid = lambda image, info, basename: p.saved_grids.append((image, info, basename)) or f"{basename}.png"
    return p


def shift(image, seed):
    """A picture that remembers its input: the input brightened by one step per job."""
    return Image.fromarray(np.clip(as_int(image) + 1, 0, 255).astype(np.uint8))


# -- Loopback ------------------------------------------------------------------------------------


def test_loopback_strength_curves():
    linear = [denoising_strength_at(i, 4, 0.75, 0.5, "Linear") for i in range(4)]
    assert linear == pytest.approx([0.75, 0.75 - 0.25 / 3, 0.75 - 0.5 / 3, 0.5])
    assert denoising_strength_at(1, 4, 0.75, 0.5, "Aggressive") == pytest.approx(0.75 - 0.25 * math.sin(math.pi / 6))
    assert denoising_strength_at(1, 4, 0.75, 0.5, "Lazy") == pytest.approx(0.75 - 0.25 * (1 - math.cos(math.pi / 6)))
    assert denoising_strength_at(3, 4, 0.2, 0.9, "Lazy") == pytest.approx(0.9)
    assert denoising_strength_at(5, 1, 0.3, 0.9, "Linear") == 0.3


def test_loopback_controls_match_a1111():
    controls = Loopback().ui(True)
    assert [c.value for c in controls] == [4, 0.5, "Linear", "None"]
    assert (controls[0].minimum, controls[0].maximum) == (1, 32)
    assert Loopback().show(True) and not Loopback().show(False)


def test_loopback_feeds_each_output_back_with_the_next_strength_and_seed():
    runner = FakeRunner(paint=shift)
    p = make_p(runner, denoising_strength=0.75, inpainting_fill=0, batch_size=3)
    result = Loopback().run(p, 4, 0.5, "Linear", "None")
    assert [job.seed for job in runner.jobs] == [100, 101, 102, 103]
    assert [job.denoising_strength for job in runner.jobs] == pytest.approx([0.75, 0.75 - 0.25 / 3, 0.75 - 0.5 / 3, 0.5])
    assert [job.inpainting_fill for job in runner.jobs] == [0, 1, 1, 1]
    assert all(job.batch_size == 1 and job.n_iter == 1 for job in runner.jobs)
    base = as_int(picture())
    for loop, job in enumerate(runner.jobs):  # each init is the previous output: brightened once more
        assert np.array_equal(as_int(job.init_images[0]), np.clip(base + loop, 0, 255))
    assert runner.extras[0] == {"Final denoising strength": 0.5, "Denoising curve": "Linear"}
    assert result.index_of_first_image == 1 and len(result.images) == 5
    assert result.images[0].size == (4 * 64, 64)  # one row
    assert result.all_seeds == [100, 101, 102, 103]
    assert p.saved_grids == [(result.images[0], "", "grid")]


def test_loopback_batches_restart_from_the_original_and_keep_the_last_image():
    runner = FakeRunner(paint=shift)
    p = make_p(runner, n_iter=2, denoising_strength=0.6)
    result = Loopback().run(p, 3, 0.3, "Linear", "None")
    assert [job.seed for job in runner.jobs] == [100, 101, 102, 103, 104, 105]
    assert runner.jobs[3].denoising_strength == 0.6
    assert np.array_equal(as_int(runner.jobs[3].init_images[0]), as_int(picture()))
    assert len(result.images) == 3 and result.all_seeds == [102, 105]


def test_loopback_single_loop_has_no_grid_and_interrupt_stops():
    result = Loopback().run(make_p(FakeRunner()), 1, 0.5, "Linear", "None")
    assert len(result.images) == 1 and result.index_of_first_image == 0
    runner = FakeRunner(interrupt_at=2)
    result = Loopback().run(make_p(runner), 4, 0.5, "Linear", "None")
    assert len(runner.jobs) == 2 and result.interrupted and len(result.images) == 1


def test_loopback_rejects_unknown_curve_and_interrogator():
    with pytest.raises(ValueError, match="curve"):
        Loopback().run(make_p(FakeRunner()), 2, 0.5, "Steep", "None")
    with pytest.raises(ValueError, match="interrogated"):
        Loopback().run(make_p(FakeRunner()), 2, 0.5, "Linear", "CLIP")


# -- outpainting geometry ------------------------------------------------------------------------


def test_margins_round_the_canvas_up_to_64():
    assert outpaint_margins(64, 64, 32, ALL) == (32, 32, 32, 32)
    assert outpaint_margins(100, 64, 40, ("left", "right")) == (46, 46, 0, 0)  # 180 → 192
    assert outpaint_margins(100, 64, 40, ("left",)) == (92, 0, 0, 0)
    assert outpaint_margins(64, 100, 8, ("down",)) == (0, 0, 0, 28)
    with pytest.raises(ValueError, match="direction"):
        outpaint_margins(64, 64, 8, ("sideways",))


def test_poor_mans_canvas_and_masks():
    source = noise_picture(64, 64)
    canvas, mask, latent = poor_mans_canvas(source, (32, 32, 32, 32), 4)
    assert canvas.size == mask.size == latent.size == (128, 128)
    assert np.array_equal(as_int(canvas.crop((32, 32, 96, 96))), as_int(source))
    m = np.asarray(mask)
    assert (m[40:89, 40:89] == 0).all() and m[39, 60] == 255 and m[89, 60] == 255 and m[60, 39] == 255
    lm = np.asarray(latent)
    assert (lm[34:95, 34:95] == 0).all() and lm[33, 60] == 255 and lm[95, 60] == 255


def test_mk2_canvas_window_and_latent_mask_for_the_left_side():
    source = noise_picture(64, 64)
    canvas, mask, grown = mk2_canvas(source, 32, "left", 8, 0)
    assert canvas.size == (128, 64) and grown == (96, 64)
    assert np.array_equal(as_int(canvas.crop((32, 0, 96, 64))), as_int(source))
    m = np.asarray(mask)[..., 0]
    assert (m[:, :40] == 255).all() and (m[:, 40:97] == 0).all() and (m[:, 97:] == 255).all()
    assert mk2_window(canvas.size, "left", source.size, 32, (64, 64)) == (0, 0, 64, 64)
    assert mk2_window((128, 128), "down", (128, 64), 32, (64, 64)) == (0, 64, 128, 128)
    lm = np.asarray(mk2_latent_mask((64, 64), "left", 32, 8, 0, grown))[..., 0]
    assert (lm[:, :48] == 255).all() and (lm[:, 48:] == 0).all()


def test_matched_noise_keeps_the_picture_and_matches_its_colours():
    rng = np.random.default_rng(3)
    image = np.zeros((64, 96, 3))
    image[:, 32:] = rng.uniform([0.2, 0.5, 0.0], [0.4, 0.6, 0.1], (64, 64, 3))
    mask = np.zeros_like(image)
    mask[:, :32] = 1.0
    noised = matched_noise(image.copy(), mask)
    assert np.array_equal(noised[:, 32:], image[:, 32:])
    hole = noised[:, :32]
    for channel, (low, high) in enumerate([(0.2, 0.4), (0.5, 0.6), (0.0, 0.1)]):
        assert low - 1e-9 <= hole[..., channel].min() and hole[..., channel].max() <= high + 1e-9
        assert hole[..., channel].std() > (high - low) / 10  # noise, not a flat fill
    assert np.array_equal(noised, matched_noise(image.copy(), mask))
    assert not np.array_equal(noised, matched_noise(image.copy(), mask, noise_q=2.0))


# -- outpainting with the fake runner ------------------------------------------------------------


def test_mk2_grows_one_side_per_job_and_keeps_the_picture():
    source = noise_picture(64, 64, seed=9)
    runner = FakeRunner()  # returns its init images: only the script's pasting decides the result
    p = make_p(runner, init=source)
    result = OutpaintingMk2().run(p, None, 32, 8, list(ALL), 1.0, 0.05)
    assert [(job.width, job.height) for job in runner.jobs] == [(64, 64), (64, 64), (128, 64), (128, 64)]
    assert all(job.mask_blur == 0 and job.inpainting_fill == 1 and not job.inpaint_full_res for job in runner.jobs)
    assert runner.extras[0]["Mask blur"] == 32
    assert all(job.mask.size == job.latent_mask.size == (job.width, job.height) for job in runner.jobs)
    final = result.images[0]
    assert len(result.images) == 1 and final.size == (128, 128)
    # the mask reaches mask_blur (8) pixels into the picture on every side: only that rim is renoised
    assert np.array_equal(as_int(final.crop((40, 40, 89, 89))), as_int(source.crop((8, 8, 57, 57))))
    assert not np.array_equal(as_int(final.crop((32, 32, 40, 96))), as_int(source.crop((0, 0, 8, 64))))
    assert as_int(final)[:, :16].std() > 5  # the new border holds matched noise, not black


def test_mk2_blurs_the_mask_only_along_the_growing_axis():
    runner = FakeRunner()
    OutpaintingMk2().run(make_p(runner, init=noise_picture(96, 40)), None, 16, 2, ["right"], 1.0, 0.05)
    (job,) = runner.jobs
    assert (job.width, job.height) == (64, 64)  # 96+16 → 128 wide canvas, a 64 wide window at the right
    sharp = Image.new("RGB", (128, 64), "white")
    ImageDraw.Draw(sharp).rectangle((0, 0, 128 - 32 - 2, 40), fill="black")  # the kept picture; rows past 40 are new
    window = sharp.crop((64, 0, 128, 64))
    assert np.array_equal(np.asarray(job.mask), np.asarray(image_ops.blur_mask(window, 8, 0)))
    assert not np.array_equal(np.asarray(job.mask), np.asarray(image_ops.blur_mask(window, 8, 8)))
    assert "Mask blur" not in runner.extras[0]  # x and y blur differ: A1111 writes no single value


def test_mk2_latent_mask_keeps_nothing_when_the_strip_fills_the_window():
    latent = mk2_latent_mask((64, 64), "right", 64, 2, 0, (128, 40))
    assert np.asarray(latent).min() == 255


def test_mk2_batches_make_a_grid_of_all_results():
    runner = FakeRunner()
    p = make_p(runner, batch_size=2, n_iter=2)
    result = OutpaintingMk2().run(p, None, 32, 4, ["up"], 1.0, 0.05)
    assert len(runner.jobs) == 2 and all(len(job.init_images) == 2 for job in runner.jobs)
    assert len(result.images) == 5 and result.index_of_first_image == 1
    assert all(image.size == (64, 128) for image in result.images[1:])
    assert p.saved_grids and p.saved_grids[0][0] is result.images[0]


def test_poor_mans_paints_only_tiles_touching_the_border():
    source = noise_picture(64, 64, seed=4)
    runner = FakeRunner()
    p = make_p(runner, init=source)
    result = PoorMansOutpainting().run(p, 32, 4, 2, list(ALL))
    assert len(runner.jobs) == 8  # 3×3 tiles of 64 over 128×128, the middle one lies inside the picture
    assert [job.seed for job in runner.jobs] == list(range(100, 108))
    assert all(job.inpainting_fill == 2 and job.mask_blur == 0 for job in runner.jobs)
    assert runner.extras[0]["Mask blur"] == 8
    first_mask = np.asarray(runner.jobs[0].mask)
    assert first_mask[0, 0] == 255 and first_mask[63, 63] < 255  # the corner tile reaches into the picture
    final = result.images[0]
    assert final.size == (128, 128) and len(result.images) == 1
    assert np.array_equal(as_int(final.crop((32, 32, 96, 96))), as_int(source))


def test_outpainting_stops_at_an_interrupt():
    runner = FakeRunner(interrupt_at=1)
    result = OutpaintingMk2().run(make_p(runner), None, 32, 8, list(ALL), 1.0, 0.05)
    assert len(runner.jobs) == 1 and result.interrupted
    runner = FakeRunner(interrupt_at=3)
    result = PoorMansOutpainting().run(make_p(runner), 32, 4, 0, list(ALL))
    assert len(runner.jobs) == 3 and result.interrupted and result.images[0].size == (128, 128)


# -- SD upscale with the fake runner -------------------------------------------------------------


def test_sd_upscale_controls_and_upscaler_choice():
    controls = SDUpscale().ui(True)
    assert [c.value for c in controls[1:]] == [64, "None", 2.0]
    assert controls[2].choices == ("None", "Lanczos", "Nearest") and controls[2].type == "index"


def test_sd_upscale_tiles_batches_and_stitches():
    source = noise_picture(64, 64, seed=2)
    runner = FakeRunner()
    p = make_p(runner, init=source, batch_size=4, n_iter=2)
    result = SDUpscale().run(p, None, 32, 1, 2.0)
    # 128×128 in 64-tiles overlapping by 32: 3×3 = 9 tiles, batches of 4, 4, 1
    assert [len(job.init_images) for job in runner.jobs] == [4, 4, 1] * 2
    assert [job.batch_size for job in runner.jobs] == [4, 4, 1] * 2
    assert [job.seed for job in runner.jobs] == [100, 101, 102, 101, 102, 103]
    assert runner.extras[0] == {"SD upscale overlap": 32, "SD upscale upscaler": "Lanczos"}
    upscaled = image_ops.upscale(source, 2.0, "Lanczos")
    assert len(result.images) == 2 and result.all_seeds == [100, 101]
    for image in result.images:
        assert np.array_equal(as_int(image), as_int(upscaled))


def test_sd_upscale_none_keeps_the_size_and_names_are_accepted():
    runner = FakeRunner()
    result = SDUpscale().run(make_p(runner, init=noise_picture(96, 64)), None, 0, "none", 3.0)
    assert result.images[0].size == (96, 64)
    assert runner.extras[0]["SD upscale upscaler"] == "None"
    with pytest.raises(ValueError, match="upscaler"):
        SDUpscale().run(make_p(FakeRunner()), None, 0, "ESRGAN", 2.0)


# -- end to end on the tiny checkpoint -----------------------------------------------------------

E2E = dict(prompt="a red cat", seed=77, steps=3, width=64, height=64, sampler_name="Euler", denoising_strength=0.75)


@pytest.fixture
def script_service(data_dir):
    from modules.core.devices import DevicePolicy, MemoryManager
    from modules.core.hash_cache import HashCache
    from modules.core.paths import Paths
    from modules.service.generation import GenerationService, ServiceFlags
    from modules.service.models import ModelService
    from modules.service.settings import Settings

    paths = Paths.create(data_dir=data_dir)
    models = ModelService(paths, MemoryManager(DevicePolicy.choose(use_cpu=["all"])), HashCache(paths.cache_file))
    scripts = ScriptRegistry([Loopback(), OutpaintingMk2(), PoorMansOutpainting(), SDUpscale()])
    return GenerationService(paths, Settings(paths.config_file), models, ServiceFlags(console_progress=False),
                             scripts=scripts)


def run_script(service, title, args, init=None, **fields):
    request = Img2ImgRequest(**{**E2E, "init_images": (init or picture(),), **fields})
    return service.img2img(request, save_images=False, script=(title, args)).processed


def test_e2e_outpainting_mk2_size_kept_picture_and_reproducible(script_service):
    source = picture()
    args = [None, 32, 0, ["left", "up"], 1.0, 0.05]  # mask blur 0: the picture's own pixels stay exact
    first = run_script(script_service, "Outpainting mk2", args, init=source)
    again = run_script(script_service, "Outpainting mk2", args, init=source)
    image = first.images[0]
    assert image.size == (128, 128)  # 64+32 rounds up to 128, all of it on the chosen sides
    assert np.array_equal(as_int(image.crop((64, 64, 128, 128))), as_int(source))
    noise_only = OutpaintingMk2().run(make_p(FakeRunner(), init=source, **E2E), *args).images[0]
    assert np.abs(as_int(image.crop((0, 0, 64, 64))) - as_int(noise_only.crop((0, 0, 64, 64)))).mean() > 5  # painted over
    assert np.array_equal(as_int(image), as_int(again.images[0]))
    assert parse_infotext(first.infotexts[0])["Seed"] == "77"


def test_e2e_poor_mans_outpainting_keeps_the_picture(script_service):
    source = picture()
    result = run_script(script_service, "Poor man's outpainting", [32, 0, 1, ["left"]], init=source)
    image = result.images[0]
    assert image.size == (128, 64)  # tiles at x 0, 32, 64: the last lies inside the picture and is skipped
    assert np.array_equal(as_int(image.crop((64, 0, 128, 64))), as_int(source))
    assert as_int(image.crop((0, 0, 64, 64))).std() > 1  # painted, not the black canvas


def test_e2e_sd_upscale_size_infotext_and_reproducible(script_service):
    args = [None, 0, 1, 2.0]
    first = run_script(script_service, "SD upscale", args, batch_size=3)
    again = run_script(script_service, "SD upscale", args, batch_size=3)
    assert first.images[0].size == (128, 128)
    info = parse_infotext(first.infotexts[0])
    assert info["SD upscale overlap"] == "0" and info["SD upscale upscaler"] == "Lanczos"
    assert np.array_equal(as_int(first.images[0]), as_int(again.images[0]))


def test_e2e_loopback_two_loops(script_service):
    result = run_script(script_service, "Loopback", [2, 0.4, "Linear", "None"])
    assert len(result.images) == 3 and result.images[0].size == (128, 64)
    assert result.all_seeds == [77, 78]
    second = parse_infotext(result.infotexts[2])
    assert second["Denoising strength"] == "0.4" and second["Final denoising strength"] == "0.4"
    assert second["Denoising curve"] == "Linear" and second["Seed"] == "78"
    assert not np.array_equal(as_int(result.images[1]), as_int(result.images[2]))
