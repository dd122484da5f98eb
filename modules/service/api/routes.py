"""/sdapi/v1 routes over the generation service (the same functions the UI calls)."""

from __future__ import annotations

import base64
import binascii
import io
import json

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.png_meta import pnginfo_for, read_infotext
from modules.core.version import infotext_version
from modules.service.api.models import PngInfoBody, PngInfoResponse, SDModelItem, TextToImageResponse, Txt2ImgBody
from modules.service.generation import GenerationService, Txt2ImgOutcome
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


def txt2img_request(body: Txt2ImgBody) -> Txt2ImgRequest:
    return Txt2ImgRequest(
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
    )


def info_json(outcome: Txt2ImgOutcome, clip_skip: int, styles: list[str] | None) -> str:
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
        "denoising_strength": None,
        "extra_generation_params": r.extra_generation_params,
        "index_of_first_image": outcome.processed.index_of_first_image,
        "infotexts": outcome.processed.infotexts,
        "styles": styles or [],
        "job_timestamp": outcome.job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": False,
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

    @router.post("/txt2img", response_model=TextToImageResponse)
    def txt2img(body: Txt2ImgBody) -> TextToImageResponse:
        outcome = service.txt2img(
            txt2img_request(body),
            save_images=body.save_images,
            override_settings=body.override_settings,
            restore_afterwards=body.override_settings_restore_afterwards,
        )
        settings = service.settings.with_overrides(body.override_settings)
        with_info = settings.get("enable_pnginfo")
        processed = outcome.processed
        images = [encode_png(image, text if with_info else None) for image, text in zip(processed.images, processed.infotexts)
                  ] if body.send_images else []
        info = info_json(outcome, settings.get("CLIP_stop_at_last_layers"), body.styles)
        return TextToImageResponse(images=images, parameters=body.model_dump(), info=info)

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
