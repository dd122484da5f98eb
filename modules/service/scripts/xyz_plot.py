"""The "X/Y/Z plot" script (A1111's ``scripts/xyz_grid.py``): one generation per combination of up to
three axes' values, one grid per Z value (Y values as rows, X values as columns) with the values as
legend, and those grids side by side.

Values are comma-separated (CSV, so quotes protect commas); number axes also take ranges: ``1-5``,
``1-10 (+2)`` (step), ``1-10 [5]`` (count, evenly spaced; whole-number axes truncate).
"""

from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass
from typing import Callable

from PIL import Image

from modules.core import rng
from modules.core.generation.request import InvalidRequest
from modules.core.grid import GridAnnotation, draw_grid_annotations, image_grid
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import Checkbox, Dropdown, Script, Slider, Textbox
from modules.service.scripts.xyz_axes import SEED_AXES, AxisOption, build_axis_options, join_csv, parse_axis_values

log = logging.getLogger(__name__)

def _fix_seeds(values: list) -> list:
    return [rng.fix_seed(value) if value in (None, "", -1) else value for value in values]


def _loop_order(cost_x: float, cost_y: float, cost_z: float) -> tuple[str, str, str]:
    """Outer to inner loop; A1111 puts the strictly costliest axis outermost, else Z, Y, X."""
    costs = {"x": cost_x, "y": cost_y, "z": cost_z}
    for first in ("x", "y", "z"):
        others = [axis for axis in ("x", "y", "z") if axis != first]
        if all(costs[first] > costs[other] for other in others):
            a, b = others
            second = a if costs[a] > costs[b] else b
            return first, second, next(axis for axis in others if axis != second)
    return "z", "y", "x"


# ---- the script ----------------------------------------------------------------------------------

@dataclass
class _Axis:
    name: str  # "X", "Y" or "Z"
    option: AxisOption
    values: list
    text: str  # the values as the infotext records them

    def header(self, fixed_seeds: bool) -> dict[str, str]:
        if self.option.label == "Nothing":
            return {}
        params = {f"{self.name} Type": self.option.label, f"{self.name} Values": self.text}
        if self.option.label in SEED_AXES and fixed_seeds:
            params[f"Fixed {self.name} Values"] = ", ".join(str(value) for value in self.values)
        return params


class XYZPlot(Script):
    def __init__(self, checkpoint_titles: Callable[[], list[str]], vae_names: Callable[[], list[str]],
                 upscaler_names: Callable[[], list[str]] | None = None):
        self.axis_options = build_axis_options(checkpoint_titles, vae_names, upscaler_names)
        self.upscaler_names = upscaler_names

    def title(self) -> str:
        return "X/Y/Z plot"

    def axes(self, is_img2img: bool) -> list[AxisOption]:
        tab = "img2img" if is_img2img else "txt2img"
        return [axis for axis in self.axis_options if axis.tab in (None, tab)]

    def ui(self, is_img2img: bool) -> list:
        labels = tuple(axis.label for axis in self.axes(is_img2img))
        controls = []
        for name, default in (("X", 1), ("Y", 0), ("Z", 0)):
            controls += [
                Dropdown(f"{name} type", value=labels[default], choices=labels, type="index"),
                Textbox(f"{name} values", value="", lines=1),
                Dropdown(f"{name} values", value=[], multiselect=True, visible=False),
            ]
        return controls + [
            Checkbox("Draw legend", value=True),
            Checkbox("Include Sub Images", value=False),
            Checkbox("Include Sub Grids", value=False),
            Checkbox("Keep -1 for seeds", value=False),
            Checkbox("Vary seeds for X", value=False),
            Checkbox("Vary seeds for Y", value=False),
            Checkbox("Vary seeds for Z", value=False),
            Slider("Grid margins (px)", value=0, minimum=0, maximum=500, step=2),
            Checkbox("Use text inputs instead of dropdowns", value=False),
        ]

    def _axis(self, name: str, kind, text, dropdown, csv_mode: bool, is_img2img: bool) -> _Axis:
        options = self.axes(is_img2img)
        if isinstance(kind, str):
            option = next((axis for axis in options if axis.label == kind), None)
            if option is None:
                raise ValueError(f"X/Y/Z plot: unknown {name} type {kind!r}; allowed: {', '.join(a.label for a in options)}")
        elif isinstance(kind, int) and 0 <= kind < len(options):
            option = options[kind]
        else:
            raise ValueError(f"X/Y/Z plot: {name} type index {kind!r} is out of range 0-{len(options) - 1}")
        from_dropdown = option.choices is not None and not csv_mode and dropdown
        values = parse_axis_values(option, text, dropdown, csv_mode)
        return _Axis(name, option, values, join_csv(list(dropdown)) if from_dropdown else (text or ""))

    def run(self, p: Processing, x_type=1, x_values="", x_values_dropdown=None, y_type=0, y_values="",
            y_values_dropdown=None, z_type=0, z_values="", z_values_dropdown=None, draw_legend=True,
            include_lone_images=False, include_sub_grids=False, no_fixed_seeds=False, vary_seeds_x=False,
            vary_seeds_y=False, vary_seeds_z=False, margin_size=0, csv_mode=False) -> Processed:
        if not no_fixed_seeds:
            p.seed = rng.fix_seed(p.seed)
            p.subseed = rng.fix_seed(p.subseed)
        xa, ya, za = (self._axis(name, kind, text, dropdown, csv_mode, p.is_img2img) for name, kind, text, dropdown in (
            ("X", x_type, x_values, x_values_dropdown), ("Y", y_type, y_values, y_values_dropdown),
            ("Z", z_type, z_values, z_values_dropdown)))
        if not no_fixed_seeds:
            for axis in (xa, ya, za):
                if axis.option.label in SEED_AXES:
                    axis.values = _fix_seeds(axis.values)
        self._check_values(p, (xa, ya, za))

        header = {"Script": self.title(), **xa.header(not no_fixed_seeds), **ya.header(not no_fixed_seeds)}
        z_header = za.header(not no_fixed_seeds)
        nx, ny, nz = len(xa.values), len(ya.values), len(za.values)

        def make_cell(ix: int, iy: int, iz: int) -> Processing:
            pc = copy.copy(p)
            pc.do_not_save_grid = True
            for axis, i in ((xa, ix), (ya, iy), (za, iz)):
                axis.option.apply(pc, axis.values[i], axis.values)
            xdim, ydim = (nx if vary_seeds_x else 1), (ny if vary_seeds_y else 1)
            pc.seed += ((ix if vary_seeds_x else 0) + (iy * xdim if vary_seeds_y else 0)
                        + (iz * xdim * ydim if vary_seeds_z else 0))
            if ix == 0 and iy == 0:
                pc.extra_generation_params.update(header)
                if iz == 0:
                    pc.extra_generation_params.update(z_header)
            return pc

        results = self._run_cells((nx, ny, nz), (xa.option.cost, ya.option.cost, za.option.cost), make_cell)
        return self._assemble(p, xa, ya, za, results, draw_legend, include_lone_images, include_sub_grids, margin_size)

    def _check_values(self, p: Processing, axes) -> None:
        """Each value applied alone to a copy of the job must make a valid request: errors come
        before the first image, not after an hour of them."""
        for axis in axes:
            for value in axis.values:
                probe = copy.copy(p)
                try:
                    axis.option.apply(probe, value, axis.values)
                    probe.request.validate(self.upscaler_names() if self.upscaler_names else ())
                except (InvalidRequest, ValueError) as error:
                    raise ValueError(f"X/Y/Z plot: {axis.option.label} value {value!r}: {error}") from None

    @staticmethod
    def _run_cells(shape, costs, make_cell) -> dict[tuple[int, int, int], Processed]:
        """Generate cell by cell (costly axes outermost); stops at an interrupt. A failing cell is
        logged and left blank, as in A1111; when every cell fails the first error is raised."""
        order = _loop_order(*costs)
        sizes = dict(zip("xyz", shape))
        results: dict[tuple[int, int, int], Processed] = {}
        first_error = None
        for outer, middle, inner in itertools.product(*(range(sizes[axis]) for axis in order)):
            index = dict(zip(order, (outer, middle, inner)))
            key = (index["x"], index["y"], index["z"])
            try:
                processed = process_images(make_cell(*key))
            except Exception as error:  # noqa: BLE001 - one bad cell must not lose the others
                log.exception("X/Y/Z plot: cell %s failed", key)
                first_error = first_error or error
                continue
            results[key] = processed
            if processed.interrupted:
                break
        if first_error is not None and not any(r.images for r in results.values()):
            raise first_error
        return results

    def _assemble(self, p, xa, ya, za, results, draw_legend, include_lone_images, include_sub_grids, margin) -> Processed:
        nx, ny, nz = len(xa.values), len(ya.values), len(za.values)
        done = [r for r in results.values() if r.images]
        interrupted = any(r.interrupted for r in results.values())
        if not done:
            return Processed(images=[], infotexts=[], interrupted=interrupted, width=p.width, height=p.height)
        template = done[0]
        blank_size = done[0].images[0].size
        keys = [(ix, iy, iz) for iz in range(nz) for iy in range(ny) for ix in range(nx)]
        cells, infos, saved = [], [], []
        for key in keys:
            r = results.get(key)
            ok = r is not None and bool(r.images)
            cells.append(r.images[0] if ok else Image.new("RGB", blank_size))
            infos.append(r.infotexts[0] if ok and r.infotexts else "")
            saved.append(r.saved[0] if ok and r.saved else None)

        def label_row(axis):
            return [[GridAnnotation(str(axis.option.format_value(axis.option, value)))] for value in axis.values]

        sub_grids = []
        for iz in range(nz):
            layer = cells[iz * nx * ny:(iz + 1) * nx * ny]
            grid = image_grid(layer, rows=ny)
            if draw_legend:  # cells are the largest image's size (a Size axis makes them differ)
                grid = draw_grid_annotations(grid, grid.width // nx, grid.height // ny, label_row(xa), label_row(ya), margin)
            sub_grids.append(grid)
        main = image_grid(sub_grids, rows=1)
        if draw_legend:
            main = draw_grid_annotations(main, main.width // nz, main.height, label_row(za), [[GridAnnotation()]])

        first_info = next((info for info in infos if info), "")
        sub_infos = [infos[iz * nx * ny] or first_info for iz in range(nz)]
        grids, grid_infos = [main], [sub_infos[0]]
        if include_sub_grids and nz > 1:
            grids += sub_grids
            grid_infos += sub_infos
        grid_saved = [p.save_grid(grid, info, "xyz_grid") for grid, info in zip(grids, grid_infos)]

        def per_cell(attribute: str, fallback):
            return [getattr(results[k], attribute) if k in results and results[k].images else fallback for k in keys]

        return Processed(
            images=grids + (cells if include_lone_images else []),
            infotexts=grid_infos + (infos if include_lone_images else []),
            all_prompts=per_cell("prompt", p.prompt),
            all_negative_prompts=per_cell("negative_prompt", p.negative_prompt),
            all_seeds=per_cell("seed", -1),
            all_subseeds=per_cell("subseed", -1),
            index_of_first_image=len(grids),
            width=template.width,
            height=template.height,
            interrupted=interrupted,
            saved=grid_saved + (saved if include_lone_images else []),
        )
