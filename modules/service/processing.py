"""A1111's processing object ``p`` and ``process_images``: what scripts (built-in and extension) run.

``Processing`` wraps one frozen request (``Txt2ImgRequest`` or ``Img2ImgRequest``): reading ``p.steps``
reads the request, assigning ``p.steps = 30`` replaces the request with a changed copy, so a script
can edit ``p`` the way A1111 scripts do while validation still sees one typed request. Anything that
is not a request field (``override_settings``, ``extra_generation_params``, a script's own notes) is
an ordinary attribute. ``copy.copy(p)`` gives an independent job. While it generates, the service
sets A1111's lists on it: ``all_prompts``, ``all_negative_prompts``, ``all_seeds``, ``all_subseeds``
(before the scripts' ``process`` hook, which may rewrite them) and, per batch, ``prompts``,
``negative_prompts``, ``seeds``, ``subseeds``, ``iteration``.

``process_images(p)`` hands the job to the runner the service attached (generate, save, grid) and
returns a ``Processed`` with A1111's attribute names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

from PIL import Image


class Processing:
    def __init__(self, request, *, is_img2img: bool, runner: Callable[["Processing"], "Processed"],
                 override_settings: dict | None = None, outpath_grids: str = "", outpath_samples: str = ""):
        object.__setattr__(self, "_request", request)
        object.__setattr__(self, "_fields", {f.name for f in fields(request)})
        self.is_img2img = is_img2img
        self.runner = runner
        self.override_settings: dict = dict(override_settings or {})
        self.extra_generation_params: dict = {}  # scripts add infotext keys here (A1111's name)
        self.do_not_save_samples = False
        self.do_not_save_grid = False
        self.outpath_grids = outpath_grids
        self.outpath_samples = outpath_samples
        self.n_rows = -1  # setting n_rows: grid rows (-1 automatic, 0 = batch size)
        # A1111 fields extensions read or reset that Hanga keeps elsewhere: styles are already in the
        # prompts, conditioning is encoded per batch (so resetting the caches changes nothing).
        self.styles: list = []
        self.tiling = False
        self.restore_faces = False
        self.sd_model = None  # the loaded model, set when the job has it (A1111's p.sd_model)
        self.cached_c, self.cached_uc = [None, None], [None, None]
        self.cached_hr_c, self.cached_hr_uc = [None, None], [None, None]
        # Saves a script's grid as "<basename>-NNNN.png" when the grid_save setting says so (set by the service).
        self.save_grid: Callable[..., object] = lambda image, infotext, basename="grid": None
        # Saves a picture a script composed itself (SD upscale, outpainting) as a normal sample,
        # when samples are saved for this job; returns the path or None (set by the service).
        self.save_sample: Callable[..., object] = lambda image, infotext, seed, prompt: None

    @property
    def request(self):
        return self._request

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._fields:
            return getattr(self._request, name)
        raise AttributeError(f"'Processing' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_fields", ()):
            object.__setattr__(self, "_request", replace(self._request, **{name: value}))
        else:
            object.__setattr__(self, name, value)

    def __copy__(self) -> "Processing":
        clone = object.__new__(Processing)
        clone.__dict__.update(self.__dict__)
        clone.__dict__["override_settings"] = dict(self.override_settings)
        clone.__dict__["extra_generation_params"] = dict(self.extra_generation_params)
        return clone

    def copy(self) -> "Processing":
        return copy.copy(self)


@dataclass
class ScriptRunnerView:
    """A1111's ``p.scripts``: the job's scripts — its tab's always-on ones and the Script dropdown's
    choice — whose arguments sit in ``p.script_args`` at ``[script.args_from:script.args_to]``."""

    is_img2img: bool
    alwayson_scripts: list = field(default_factory=list)
    selectable_scripts: list = field(default_factory=list)

    @property
    def scripts(self) -> list:
        return [*self.alwayson_scripts, *self.selectable_scripts]


def script_layout(is_img2img: bool, always: list, chosen=None, chosen_args=(), chosen_index: int = 0):
    """(``p.scripts``, ``p.script_args``) in A1111's layout: ``script_args[0]`` is the chosen
    script's 1-based index in the dropdown (0: none), then each always-on script's arguments, then
    the chosen script's; each script's ``args_from`` / ``args_to`` give its slice."""
    flat: list = [chosen_index if chosen is not None else 0]
    for script, args in [*always, *([(chosen, chosen_args)] if chosen is not None else [])]:
        script.args_from = len(flat)
        flat.extend(args)
        script.args_to = len(flat)
    view = ScriptRunnerView(is_img2img, [script for script, _ in always], [chosen] if chosen is not None else [])
    return view, tuple(flat)


@dataclass
class Processed:
    """One job's outcome; ``images`` may start with a grid (then ``index_of_first_image`` is 1)."""

    images: list[Image.Image]
    infotexts: list[str]
    all_prompts: list[str] = field(default_factory=list)
    all_negative_prompts: list[str] = field(default_factory=list)
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)
    index_of_first_image: int = 0
    width: int = 0
    height: int = 0
    interrupted: bool = False
    saved: list = field(default_factory=list)  # paths of saved files, None where not saved

    @property
    def prompt(self) -> str:
        return self.all_prompts[0] if self.all_prompts else ""

    @property
    def negative_prompt(self) -> str:
        return self.all_negative_prompts[0] if self.all_negative_prompts else ""

    @property
    def seed(self) -> int:
        return self.all_seeds[0] if self.all_seeds else -1

    @property
    def subseed(self) -> int:
        return self.all_subseeds[0] if self.all_subseeds else -1

    @property
    def info(self) -> str:
        return self.infotexts[0] if self.infotexts else ""


def process_images(p: Processing) -> Processed:
    """Generate ``p``'s images (and save them and their grid, as the settings say)."""
    return p.runner(p)
