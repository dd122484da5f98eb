"""img2img's Batch mode (A1111's ``process_batch``): every picture of a folder, with its mask from a
mask folder, as its own img2img job, saved into an output folder under the picture's name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from modules.core.generation.image_ops import scaled_size
from modules.core.generation.request import Img2ImgRequest, InvalidRequest
from modules.core.rng import fix_seed
from modules.service.generation import GenerationService, JobOutcome

BATCH_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


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
                  on_progress=None, script=None) -> list[JobOutcome]:
    """One ``service.img2img`` per picture of ``input_dir`` (one seed for all, as
    A1111's ``process_batch``), saved into ``output_dir`` under the picture's name when given."""
    files = batch_files(input_dir)
    if not files:
        raise InvalidRequest("input_dir", f"no images found in {input_dir!r}")
    masks = batch_files(mask_dir) if mask_dir and mask_dir.strip() else []
    request = replace(request, seed=fix_seed(request.seed), subseed=fix_seed(request.subseed), mode=5)
    outcomes = []
    for path in files:
        try:
            with Image.open(path) as opened:
                picture = ImageOps.exif_transpose(opened)
                picture.load()
        except (OSError, UnidentifiedImageError):
            continue
        mask = None
        if masks:
            mask_path = batch_mask_for(path, masks)
            if mask_path is None:  # A1111 skips pictures without a mask
                continue
            with Image.open(mask_path) as opened:
                mask = opened.copy()
        size = scaled_size(picture.size, scale_by) if scale_by else (request.width, request.height)
        job = replace(request, init_images=(picture,), mask=mask, width=size[0], height=size[1])
        overrides = dict(override_settings or {})
        if output_dir and output_dir.strip():
            overrides.update(outdir_samples=output_dir.strip(), save_to_dirs=False, samples_filename_pattern=path.stem)
        outcome = service.img2img(job, save_images=True if output_dir and output_dir.strip() else None,
                                  override_settings=overrides, on_progress=on_progress, script=script)
        outcomes.append(outcome)
        if outcome.processed.interrupted:
            break
    return outcomes
