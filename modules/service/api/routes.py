"""/sdapi/v1 routes over the generation service (the same functions the UI calls)."""

from __future__ import annotations

import base64
import binascii
import io
import json

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from modules.core.generation.request import Img2ImgRequest, InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.png_meta import pnginfo_for, read_infotext
from modules.core.version import infotext_version
from modules.service.api.models import (
    Img2ImgBody, ImageToImageResponse, PngInfoBody, PngInfoResponse, SDModelItem, TextToImageResponse, Txt2ImgBody,
)
from modules.service.generation import GenerationService, JobOutcome
from modules.service.models import ModelLoadError

API_PREFIX = "/sdapi/v1"


def _error(status: int, error: Exception) -> JSONResponse:
    # A1111's error body: {error, detail, body, errors}
    body = {"error": type(error).__name__, "detail": str(error), "body": "", "errors": str(error)}
    return JSONResponse(status_code=status, content=body)


def install_error_handlers(app: FastAPI) -> None:
    async def invalid(request: Request, error: Exception) -> JSONResponse:
        return _error(422, error)

    async def model_error(request: Request, error: Exception) -> JSONResponse:
        return _error(503, error)

    app.add_exception_handler(InvalidRequest, invalid)  # InvalidSetting too (a subclass)
    app.add_exception_handler(ModelLoadError, model_error)


def decode_image(data: str, field: str = "image") -> Image.Image:
    """Raw base64 or a ``data:`` URI; anything else is a clear 422, never a crash."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        image.load()
        return image
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise InvalidRequest(field, f"not a readable base64 image ({error})") from None


def encode_png(image: Image.Image, infotext: str | None) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo_for(infotext) if infotext else None)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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


def img2img_request(body: Img2ImgBody, noise_multiplier: float) -> Img2ImgRequest:
    images = tuple(decode_image(data, "init_images") for data in body.init_images or ())
    return Img2ImgRequest(
        **_common_fields(body),
        denoising_strength=0.75 if body.denoising_strength is None else body.denoising_strength,
        init_images=images,
        mask=decode_image(body.mask, "mask") if body.mask else None,
        latent_mask=decode_image(body.latent_mask, "latent_mask") if body.latent_mask else None,
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


def create_api(service: GenerationService, dependencies: list | None = None) -> FastAPI:
    """The API as its own application, mounted at ``API_PREFIX``: a GET on a POST-only route is
    405 and an unknown route a JSON 404 even with the UI mounted at the site root."""
    api = FastAPI(title="Hanga API (A1111-compatible)", docs_url="/docs", redoc_url=None, dependencies=dependencies or [])
    install_error_handlers(api)
    api.include_router(_routes(service))
    return api


def _routes(service: GenerationService) -> APIRouter:
    router = APIRouter()

    def respond(body: Txt2ImgBody, outcome: JobOutcome, parameters: dict) -> dict:
        settings = service.settings.with_overrides(body.override_settings)
        with_info = settings.get("enable_pnginfo")
        processed = outcome.processed
        images = [encode_png(image, text if with_info else None) for image, text in zip(processed.images, processed.infotexts)
                  ] if body.send_images else []
        info = info_json(outcome, settings.get("CLIP_stop_at_last_layers"), body.styles)
        return dict(images=images, parameters=parameters, info=info)

    @router.post("/txt2img", response_model=TextToImageResponse)
    def txt2img(body: Txt2ImgBody) -> TextToImageResponse:
        outcome = service.txt2img(
            txt2img_request(body),
            save_images=body.save_images,
            override_settings=body.override_settings,
            restore_afterwards=body.override_settings_restore_afterwards,
            script=_script(body),
        )
        return TextToImageResponse(**respond(body, outcome, body.model_dump()))

    @router.post("/img2img", response_model=ImageToImageResponse)
    def img2img(body: Img2ImgBody) -> ImageToImageResponse:
        if not body.init_images:
            raise InvalidRequest("init_images", "needs at least one base64 image")
        settings = service.settings.with_overrides(body.override_settings)
        outcome = service.img2img(
            img2img_request(body, settings.get("initial_noise_multiplier")),
            save_images=body.save_images,
            override_settings=body.override_settings,
            restore_afterwards=body.override_settings_restore_afterwards,
            script=_script(body),
        )
        parameters = body.model_dump()
        if not body.include_init_images:  # A1111 leaves the (large) inputs out of the echo
            parameters["init_images"] = None
            parameters["mask"] = None
        return ImageToImageResponse(**respond(body, outcome, parameters))

    @router.get("/sd-models", response_model=list[SDModelItem])
    def sd_models() -> list[SDModelItem]:
        return [
            SDModelItem(
                title=info.title, model_name=info.model_name, hash=info.shorthash, sha256=info.sha256,
                filename=str(info.path), config=str(info.yaml) if info.yaml else None,
            )
            for info in service.models.checkpoints
        ]

    @router.post("/png-info", response_model=PngInfoResponse)
    def png_info(body: PngInfoBody) -> PngInfoResponse:
        image = decode_image(body.image.strip())
        text, items = read_infotext(image)
        return PngInfoResponse(info=text or "", items=items, parameters=parse_infotext(text or ""))

    return router
