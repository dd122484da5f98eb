"""The X/Y/Z plot's axes: what each axis type sets on a job (a request field or an override
setting), how its values read (CSV, number ranges ``1-5``, ``1-10 (+2)``, ``1-10 [5]``, choices
matched loosely as A1111 does) and how they are labelled in the legend."""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from modules.core.generation.request import HIRES_UPSCALERS
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.processing import Processing

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


def build_axis_options(checkpoint_titles: Callable[[], list[str]], vae_names: Callable[[], list[str]],
                       upscaler_names: Callable[[], list[str]] | None = None) -> list[AxisOption]:
    """A1111 v1.10.1's axes (those this program has a setting or field for), in its order.
    ``upscaler_names``: every image upscaler (built-in and model files) for "Hires upscaler"."""
    def hires_upscalers() -> list[str]:
        return list(HIRES_UPSCALERS) + [name for name in (upscaler_names() if upscaler_names else [])
                                        if name not in HIRES_UPSCALERS]

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
        A("Hires upscaler", str, set_field("hr_upscaler"), choices=hires_upscalers, tab="txt2img"),
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
