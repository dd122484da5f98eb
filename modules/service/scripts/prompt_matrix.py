"""The "Prompt matrix" script (A1111's ``scripts/prompt_matrix.py``): ``base|a|b`` makes every
combination of the ``|`` parts with the base (``base``, ``base, a``, ``base, b``, ``base, a, b``),
one image each, in a grid whose legend shows which parts are on."""

from __future__ import annotations

import copy

from modules.core import rng
from modules.core.grid import draw_prompt_matrix, image_grid
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import Checkbox, Radio, Script, Slider

PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}


def matrix_prompts(prompt: str, put_at_start: bool = False, delimiter: str = ", ") -> list[str]:
    """All 2^(n-1) prompts of a ``|``-separated prompt; combination k holds part i+1 when bit i of k is set."""
    base, *parts = prompt.split("|")
    prompts = []
    for combination in range(1 << len(parts)):
        chosen = [part.strip().strip(",") for i, part in enumerate(parts) if combination & (1 << i)]
        prompts.append(delimiter.join(chosen + [base] if put_at_start else [base] + chosen))
    return prompts


class PromptMatrix(Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list:
        return [
            Checkbox("Put variable parts at start of prompt", value=False),
            Checkbox("Use different seed for each picture", value=False),
            Radio("Select prompt", value="positive", choices=PROMPT_TYPES),
            Radio("Select joining char", value="comma", choices=tuple(DELIMITERS)),
            Slider("Grid margins (px)", value=0, minimum=0, maximum=500, step=2),
        ]

    def run(self, p: Processing, put_at_start=False, different_seeds=False, prompt_type="positive",
            variations_delimiter="comma", margin_size=0) -> Processed:
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"Prompt matrix: unknown prompt type {prompt_type!r}; allowed: {', '.join(PROMPT_TYPES)}")
        if variations_delimiter not in DELIMITERS:
            raise ValueError(f"Prompt matrix: unknown joining char {variations_delimiter!r}; allowed: {', '.join(DELIMITERS)}")
        p.seed = rng.fix_seed(p.seed)
        p.subseed = rng.fix_seed(p.subseed)
        field = "prompt" if prompt_type == "positive" else "negative_prompt"
        original = getattr(p, field)
        parts = original.split("|")
        prompts = matrix_prompts(original, put_at_start, DELIMITERS[variations_delimiter])

        results = []
        for i, prompt in enumerate(prompts):
            job = copy.copy(p)
            setattr(job, field, prompt)
            job.seed = p.seed + (i if different_seeds else 0)
            job.batch_size, job.n_iter = 1, 1
            job.do_not_save_grid = True
            result = process_images(job)
            results.append(result)
            if result.interrupted:
                break

        done = [r for r in results if r.images]
        if not done:
            return Processed(images=[], infotexts=[], interrupted=any(r.interrupted for r in results))
        images = [r.images[0] for r in done]
        infotexts = [r.infotexts[0] if r.infotexts else "" for r in done]
        grid = image_grid(images, rows=1 << ((len(parts) - 1) // 2))
        if len(images) == len(prompts):  # an interrupted matrix has no complete legend to draw
            grid = draw_prompt_matrix(grid, images[0].width, images[0].height, parts, margin_size)
        saved_grid = p.save_grid(grid, infotexts[0], "prompt_matrix")
        return Processed(
            images=[grid, *images],
            infotexts=[infotexts[0], *infotexts],
            all_prompts=[r.prompt for r in done],
            all_negative_prompts=[r.negative_prompt for r in done],
            all_seeds=[r.seed for r in done],
            all_subseeds=[r.subseed for r in done],
            index_of_first_image=1,
            width=done[0].width,
            height=done[0].height,
            interrupted=any(r.interrupted for r in results),
            saved=[saved_grid, *(r.saved[0] if r.saved else None for r in done)],
        )
