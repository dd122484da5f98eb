"""The "SD upscale" script (A1111's ``scripts/sd_upscale.py``): upscale the picture with an image
upscaler, cut it into overlapping tiles of the job's width × height, img2img every tile, and stitch
the tiles back with the overlaps cross-faded (A1111's ``images.split_grid`` / ``combine_grid``).

The stitched picture is returned, not saved: A1111 saves it as an ordinary sample, and the script
API has no hook for saving a sample the script built itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from modules.core import rng
from modules.core.generation import image_ops
from modules.core.generation.request import IMAGE_UPSCALERS
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import Control, Radio, Script, Slider
from modules.service.upscalers import UpscalerLibrary

INFO_HTML = ('<p style="margin-bottom:0.75em">Will upscale the image by the selected scale factor; '
             'use width and height sliders to set tile size</p>')


@dataclass
class GridTile:
    x: int
    width: int
    image: Image.Image


@dataclass
class GridRow:
    y: int
    height: int
    tiles: list[GridTile] = field(default_factory=list)


@dataclass
class Grid:
    """Tiles of one picture, row by row; a tile's ``image`` may be replaced before ``combine_grid``."""

    rows: list[GridRow]
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int

    def tiles(self) -> list[GridTile]:
        return [tile for row in self.rows for tile in row.tiles]


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts, at least ``overlap`` apart from the next tile's end; the last tile ends
    at the picture's edge (a picture smaller than a tile gets one tile starting left of it)."""
    count = max(1, math.ceil((size - overlap) / (tile - overlap)))
    step = (size - tile) / (count - 1) if count > 1 else 0
    starts = []
    for index in range(count):
        start = int(index * step)
        starts.append(size - tile if start + tile >= size else start)
    return starts


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """Cut ``image`` into ``tile_w`` × ``tile_h`` tiles that overlap by at least ``overlap`` pixels."""
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"tile overlap must be at least 0 and smaller than the tile ({tile_w}x{tile_h}); got {overlap}")
    grid = Grid([], tile_w, tile_h, image.width, image.height, overlap)
    xs = _tile_starts(image.width, tile_w, overlap)
    for y in _tile_starts(image.height, tile_h, overlap):
        row = GridRow(y, tile_h)
        for x in xs:
            row.tiles.append(GridTile(x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))))
        grid.rows.append(row)
    return grid


def _ramp(overlap: int, length: int, horizontal: bool) -> Image.Image:
    """A paste mask rising from 0 to just under 255 across ``overlap`` pixels (float32 then
    truncated, as A1111, so the blend is bit-identical)."""
    values = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    array = np.repeat(values[None, :], length, axis=0) if horizontal else np.repeat(values[:, None], length, axis=1)
    return Image.fromarray(array, "L")


def combine_grid(grid: Grid) -> Image.Image:
    """Stitch the tiles: each tile after the first of its row (and each row after the first) fades
    in over its first ``overlap`` pixels, then covers what lies beyond."""
    overlap = grid.overlap
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    across = _ramp(overlap, grid.tile_h, horizontal=True) if overlap else None
    down = _ramp(overlap, grid.image_w, horizontal=False) if overlap else None
    for row in grid.rows:
        strip = Image.new("RGB", (grid.image_w, row.height))
        for tile in row.tiles:
            if tile.x == 0:
                strip.paste(tile.image, (0, 0))
                continue
            if overlap:
                strip.paste(tile.image.crop((0, 0, overlap, row.height)), (tile.x, 0), mask=across)
            strip.paste(tile.image.crop((overlap, 0, tile.width, row.height)), (tile.x + overlap, 0))
        if row.y == 0:
            combined.paste(strip, (0, 0))
            continue
        if overlap:
            combined.paste(strip.crop((0, 0, strip.width, overlap)), (0, row.y), mask=down)
        combined.paste(strip.crop((0, overlap, strip.width, row.height)), (0, row.y + overlap))
    return combined


def upscaler_name(choice: int | str, names: Sequence[str] = IMAGE_UPSCALERS) -> str:
    """The Radio's position (or, as A1111 accepts from the API, a name in any case)."""
    if isinstance(choice, str):
        lowered = [name.lower() for name in names]
        if choice.lower() not in lowered:
            raise ValueError(f"SD upscale: unknown upscaler {choice!r}; available: {', '.join(names)}")
        return names[lowered.index(choice.lower())]
    if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(names):
        raise ValueError(f"SD upscale: upscaler index must be 0..{len(names) - 1}; got {choice!r}")
    return names[choice]


class SDUpscale(Script):
    def __init__(self, upscalers: UpscalerLibrary | None = None):
        self.upscalers = upscalers  # the model files besides the built-in upscalers

    def names(self) -> tuple[str, ...]:
        return tuple(self.upscalers.names()) if self.upscalers is not None else IMAGE_UPSCALERS

    def title(self) -> str:
        return "SD upscale"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        return [
            Control("", value=INFO_HTML),
            Slider("Tile overlap", value=64, minimum=0, maximum=256, step=16, elem_id="overlap"),
            Radio("Upscaler", value=IMAGE_UPSCALERS[0], choices=self.names(), type="index", elem_id="upscaler_index"),
            Slider("Scale Factor", value=2.0, minimum=1.0, maximum=4.0, step=0.05, elem_id="scale_factor"),
        ]

    def run(self, p: Processing, _info=None, overlap=64, upscaler_index=0, scale_factor=2.0) -> Processed:
        upscaler = upscaler_name(upscaler_index, self.names())
        overlap = int(overlap)
        p.seed = rng.fix_seed(p.seed)
        p.subseed = rng.fix_seed(p.subseed)
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = upscaler
        seed = p.seed

        picture = image_ops.flatten(p.init_images[0])
        if upscaler != "None":  # "None" keeps the picture's size whatever the scale factor, as A1111
            picture = (self.upscalers.upscale(picture, scale_factor, upscaler) if self.upscalers is not None
                       else image_ops.upscale(picture, scale_factor, upscaler))
        grid = split_grid(picture, p.width, p.height, overlap)
        work = [tile.image for tile in grid.tiles()]
        batch_size, upscale_count = p.batch_size, p.n_iter
        p.n_iter = 1
        p.do_not_save_grid = p.do_not_save_samples = True

        results: list[Image.Image] = []
        saved: list = []
        first_info = ""
        interrupted = False
        for n in range(upscale_count):
            p.seed = seed + n
            done: list[Image.Image] = []
            for start in range(0, len(work), batch_size):
                chunk = work[start:start + batch_size]
                p.init_images = chunk
                p.batch_size = len(chunk)  # a short last batch shrinks, as A1111's img2img does
                processed = process_images(p)
                first_info = first_info or processed.info
                p.seed = processed.seed + 1  # A1111's count: the next batch starts one seed later
                done += processed.images
                if processed.interrupted:
                    interrupted = True
                    break
            for index, tile in enumerate(grid.tiles()):
                tile.image = done[index] if index < len(done) else Image.new("RGB", (p.width, p.height))
            results.append(combine_grid(grid))
            if not interrupted:
                saved.append(p.save_sample(results[-1], first_info, seed + n, p.prompt))
            if interrupted:
                break

        return Processed(
            images=results,
            infotexts=[first_info] * len(results),
            all_prompts=[p.prompt] * len(results),
            all_negative_prompts=[p.negative_prompt] * len(results),
            all_seeds=[seed + n for n in range(len(results))],
            all_subseeds=[p.subseed] * len(results),
            width=p.width,
            height=p.height,
            interrupted=interrupted,
            saved=saved + [None] * (len(results) - len(saved)),
        )
