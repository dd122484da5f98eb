"""Built-in scripts end to end through the service on the tiny checkpoint: the X/Y/Z plot's cells
are exactly the single generations they stand for, grids are saved with their infotexts, and a
plain batch gets its grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.service.scripts.api import ScriptRegistry
from modules.service.scripts.xyz_plot import XYZPlot

BASE = dict(prompt="a red cat", negative_prompt="blurry", seed=123, width=64, height=64, steps=3, sampler_name="Euler")


@pytest.fixture
def scripted(service):
    plot = XYZPlot(service.models.titles, lambda: ["Automatic", "None"])
    service.scripts = ScriptRegistry([plot])
    return service, plot


def xyz_args(plot, x_label, x_values, y_label, y_values, draw_legend=True, include_lone_images=True):
    labels = [axis.label for axis in plot.axes(False)]
    return [labels.index(x_label), x_values, None, labels.index(y_label), y_values, None, 0, "", None,
            draw_legend, include_lone_images, False, False, False, False, False, 0, False]


def test_xyz_plot_steps_by_sampler_cells_equal_single_generations(scripted):
    service, plot = scripted
    args = xyz_args(plot, "Steps", "2-4", "Sampler", "Euler, DDIM")
    outcome = service.txt2img(Txt2ImgRequest(**BASE), script=("X/Y/Z plot", args))
    processed = outcome.processed
    assert processed.index_of_first_image == 1
    grid, cells = processed.images[0], processed.images[1:]
    assert len(cells) == 6
    # Row-major: Y (sampler) rows, X (steps) columns.
    expected = [(steps, sampler) for sampler in ("Euler", "DDIM") for steps in (2, 3, 4)]
    for cell, infotext, (steps, sampler) in zip(cells, processed.infotexts[1:], expected):
        single = service.txt2img(Txt2ImgRequest(**{**BASE, "steps": steps, "sampler_name": sampler}),
                                 save_images=False).result
        assert np.array_equal(np.asarray(cell), np.asarray(single.images[0].image)), (steps, sampler)
        params = parse_infotext(infotext)
        assert (params["Steps"], params["Sampler"]) == (str(steps), sampler)
    # The grid: 3 columns × 2 rows of 64 px cells, plus the legend's top and left bands.
    assert grid.width > 3 * 64 and grid.height > 2 * 64
    cell_area = np.asarray(grid)[grid.height - 128:, grid.width - 192:]
    assert np.array_equal(cell_area[:64, :64], np.asarray(cells[0]))
    assert np.array_equal(cell_area[64:, 128:], np.asarray(cells[5]))
    grid_params = parse_infotext(processed.infotexts[0])
    assert grid_params["Script"] == "X/Y/Z plot"
    assert (grid_params["X Type"], grid_params["X Values"]) == ("Steps", "2-4")
    assert (grid_params["Y Type"], grid_params["Y Values"]) == ("Sampler", "Euler, DDIM")
    saved = processed.saved[0]
    assert saved is not None and saved.name == "xyz_grid-0000.png" and saved.parent.name == "txt2img-grids"
    with Image.open(saved) as image:
        assert image.info["parameters"] == processed.infotexts[0]


def test_unknown_script_names_the_choices(scripted):
    service, _ = scripted
    with pytest.raises(InvalidRequest, match="script_name.*X/Y/Z plot"):
        service.txt2img(Txt2ImgRequest(**BASE), script=("Nope", []))


def test_a_batch_gets_a_grid_first_and_saves_it(service):
    outcome = service.txt2img(Txt2ImgRequest(**{**BASE, "batch_size": 2, "n_iter": 2}))
    processed = outcome.processed
    assert processed.index_of_first_image == 1 and len(processed.images) == 5
    grid = processed.images[0]
    assert grid.size == (128, 128)  # round(√4) = 2 rows
    assert processed.saved[0].name == "grid-0000.png"
    assert processed.infotexts[0] == processed.infotexts[1]
    assert all(path is not None and path.parent.parent.name == "txt2img-images" for path in processed.saved[1:])
    again = service.txt2img(Txt2ImgRequest(**{**BASE, "batch_size": 2}))
    assert again.processed.saved[0].name == "grid-0001.png"


def test_one_image_gets_no_grid_and_the_n_rows_setting_is_used(service):
    single = service.txt2img(Txt2ImgRequest(**BASE), save_images=False).processed
    assert single.index_of_first_image == 0 and len(single.images) == 1
    service.settings.set("n_rows", 1)
    wide = service.txt2img(Txt2ImgRequest(**{**BASE, "batch_size": 3})).processed
    assert wide.images[0].size == (192, 64)


def test_sd_upscale_saves_the_combined_picture_as_a_sample(service):
    from modules.core.generation.request import IMAGE_UPSCALERS, Img2ImgRequest
    from modules.service.scripts.sd_upscale import SDUpscale

    service.scripts = ScriptRegistry([SDUpscale()])
    source = Image.new("RGB", (64, 64), (40, 90, 160))
    request = Img2ImgRequest(**{**BASE, "init_images": (source,), "denoising_strength": 0.3})
    outcome = service.img2img(request, script=("SD upscale", [None, 32, IMAGE_UPSCALERS.index("Lanczos"), 2.0]))
    processed = outcome.processed
    assert [image.size for image in processed.images] == [(128, 128)]
    path = processed.saved[0]
    assert path is not None and path.parent.parent.name == "img2img-images"
    with Image.open(path) as saved:
        assert saved.size == (128, 128) and saved.info["parameters"] == processed.infotexts[0]
    tiles = [p for p in path.parent.iterdir() if p != path]
    assert not tiles  # the tiles themselves are not saved, as A1111
    unsaved = service.img2img(request, save_images=False,
                              script=("SD upscale", [None, 32, IMAGE_UPSCALERS.index("Lanczos"), 2.0]))
    assert unsaved.processed.saved == [None]


def test_xyz_plot_vae_axis_switches_the_vae_per_cell(service, data_dir):
    from tests.test_vae import write_vae

    write_vae(data_dir / "models" / "VAE" / "other.safetensors", seed=21)
    plot = XYZPlot(service.models.titles, lambda: list(service.models.vaes()))
    service.scripts = ScriptRegistry([plot])
    args = xyz_args(plot, "VAE", "None, other.safetensors", "Nothing", "")
    processed = service.txt2img(Txt2ImgRequest(**BASE), save_images=False, script=("X/Y/Z plot", args)).processed
    baked, other = processed.images[1:]
    assert not np.array_equal(np.asarray(baked), np.asarray(other))
    assert "VAE: other.safetensors" in processed.infotexts[2] and "VAE:" not in processed.infotexts[1]
    plain = service.txt2img(Txt2ImgRequest(**BASE), save_images=False).result.images[0].image
    assert np.array_equal(np.asarray(baked), np.asarray(plain))  # the setting was per cell only
