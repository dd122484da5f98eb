"""The "Prompts from file or textbox" script (A1111's ``scripts/prompts_from_file.py``): one job per
line. A line is a prompt, or command-line style options (``--prompt "a cat" --steps 30 ...``) that
override the job's fields for that line."""

from __future__ import annotations

import copy
import os
import shlex
from typing import Any, Callable

from modules.core import rng
from modules.core.sampling.samplers import SAMPLERS
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import Checkbox, File, Radio, Script, Textbox
from modules.service.scripts.xyz_axes import match_sampler


def _boolean(text: str) -> bool:
    return text == "true"  # A1111: anything but the exact word is False


def _sampler_name(text: str) -> str:
    name = match_sampler(text)
    if name is None:
        raise ValueError(f"unknown sampler {text!r}; choose one of: {', '.join(s.name for s in SAMPLERS)}")
    return name


def _sampler_by_index(text: str) -> str:
    index = int(text)
    if not 0 <= index < len(SAMPLERS):
        raise ValueError(f"sampler_index {index} is out of range 0-{len(SAMPLERS) - 1}")
    return SAMPLERS[index].name


def _styles(text: str) -> list[str]:
    return [style.strip() for style in text.split(",") if style.strip()]


# Option → how its value is read (A1111's ``prompt_tags``); prompt and negative_prompt take every
# word up to the next option.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": str,
    "outpath_samples": str,
    "outpath_grids": str,
    "prompt_for_display": str,
    "prompt": str,
    "negative_prompt": str,
    "styles": _styles,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": _sampler_by_index,
    "sampler_name": _sampler_name,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "restore_faces": _boolean,
    "tiling": _boolean,
    "do_not_save_samples": _boolean,
    "do_not_save_grid": _boolean,
}
GREEDY = ("prompt", "negative_prompt")


def parse_options(line: str) -> dict[str, Any]:
    """``--name value`` pairs of one line, typed; ``sampler_index`` comes back as ``sampler_name``."""
    args = shlex.split(line)
    result: dict[str, Any] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--"):
            raise ValueError(f'expected an option starting with "--", got {arg!r}')
        name = arg[2:]
        if name not in OPTIONS:
            raise ValueError(f"unknown option {arg!r}; known: {', '.join('--' + key for key in OPTIONS)}")
        if pos + 1 >= len(args):
            raise ValueError(f"missing value for option {arg}")
        if name in GREEDY:
            end = pos + 2
            while end < len(args) and not args[end].startswith("--"):
                end += 1
            result[name] = " ".join(args[pos + 1:end])
            pos = end
            continue
        try:
            value = OPTIONS[name](args[pos + 1])
        except ValueError as error:
            raise ValueError(f"bad value for {arg}: {error}") from None
        result["sampler_name" if name == "sampler_index" else name] = value
        pos += 2
    return result


def parse_line(line: str) -> dict[str, Any]:
    """One line's job settings. A line starting with ``--`` is options; any other line is a prompt,
    even one holding ``--`` (A1111 falls back to that when such a line does not parse). A bad
    option raises ``ValueError`` naming the line."""
    line = line.strip()
    if line.startswith("--"):
        try:
            return parse_options(line)
        except ValueError as error:
            raise ValueError(f"Prompts from file: line {line!r}: {error}") from None
    return {"prompt": line}


def read_prompt_file(file) -> str | None:
    """The uploaded file's text: bytes, a path (str/PathLike, or an object with ``.name`` as Gradio's
    temp files), or the text itself; None when there is no file."""
    if file is None:
        return None
    if isinstance(file, (bytes, bytearray)):
        return bytes(file).decode("utf8", errors="ignore")
    path = getattr(file, "name", file)
    if isinstance(path, (str, os.PathLike)) and "\n" not in str(path) and os.path.isfile(path):
        with open(path, "rb") as handle:
            return handle.read().decode("utf8", errors="ignore")
    if isinstance(file, str):
        return file
    raise ValueError(f"Prompts from file: cannot read the uploaded file {file!r}")


def _joined(line_text: str, base: str, at_start: bool) -> str:
    return f"{line_text} {base}" if at_start else f"{base} {line_text}"


class PromptsFromFile(Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> list:
        return [
            Checkbox("Iterate seed every line", value=False),
            Checkbox("Use same random seed for all lines", value=False),
            Radio("Insert prompts at the", value="start", choices=("start", "end")),
            Textbox("List of prompt inputs", value="", lines=1),
            File("Upload prompt inputs", value=None),
        ]

    def run(self, p: Processing, checkbox_iterate=False, checkbox_iterate_batch=False, prompt_position="start",
            prompt_txt="", file=None) -> Processed:
        # An upload replaces the textbox's text in A1111's UI; here the file wins when both are given.
        text = read_prompt_file(file)
        lines = [line.strip() for line in (prompt_txt if text is None else text).splitlines()]
        jobs = [(line, parse_line(line)) for line in lines if line]
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = rng.random_seed()

        at_start = prompt_position == "start"
        for line, args in jobs:  # every line must make a valid request before the first image
            try:
                self._job(p, args, at_start).request.validate()
            except ValueError as error:
                raise ValueError(f"Prompts from file: line {line!r}: {error}") from None

        images, infotexts, saved = [], [], []
        prompts, negatives, seeds, subseeds = [], [], [], []
        interrupted = False
        for line, args in jobs:
            job = self._job(p, args, at_start)
            result = process_images(job)
            images += result.images
            infotexts += result.infotexts
            saved += result.saved or [None] * len(result.images)
            prompts += result.all_prompts
            negatives += result.all_negative_prompts
            seeds += result.all_seeds
            subseeds += result.all_subseeds
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter
            if result.interrupted:
                interrupted = True
                break

        return Processed(images=images, infotexts=infotexts, all_prompts=prompts, all_negative_prompts=negatives,
                         all_seeds=seeds, all_subseeds=subseeds, width=p.width, height=p.height,
                         interrupted=interrupted, saved=saved)

    @staticmethod
    def _job(p: Processing, args: dict[str, Any], at_start: bool) -> Processing:
        job = copy.copy(p)
        job.do_not_save_grid = True
        for key, value in args.items():
            if key == "sd_model":
                job.override_settings["sd_model_checkpoint"] = value
            else:
                setattr(job, key, value)
        if args.get("prompt") and p.prompt:
            job.prompt = _joined(args["prompt"], p.prompt, at_start)
        if args.get("negative_prompt") and p.negative_prompt:
            job.negative_prompt = _joined(args["negative_prompt"], p.negative_prompt, at_start)
        return job
