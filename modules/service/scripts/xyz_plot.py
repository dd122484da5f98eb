"""The "X/Y/Z plot" script (A1111's ``scripts/xyz_grid.py``): one generation per combination of up to
three axes' values, one grid per Z value (Y values as rows, X values as columns) with the values as
legend, and those grids side by side.

Values are comma-separated (CSV, so quotes protect commas); number axes also take ranges: ``1-5``,
``1-10 (+2)`` (step), ``1-10 [5]`` (count, evenly spaced; whole-number axes truncate).
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image

from modules.core import rng
from modules.core.generation.request import HIRES_UPSCALERS, InvalidRequest
from modules.core.grid import GridAnnotation, draw_grid_annotations, image_grid
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import Checkbox, Dropdown, Script, Slider, Textbox

log = logging.getLogger(__name__)

PERMUTATIONS = "permutations"  # an axis type: every ordering of the listed values
SEED_AXES = ("Seed", "Var. seed")


# ---- applying a value to a job ------------------------------------------------------------------

def set_field(name: str):
    def apply(p: Processing, value, values) -> None:
        setattr(p, name, value)
    return apply


def set_override(key: str, boolean: bool = False):
    def apply(p: Processing, value, values) -> None:
        p.override_settings[key] = value.lower() == "true" if boolean else value
    return apply


def apply_prompt_sr(p: Processing, value: str, values: list) -> None:
    search = values[0]
    if search not in p.prompt and search not in p.negative_prompt:
        raise ValueError(f"Prompt S/R did not find {search!r} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(search, value)
    p.negative_prompt = p.negative_prompt.replace(search, value)


def apply_prompt_order(p: Processing, order: tuple, values: list) -> None:
    """The tokens' slots in the prompt, taken in the order they appear, are refilled in ``order``."""
    missing = [token for token in order if token not in p.prompt]
    if missing:
        raise ValueError(f"Prompt order did not find {', '.join(map(repr, missing))} in the prompt.")
    rest, gaps = p.prompt, []
    for token in sorted(order, key=p.prompt.find):
        at = rest.find(token)
        gaps.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(gap + token for gap, token in zip(gaps, order)) + rest


def parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.partition("x")
    try:
        if not sep:
            raise ValueError
        return int(width.strip()), int(height.strip())
    except ValueError:
        raise ValueError(f"Size must be WIDTHxHEIGHT, e.g. 512x768; got {text!r}") from None


def apply_size(p: Processing, value: str, values: list) -> None:
    p.width, p.height = parse_size(value)


def apply_uni_pc_order(p: Processing, value: int, values: list) -> None:
    p.override_settings["uni_pc_order"] = min(value, p.steps - 1)


# ---- legend labels -------------------------------------------------------------------------------

def _rounded(value):
    return round(value, 8) if isinstance(value, float) else value


def label_with_name(axis: "AxisOption", value) -> str:
    return f"{axis.label}: {_rounded(value)}"


def label_value(axis: "AxisOption", value):
    return _rounded(value)


def label_joined(axis: "AxisOption", value) -> str:
    return ", ".join(value)


def label_nothing(axis: "AxisOption", value) -> str:
    return ""


def label_basename(axis: "AxisOption", value) -> str:
    return os.path.basename(value)


# ---- axes ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AxisOption:
    label: str
    type: Any  # int, float, str or PERMUTATIONS
    apply: Callable[[Processing, Any, list], None]
    format_value: Callable[["AxisOption", Any], Any] = label_with_name
    choices: Callable[[], list[str]] | None = None
    # Maps a typed value to its canonical choice (None: not one); default: case-insensitive equality.
    match: Callable[[str], str | None] | None = None
    check: Callable[[Any], Any] | None = None  # raises ValueError for a malformed value
    cost: float = 0.0  # slow-to-change axes (checkpoint) are looped over outermost
    tab: str | None = None  # "txt2img" / "img2img" when the axis exists on one tab only

    def canonical(self, value: str) -> str:
        found = self.match(value) if self.match else next(
            (choice for choice in self.choices() if choice.lower() == value.strip().lower()), None)
        if found is None:
            raise ValueError(f"X/Y/Z plot: {self.label} has no value {value!r}; "
                             f"allowed: {', '.join(self.choices()) or 'none'}")
        return found


def _sampler_names() -> list[str]:
    return [sampler.name for sampler in SAMPLERS]


def match_sampler(value: str) -> str | None:
    wanted = value.strip().lower()
    for sampler in SAMPLERS:
        if wanted == sampler.name.lower() or wanted in (alias.lower() for alias in sampler.aliases):
            return sampler.name
    return None


_CHECKSUM = re.compile(r"\s*\[[^]]+]\s*$")


def closest_checkpoint(titles: list[str], wanted: str) -> str | None:
    """As A1111's ``get_closet_checkpoint_match``: an exact title, else the shortest title holding the
    text (tried again without a trailing ``[hash]``)."""
    if not wanted:
        return None
    if wanted in titles:
        return wanted
    for needle in (wanted, _CHECKSUM.sub("", wanted)):
        found = sorted((title for title in titles if needle in title), key=len)
        if found:
            return found[0]
    return None


def build_axis_options(checkpoint_titles: Callable[[], list[str]], vae_names: Callable[[], list[str]]) -> list[AxisOption]:
    """A1111 v1.10.1's axes (those this program has a setting or field for), in its order."""
    def vae_choices() -> list[str]:
        return ["Automatic", "None", *vae_names()]

    def match_vae(value: str) -> str | None:
        wanted = value.strip().lower()
        if wanted in ("auto", "automatic"):
            return "Automatic"
        return next((name for name in vae_choices() if name.lower() == wanted), None)

    A = AxisOption
    return [
        A("Nothing", str, lambda p, x, xs: None, format_value=label_nothing),
        A("Seed", int, set_field("seed")),
        A("Var. seed", int, set_field("subseed")),
        A("Var. strength", float, set_field("subseed_strength")),
        A("Steps", int, set_field("steps")),
        A("Hires steps", int, set_field("hr_second_pass_steps"), tab="txt2img"),
        A("CFG Scale", float, set_field("cfg_scale")),
        A("Prompt S/R", str, apply_prompt_sr, format_value=label_value),
        A("Prompt order", PERMUTATIONS, apply_prompt_order, format_value=label_joined),
        A("Sampler", str, set_field("sampler_name"), format_value=label_value, choices=_sampler_names,
          match=match_sampler, tab="txt2img"),
        A("Hires sampler", str, set_field("hr_sampler_name"), choices=_sampler_names, match=match_sampler, tab="txt2img"),
        A("Sampler", str, set_field("sampler_name"), format_value=label_value, choices=_sampler_names,
          match=match_sampler, tab="img2img"),
        A("Checkpoint name", str, set_override("sd_model_checkpoint"), format_value=label_basename, cost=1.0,
          choices=lambda: sorted(checkpoint_titles(), key=str.casefold),
          match=lambda value: closest_checkpoint(list(checkpoint_titles()), value)),
        A("Sigma Churn", float, set_override("s_churn")),
        A("Sigma min", float, set_override("s_tmin")),
        A("Sigma max", float, set_override("s_tmax")),
        A("Sigma noise", float, set_override("s_noise")),
        A("Schedule type", str, set_field("scheduler"), choices=lambda: [s.label for s in SCHEDULERS]),
        A("Schedule min sigma", float, set_override("sigma_min")),
        A("Schedule max sigma", float, set_override("sigma_max")),
        A("Schedule rho", float, set_override("rho")),
        A("Beta schedule alpha", float, set_override("beta_dist_alpha")),
        A("Beta schedule beta", float, set_override("beta_dist_beta")),
        A("Eta", float, set_field("eta")),
        A("Clip skip", int, set_override("CLIP_stop_at_last_layers")),
        A("Denoising", float, set_field("denoising_strength")),
        A("Initial noise multiplier", float, set_field("initial_noise_multiplier"), tab="img2img"),
        A("Hires upscaler", str, set_field("hr_upscaler"), choices=lambda: list(HIRES_UPSCALERS), tab="txt2img"),
        A("VAE", str, set_override("sd_vae"), cost=0.7, choices=vae_choices, match=match_vae),
        A("UniPC Order", int, apply_uni_pc_order, cost=0.5),
        A("Always discard next-to-last sigma", str, set_override("always_discard_next_to_last_sigma", boolean=True),
          choices=lambda: ["False", "True"]),
        A("RNG source", str, set_override("randn_source"), choices=lambda: ["GPU", "CPU", "NV"]),
        A("Size", str, apply_size, check=parse_size),
    ]


# ---- values --------------------------------------------------------------------------------------

_INT = r"([+-]?\s*\d+)"
_FLOAT = r"([+-]?\s*\d+(?:\.\d*)?)"
RANGE_INT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_INT_COUNT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\[(\d+)\s*])?\s*")
RANGE_FLOAT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RANGE_FLOAT_COUNT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\[(\d+(?:\.\d*)?)\s*])?\s*")


def split_csv(text: str) -> list[str]:
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [value.strip() for value in itertools.chain.from_iterable(rows)]


def join_csv(values: list[str]) -> str:
    with io.StringIO() as out:
        csv.writer(out).writerow(values)
        return out.getvalue().strip()


def _number(text: str, kind):
    return kind(text.replace(" ", ""))


def expand_ranges(values: list[str], kind) -> list:
    """``kind`` int or float: each range entry becomes its values, anything else stays as written."""
    plain, counted = (RANGE_INT, RANGE_INT_COUNT) if kind is int else (RANGE_FLOAT, RANGE_FLOAT_COUNT)
    expanded: list = []
    for value in values:
        if m := plain.fullmatch(value):
            start, end = _number(m.group(1), kind), _number(m.group(2), kind)
            step = _number(m.group(3), kind) if m.group(3) else 1
            if step == 0:
                raise ValueError(f"a range's step must not be 0: {value!r}")
            if kind is int:
                expanded += list(range(start, end + 1, step))
            else:
                expanded += np.arange(start, end + step, step).tolist()
        elif m := counted.fullmatch(value):
            start, end = _number(m.group(1), kind), _number(m.group(2), kind)
            count = int(m.group(3)) if m.group(3) else 1
            points = np.linspace(start=start, stop=end, num=count).tolist()
            expanded += [int(x) for x in points] if kind is int else points
        else:
            expanded.append(value)
    return expanded


def parse_axis_values(axis: AxisOption, text: str, dropdown: list | None = None, csv_mode: bool = False) -> list:
    """The typed, expanded and checked values of ``axis``; a choice axis reads its dropdown unless
    ``csv_mode`` (or the dropdown is empty, as API callers often leave it)."""
    if axis.label == "Nothing":
        return [0]
    use_dropdown = axis.choices is not None and not csv_mode and dropdown
    raw = [str(v).strip() for v in dropdown] if use_dropdown else split_csv(text or "")
    if not raw:
        raise ValueError(f"X/Y/Z plot: no values given for {axis.label}")
    if axis.type in (int, float):
        raw = expand_ranges(raw, axis.type)
    if axis.type is PERMUTATIONS:
        return list(itertools.permutations(raw))
    values = []
    for value in raw:
        try:
            values.append(axis.type(value))
        except ValueError:
            raise ValueError(f"X/Y/Z plot: {value!r} is not a valid {axis.type.__name__} for {axis.label}") from None
    if axis.choices is not None:
        values = [axis.canonical(value) for value in values]
    if axis.check is not None:
        for value in values:
            try:
                axis.check(value)
            except ValueError as error:
                raise ValueError(f"X/Y/Z plot: {axis.label}: {error}") from None
    return values


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
    def __init__(self, checkpoint_titles: Callable[[], list[str]], vae_names: Callable[[], list[str]]):
        self.axis_options = build_axis_options(checkpoint_titles, vae_names)

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

    @staticmethod
    def _check_values(p: Processing, axes) -> None:
        """Each value applied alone to a copy of the job must make a valid request: errors come
        before the first image, not after an hour of them."""
        for axis in axes:
            for value in axis.values:
                probe = copy.copy(p)
                try:
                    axis.option.apply(probe, value, axis.values)
                    probe.request.validate()
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
