"""The "Loopback" script (A1111's ``scripts/loopback.py``): img2img the picture, feed the result back
in as the next init image, ``loops`` times, moving the denoising strength from the job's value to a
final one along a curve. Each batch (``n_iter``) starts again from the original picture; the seed
keeps counting up by one per loop across batches."""

from __future__ import annotations

import math

from modules.core import rng
from modules.core.grid import image_grid
from modules.service.processing import Processed, Processing, process_images
from modules.service.scripts.api import Dropdown, Script, Slider

CURVES = ("Aggressive", "Linear", "Lazy")
# A1111 also offers "CLIP" and "DeepBooru"; there is no interrogator here yet, the slot keeps script_args positional.
INTERROGATORS = ("None",)


def denoising_strength_at(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """The strength of loop ``loop`` (0-based): ``initial`` at 0, ``final`` at ``loops - 1``, in
    between following the curve (Aggressive: sine ease-out, Lazy: cosine ease-in)."""
    if loops == 1:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        shape = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        shape = 1 - math.cos(progress * math.pi * 0.5)
    else:
        shape = progress
    return initial + (final - initial) * shape


class Loopback(Script):
    def title(self) -> str:
        return "Loopback"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        return [
            Slider("Loops", value=4, minimum=1, maximum=32, step=1, elem_id="loops"),
            Slider("Final denoising strength", value=0.5, minimum=0, maximum=1, step=0.01, elem_id="final_denoising_strength"),
            Dropdown("Denoising strength curve", value="Linear", choices=CURVES),
            Dropdown("Append interrogated prompt at each iteration", value="None", choices=INTERROGATORS),
        ]

    def run(self, p: Processing, loops=4, final_denoising_strength=0.5, denoising_curve="Linear",
            append_interrogation="None") -> Processed:
        if denoising_curve not in CURVES:
            raise ValueError(f"Loopback: unknown denoising curve {denoising_curve!r}; allowed: {', '.join(CURVES)}")
        if append_interrogation not in INTERROGATORS:
            raise ValueError(f"Loopback: appending an interrogated prompt ({append_interrogation!r}) is not available; "
                             "allowed: None")
        loops = int(loops)
        p.seed = rng.fix_seed(p.seed)
        p.subseed = rng.fix_seed(p.subseed)
        batch_count = p.n_iter
        p.extra_generation_params.update({"Final denoising strength": final_denoising_strength,
                                          "Denoising curve": denoising_curve})
        p.batch_size = p.n_iter = 1
        p.do_not_save_grid = True
        original_images, original_fill, initial = p.init_images, p.inpainting_fill, p.denoising_strength

        kept: list[Processed] = []  # one result per shown image
        interrupted = False
        for _ in range(batch_count):
            p.init_images, p.denoising_strength = original_images, initial
            last = None
            for loop in range(loops):
                processed = process_images(p)
                if processed.interrupted or not processed.images:
                    interrupted = True
                    break
                p.seed = processed.seed + 1
                p.denoising_strength = denoising_strength_at(loop + 1, loops, initial, final_denoising_strength,
                                                             denoising_curve)
                p.init_images = [processed.images[0]]
                p.inpainting_fill = 1  # later loops inpaint from the picture so far ("original")
                last = processed
                if batch_count == 1:
                    kept.append(processed)
            if batch_count > 1 and last is not None and not interrupted:
                kept.append(last)
            p.inpainting_fill = original_fill
            if interrupted:
                break
        return _result(p, kept, interrupted)


def _result(p: Processing, kept: list[Processed], interrupted: bool) -> Processed:
    images = [result.images[0] for result in kept]
    infotexts = [result.info for result in kept]
    grids, grid_infos, saved = [], [], []
    if len(images) > 1:
        grid = image_grid(images, rows=1)
        grids, grid_infos = [grid], [infotexts[0]]
        saved.append(p.save_grid(grid, "", "grid"))  # A1111 writes this grid without parameters
    return Processed(
        images=grids + images,
        infotexts=grid_infos + infotexts,
        all_prompts=[result.prompt for result in kept],
        all_negative_prompts=[result.negative_prompt for result in kept],
        all_seeds=[result.seed for result in kept],
        all_subseeds=[result.subseed for result in kept],
        index_of_first_image=len(grids),
        width=p.width,
        height=p.height,
        interrupted=interrupted,
        saved=saved + [result.saved[0] if result.saved else None for result in kept],
    )
