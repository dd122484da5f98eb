"""/sdapi/v1 plumbing: A1111 bodies → service requests, ``info``, and JSON errors."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules.core.generation.request import Img2ImgRequest, InvalidRequest, Txt2ImgRequest
from modules.core.version import infotext_version
from modules.service.api.images import UrlPolicy, decode_image
from modules.service.api.models import Img2ImgBody, Txt2ImgBody
from modules.service.generation import JobOutcome, OutOfMemory
from modules.service.models import ModelLoadError
from modules.service.queue import DuplicateJob, JobCancelled, QueueFull

API_PREFIX = "/sdapi/v1"


def _error(status: int, error: str, detail, body="", errors: str = "", headers: dict | None = None) -> JSONResponse:
    """A1111's error body: {error, detail, body, errors}."""
    content = jsonable_encoder({"error": error, "detail": detail, "body": body, "errors": errors})
    return JSONResponse(status_code=status, content=content, headers=headers)


def _short(value, limit: int = 200):
    """The request body echoed in an error, with long strings (base64 images) cut."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} characters)"
    if isinstance(value, dict):
        return {key: _short(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_short(item) for item in value]
    return value


def _field_name(location) -> str:
    """``("body", "steps")`` → ``steps``; the body itself (empty, not JSON, not an object) → ``body``."""
    parts = list(location)
    if parts[:1] == ["body"]:
        parts = parts[1:]
        if parts and isinstance(parts[0], int):  # a position in unparsable JSON
            parts = []
    return ".".join(map(str, parts)) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON; a user's mistake is a 4xx naming the field, never a 500."""

    async def invalid(request: Request, error: InvalidRequest) -> JSONResponse:
        return _error(422, type(error).__name__, str(error), errors=str(error))

    async def validation(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        text = "; ".join(f"{_field_name(p.get('loc', ()))}: {p.get('msg', '')}" for p in problems)
        detail = [{"loc": list(p.get("loc", ())), "msg": p.get("msg", ""), "type": p.get("type", "")} for p in problems]
        return _error(422, "RequestValidationError", detail, _short(getattr(error, "body", "")), text)

    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, "HTTPException", error.detail, errors=str(error.detail),
                      headers=getattr(error, "headers", None))

    def status(code: int):
        async def handler(request: Request, error: Exception) -> JSONResponse:
            return _error(code, type(error).__name__, str(error), errors=str(error))
        return handler

    app.add_exception_handler(InvalidRequest, invalid)  # InvalidSetting too (a subclass)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(QueueFull, status(429))
    app.add_exception_handler(DuplicateJob, status(409))
    app.add_exception_handler(JobCancelled, status(409))
    app.add_exception_handler(ModelLoadError, status(503))
    app.add_exception_handler(OutOfMemory, status(503))


def _common_fields(body: Txt2ImgBody) -> dict:
    return dict(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        steps=body.steps,
        sampler_name=body.sampler_name or body.sampler_index or "Euler",
        scheduler=body.scheduler or "Automatic",
        cfg_scale=body.cfg_scale,
        width=body.width,
        height=body.height,
        seed=body.seed,
        subseed=body.subseed,
        subseed_strength=body.subseed_strength,
        seed_resize_from_w=body.seed_resize_from_w,
        seed_resize_from_h=body.seed_resize_from_h,
        batch_size=body.batch_size,
        n_iter=body.n_iter,
        eta=body.eta,
        refiner_checkpoint="" if body.refiner_checkpoint in (None, "None", "none") else body.refiner_checkpoint,
        refiner_switch_at=0.8 if body.refiner_switch_at is None else body.refiner_switch_at,
    )


def txt2img_request(body: Txt2ImgBody) -> Txt2ImgRequest:
    return Txt2ImgRequest(
        **_common_fields(body),
        denoising_strength=0.75 if body.denoising_strength is None else body.denoising_strength,
        enable_hr=body.enable_hr,
        hr_scale=body.hr_scale,
        hr_upscaler=body.hr_upscaler or "Latent",
        hr_second_pass_steps=body.hr_second_pass_steps,
        hr_resize_x=body.hr_resize_x,
        hr_resize_y=body.hr_resize_y,
        hr_sampler_name="" if body.hr_sampler_name in (None, "Use same sampler") else body.hr_sampler_name,
        hr_scheduler="" if body.hr_scheduler in (None, "Use same scheduler") else body.hr_scheduler,
        hr_prompt=body.hr_prompt,
        hr_negative_prompt=body.hr_negative_prompt,
        hr_checkpoint_name="" if body.hr_checkpoint_name in (None, "Use same checkpoint") else body.hr_checkpoint_name,
    )


def img2img_request(body: Img2ImgBody, noise_multiplier: float, urls: UrlPolicy = UrlPolicy()) -> Img2ImgRequest:
    images = tuple(decode_image(data, f"init_images.{i}", urls) for i, data in enumerate(body.init_images or ()))
    return Img2ImgRequest(
        **_common_fields(body),
        denoising_strength=0.75 if body.denoising_strength is None else body.denoising_strength,
        init_images=images,
        mask=decode_image(body.mask, "mask", urls) if body.mask else None,
        latent_mask=decode_image(body.latent_mask, "latent_mask", urls) if body.latent_mask else None,
        resize_mode=body.resize_mode,
        mask_blur=body.mask_blur if body.mask_blur is not None else body.mask_blur_x,
        inpainting_fill=body.inpainting_fill,
        inpaint_full_res=body.inpaint_full_res,
        inpaint_full_res_padding=body.inpaint_full_res_padding,
        inpainting_mask_invert=body.inpainting_mask_invert,
        initial_noise_multiplier=noise_multiplier if body.initial_noise_multiplier is None else body.initial_noise_multiplier,
    )


def _script(body: Txt2ImgBody) -> tuple[str, list] | None:
    return (body.script_name, list(body.script_args)) if body.script_name else None


def info_json(outcome: JobOutcome, clip_skip: int, styles: list[str] | None) -> str:
    """``info``: A1111's ``Processed.js()`` keys, in its order, as a JSON string."""
    r, req = outcome.result, outcome.result.request
    info = {
        "prompt": r.all_prompts[0],
        "all_prompts": r.all_prompts,
        "negative_prompt": r.all_negative_prompts[0],
        "all_negative_prompts": r.all_negative_prompts,
        "seed": r.seed,
        "all_seeds": r.all_seeds,
        "subseed": r.subseed,
        "all_subseeds": r.all_subseeds,
        "subseed_strength": req.subseed_strength,
        "width": req.width,
        "height": req.height,
        "sampler_name": r.sampler_name,
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": outcome.model.info.stem,
        "sd_model_hash": outcome.model.info.shorthash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": req.denoising_strength if (req.enable_hr or isinstance(req, Img2ImgRequest)) else None,
        "extra_generation_params": r.extra_generation_params,
        "index_of_first_image": outcome.processed.index_of_first_image,
        "infotexts": outcome.processed.infotexts,
        "styles": styles or [],
        "job_timestamp": outcome.job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": "Conditional mask weight" in r.extra_generation_params,
        "version": infotext_version(),
    }
    return json.dumps(info, default=lambda o: None)
