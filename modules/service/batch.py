"""img2img's Batch mode (A1111's ``process_batch``): every picture of a folder, with its mask from a
mask folder, as its own img2img job, saved into an output folder under the picture's name."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from modules.core.generation.image_ops import scaled_size
from modules.core.generation.request import Img2ImgRequest, InvalidRequest
from modules.core.image_input import ImageTooLarge, UnreadableImage, megapixels, read_image
from modules.core.infotext import parse_infotext
from modules.core.png_meta import read_infotext
from modules.core.rng import fix_seed
from modules.service.generation import GenerationService, JobOutcome

log = logging.getLogger(__name__)

BATCH_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
PNG_INFO_PROPS = ("Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash")


@dataclass(frozen=True)
class PngInfoUse:
    """"Append png info to prompts": which of a picture's own infotext keys (``PNG_INFO_PROPS``)
    its job takes, read from the picture or from the same-named file in ``info_dir``."""

    props: tuple[str, ...] = PNG_INFO_PROPS
    info_dir: str = ""


def batch_files(folder: str) -> list[Path]:
    root = Path(folder.strip())
    if not root.is_dir():
        raise InvalidRequest("input_dir", f"{folder!r} does not exist")
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in BATCH_EXTENSIONS)


def batch_mask_for(image_path: Path, masks: list[Path]) -> Path | None:
    """A1111: a lone mask serves every picture; otherwise the mask with the picture's stem."""
    if len(masks) == 1:
        return masks[0]
    return next((mask for mask in masks if mask.stem == image_path.stem), None)


def img2img_batch(service: GenerationService, request: Img2ImgRequest, input_dir: str, output_dir: str = "",
                  mask_dir: str = "", scale_by: float | None = None, override_settings: dict | None = None,
                  on_progress=None, script=None, png_info: PngInfoUse | None = None) -> list[JobOutcome]:
    """One ``service.img2img`` per picture of ``input_dir`` (one seed for all, as
    A1111's ``process_batch``), saved into ``output_dir`` under the picture's name when given."""
    files = batch_files(input_dir)
    if not files:
        raise InvalidRequest("input_dir", f"no images found in {input_dir!r}")
    masks = batch_files(mask_dir) if mask_dir and mask_dir.strip() else []
    request = replace(request, seed=fix_seed(request.seed), subseed=fix_seed(request.subseed), mode=5)
    outcomes = []
    max_pixels = megapixels(service.settings.get("limit_max_image_megapixels"))
    for path in files:
        try:
            picture = read_image(path, max_pixels, path.name, transpose=True)
        except ImageTooLarge as error:
            log.warning("img2img batch: skipping %s", error)
            continue
        except UnreadableImage:
            continue
        mask = None
        if masks:
            mask_path = batch_mask_for(path, masks)
            if mask_path is None:  # A1111 skips pictures without a mask
                continue
            try:
                mask = read_image(mask_path, max_pixels, mask_path.name)
            except (ImageTooLarge, UnreadableImage) as error:
                log.warning("img2img batch: skipping %s (its mask: %s)", path.name, error)
                continue
        size = scaled_size(picture.size, scale_by) if scale_by else (request.width, request.height)
        job = replace(request, init_images=(picture,), mask=mask, width=size[0], height=size[1])
        overrides = dict(override_settings or {})
        if png_info is not None:
            job = _with_png_info(service, job, overrides, path, png_info)
        if output_dir and output_dir.strip():
            overrides.update(outdir_samples=output_dir.strip(), save_to_dirs=False, samples_filename_pattern=path.stem)
        outcome = service.img2img(job, save_images=True if output_dir and output_dir.strip() else None,
                                  override_settings=overrides, on_progress=on_progress, script=script)
        outcomes.append(outcome)
        if outcome.processed.interrupted:
            break
    return outcomes


def _with_png_info(service: GenerationService, job: Img2ImgRequest, overrides: dict, path: Path,
                   use: PngInfoUse) -> Img2ImgRequest:
    """A1111's batch "Append png info": the picture's prompts are appended (after a space), its
    seed, CFG scale, sampler and steps replace the job's, and its model hash picks the checkpoint."""
    text = None
    source = Path(use.info_dir.strip()) / path.name if use.info_dir and use.info_dir.strip() else path
    try:
        with Image.open(source) as opened:
            text, _ = read_infotext(opened)
    except (OSError, UnidentifiedImageError):
        pass
    params = {key: value for key, value in parse_infotext(text).items() if key in use.props} if text else {}
    changes: dict = {}
    try:
        if "Prompt" in params:
            changes["prompt"] = f"{job.prompt} {params['Prompt']}"
        if "Negative prompt" in params:
            changes["negative_prompt"] = f"{job.negative_prompt} {params['Negative prompt']}"
        if "Seed" in params:
            changes["seed"] = int(params["Seed"])
        if "CFG scale" in params:
            changes["cfg_scale"] = float(params["CFG scale"])
        if "Steps" in params:
            changes["steps"] = int(params["Steps"])
    except ValueError:
        pass  # an unreadable number keeps the job's own value, as A1111
    if "Sampler" in params:
        changes["sampler_name"] = str(params["Sampler"])
    model = service.models.find(str(params["Model hash"])) if "Model hash" in params else None
    if model is not None:
        overrides["sd_model_checkpoint"] = model.title
    return replace(job, **changes)
