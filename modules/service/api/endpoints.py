"""The /sdapi/v1 endpoints: generation through the shared job queue, progress and the queue,
options, the model and network lists, and the Extras upscale. Every route also answers with a
trailing slash (published clients send both)."""

from __future__ import annotations

import argparse
import html
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import psutil
import torch
from fastapi import APIRouter, Body, FastAPI, HTTPException, Request

from modules.core.generation.request import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES, InvalidRequest
from modules.core.image_input import megapixels
from modules.core.infotext import parse_infotext
from modules.core.png_meta import read_infotext
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.api.images import UrlPolicy, decode_image, encode_png
from modules.service.api.models import (
    EmbeddingItem, EmbeddingsResponse, ExtensionItem, ExtrasBatchBody, ExtrasBatchResponse, ExtrasImageResponse,
    ExtrasSingleImageBody, HypernetworkItem, Img2ImgBody, ImageToImageResponse, InterrogateBody, InterrogateResponse,
    JobItem, LoraItem, MemoryResponse,
    NameItem, PngInfoBody, PngInfoResponse, ProgressResponse, ProgressState, QueueInfo, SamplerItem, SchedulerItem,
    ScriptArg, ScriptInfo, ScriptsList, SDModelItem, StyleItem, TaskProgressBody, TaskProgressResponse,
    TextToImageResponse, Txt2ImgBody, UpscalerItem, VaeItem,
)
from modules.service.api.routes import img2img_request, info_json, install_error_handlers, txt2img_request
from modules.service.extensions_list import list_extensions
from modules.service.extras import ExtrasRequest, postprocess
from modules.service.generation import GenerationService, JobOutcome
from modules.service.interrogate import MODELS
from modules.service.queue import QUEUED, RUNNING
from modules.service.sysinfo import public_flags
from modules.service.settings import confine_folders

log = logging.getLogger("hanga")

def create_api(service: GenerationService, flags: argparse.Namespace | None = None,
               dependencies: list | None = None) -> FastAPI:
    """The API as its own application, mounted at ``API_PREFIX``: a GET on a POST-only route is
    405 and an unknown route a JSON 404 even with the UI mounted at the site root."""
    api = FastAPI(title="Hanga API (A1111-compatible)", docs_url="/docs", redoc_url=None, dependencies=dependencies or [])
    install_error_handlers(api)
    if flags is not None and getattr(flags, "api_log", False):
        @api.middleware("http")
        async def log_requests(request: Request, call_next):
            started = time.perf_counter()
            response = await call_next(request)
            log.info("API %s %s → %d in %.3f s (from %s)", request.method, request.url.path,
                     response.status_code, time.perf_counter() - started,
                     request.client.host if request.client else "?")
            return response
    api.include_router(generation_routes(service, flags))
    api.include_router(info_routes(service, flags))
    return api


class Routes:
    """An APIRouter whose routes answer with and without a trailing slash."""

    def __init__(self):
        self.router = APIRouter()

    def add(self, method: str, path: str, **options) -> Callable:
        def register(function: Callable) -> Callable:
            self.router.add_api_route(path, function, methods=[method], **options)
            self.router.add_api_route(path + "/", function, methods=[method], include_in_schema=False, **options)
            return function
        return register

    def get(self, path: str, **options) -> Callable:
        return self.add("GET", path, **options)

    def post(self, path: str, **options) -> Callable:
        return self.add("POST", path, **options)


def url_policy(service: GenerationService) -> UrlPolicy:
    get = service.settings.get
    return UrlPolicy(get("api_enable_requests"), get("api_forbid_local_requests"),
                     max_pixels=megapixels(get("limit_max_image_megapixels")))


# ------------------------------------------------------------------------------------ generation

def generation_routes(service: GenerationService, flags: argparse.Namespace | None = None) -> APIRouter:
    routes = Routes()
    locked = bool(getattr(flags, "hide_ui_dir_config", False))

    def prepared(body: Txt2ImgBody) -> Txt2ImgBody:
        confine_folders(body.override_settings, service.settings.schema, service.paths.data, "override_settings", locked)
        if body.infotext:
            pasted = service.paste(body.infotext)
            chosen = {name: value for name, value in pasted.fields.items()
                      if name in type(body).model_fields and name not in body.model_fields_set}
            overrides = {**service.overrides_from_entries(pasted.overrides), **(body.override_settings or {})}
            body = body.model_copy(update={**chosen, "override_settings": overrides or None})
        return body

    def styled(body: Txt2ImgBody, request):
        return service.styles.apply(request, body.styles)

    def respond(body: Txt2ImgBody, outcome: JobOutcome, parameters: dict) -> dict:
        settings = service.settings.with_overrides(body.override_settings)
        with_info = settings.get("enable_pnginfo")
        processed = outcome.processed
        images = [encode_png(image, text if with_info else None) for image, text in zip(processed.images, processed.infotexts)
                  ] if body.send_images else []
        info = info_json(outcome, settings.get("CLIP_stop_at_last_layers"), body.styles)
        return dict(images=images, parameters=parameters, info=info)

    def script(body: Txt2ImgBody):
        return (body.script_name, list(body.script_args)) if body.script_name else None

    def alwayson(body: Txt2ImgBody) -> dict[str, list]:
        """``{"<title>": {"args": [...]}}`` (A1111's shape; a bare list is accepted too)."""
        chosen = {}
        for title, value in (body.alwayson_scripts or {}).items():
            args = value.get("args", []) if isinstance(value, dict) else value
            if not isinstance(args, list):
                raise InvalidRequest(f"alwayson_scripts.{title}.args", "must be a list")
            chosen[title] = args
        return chosen

    def run(generate, body: Txt2ImgBody, request) -> JobOutcome:
        """One job through the queue, with the body's styles, overrides, scripts and task id."""
        return generate(
            styled(body, request),
            save_images=body.save_images,
            override_settings=body.override_settings,
            restore_afterwards=body.override_settings_restore_afterwards,
            script=script(body),
            job_id=body.force_task_id,
            alwayson=alwayson(body),
        )

    @routes.post("/txt2img", response_model=TextToImageResponse)
    def txt2img(body: Txt2ImgBody) -> TextToImageResponse:
        body = prepared(body)
        outcome = run(service.txt2img, body, txt2img_request(body))
        return TextToImageResponse(**respond(body, outcome, body.model_dump()))

    @routes.post("/img2img", response_model=ImageToImageResponse)
    def img2img(body: Img2ImgBody) -> ImageToImageResponse:
        body = prepared(body)
        if not body.init_images:
            raise InvalidRequest("init_images", "needs at least one base64 image")
        settings = service.settings.with_overrides(body.override_settings)
        request = img2img_request(body, settings.get("initial_noise_multiplier"), url_policy(service))
        outcome = run(service.img2img, body, request)
        parameters = body.model_dump()
        if not body.include_init_images:  # A1111 leaves the (large) inputs out of the echo
            parameters["init_images"] = None
            parameters["mask"] = None
        return ImageToImageResponse(**respond(body, outcome, parameters))

    @routes.post("/extra-single-image", response_model=ExtrasImageResponse)
    def extra_single_image(body: ExtrasSingleImageBody) -> ExtrasImageResponse:
        request = _extras_request(body, service.upscalers.names())
        image = decode_image(body.image, "image", url_policy(service))
        picture, text = service.run_exclusive("extras", lambda: _postprocessed(service, image, request))
        return ExtrasImageResponse(image=picture, html_info=_html_info(text))

    @routes.post("/extra-batch-images", response_model=ExtrasBatchResponse)
    def extra_batch_images(body: ExtrasBatchBody) -> ExtrasBatchResponse:
        request = _extras_request(body, service.upscalers.names())
        if not body.imageList:
            raise InvalidRequest("imageList", "needs at least one {data, name} image")
        images = [decode_image(item.data, f"imageList.{i}.data", url_policy(service)) for i, item in enumerate(body.imageList)]
        made = service.run_exclusive("extras", lambda: [_postprocessed(service, image, request) for image in images])
        return ExtrasBatchResponse(images=[picture for picture, _ in made], html_info=_html_info(made[0][1] if made else ""))

    @routes.post("/interrogate", response_model=InterrogateResponse)
    def interrogate(body: InterrogateBody) -> InterrogateResponse:
        if body.model not in MODELS:  # before decoding: a wrong name is a quick answer
            raise InvalidRequest("model", f"must be one of {', '.join(MODELS)}; got {body.model!r}")
        image = decode_image(body.image, "image", url_policy(service))
        return InterrogateResponse(caption=service.interrogate(image, body.model))

    @routes.post("/png-info", response_model=PngInfoResponse)
    def png_info(body: PngInfoBody) -> PngInfoResponse:
        image = decode_image(body.image, "image", UrlPolicy(max_pixels=url_policy(service).max_pixels))
        text, items = read_infotext(image)
        return PngInfoResponse(info=text or "", items=items, parameters=parse_infotext(text or ""))

    # -- progress and the queue ------------------------------------------------------------------------
    @routes.get("/progress", response_model=ProgressResponse)
    def progress(skip_current_image: bool = False) -> ProgressResponse:
        snapshot = service.state.snapshot()
        preview_id, preview = service.state.preview()
        eta = snapshot.eta_seconds
        return ProgressResponse(
            progress=round(snapshot.progress, 4),
            eta_relative=round(eta, 3) if eta is not None else 0.0,
            state=ProgressState(
                skipped=snapshot.skipped, interrupted=snapshot.interrupted, stopping_generation=False,
                job=snapshot.job, job_count=snapshot.job_count, job_timestamp=snapshot.job_timestamp or "0",
                job_no=snapshot.job_no, sampling_step=snapshot.sampling_step, sampling_steps=snapshot.sampling_steps,
            ),
            current_image=encode_png(preview, None) if preview is not None and not skip_current_image else None,
            textinfo=_textinfo(snapshot) if snapshot.active else None,
            current_task=snapshot.job_id or None,
            queue=_queue_info(service),
        )

    @routes.post("/interrupt")
    def interrupt() -> dict:
        service.interrupt()
        return {}

    @routes.post("/skip")
    def skip() -> dict:
        service.skip()
        return {}

    @routes.get("/queue", response_model=list[JobItem])
    def queue() -> list[JobItem]:
        """Hanga: the running job, then the waiting ones in the order they will run."""
        jobs = ([service.queue.running] if service.queue.running else []) + service.queue.waiting()
        return [JobItem(id=job.id, kind=job.kind, state=job.state, number=job.number,
                        position=service.queue.position(job)[0]) for job in jobs if job is not None]

    @routes.add("DELETE", "/queue/{job_id}")
    def cancel(job_id: str) -> dict:
        """Hanga: take a waiting job out of the queue (a running one is stopped with /interrupt)."""
        job = service.queue.find(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        if job.state == RUNNING:
            raise HTTPException(409, f"job {job_id!r} is running; use /sdapi/v1/interrupt")
        if not service.cancel(job_id):
            raise HTTPException(409, f"job {job_id!r} has already {job.state}")
        return {"cancelled": job_id}

    @routes.post("/task-progress", response_model=TaskProgressResponse)
    def task_progress(body: TaskProgressBody) -> TaskProgressResponse:
        """A1111's ``/internal/progress`` for a job named by ``force_task_id``."""
        return task_progress_of(service, body)

    return routes.router


def task_progress_of(service: GenerationService, body: TaskProgressBody) -> TaskProgressResponse:
    job = service.queue.find(body.id_task)
    if job is None:
        return TaskProgressResponse(active=False, queued=False, completed=False, id_live_preview=-1,
                                    textinfo="Waiting...")
    place, size = service.queue.position(job)
    if job.state == QUEUED:
        return TaskProgressResponse(active=False, queued=True, completed=False, id_live_preview=-1,
                                    textinfo=f"In queue: {place}/{size}", queue_position=place, queue_size=size)
    if job.state != RUNNING:
        return TaskProgressResponse(active=False, queued=False, completed=True, id_live_preview=-1, textinfo=job.state,
                                    queue_size=size)
    snapshot = service.state.snapshot()
    preview_id, preview = service.state.preview()
    image = None
    if body.live_preview and preview is not None and preview_id != body.id_live_preview:
        image = "data:image/png;base64," + encode_png(preview, None)
    return TaskProgressResponse(active=True, queued=False, completed=False, progress=snapshot.progress,
                                eta=snapshot.eta_seconds, live_preview=image,
                                id_live_preview=preview_id if image else body.id_live_preview,
                                textinfo=_textinfo(snapshot), queue_position=0, queue_size=size)


def _textinfo(snapshot) -> str:
    if not snapshot.sampling_steps:
        return "Preparing…"
    return f"Batch {snapshot.job_no + 1}/{max(snapshot.job_count, 1)}, step {snapshot.sampling_step}/{snapshot.sampling_steps}"


def _queue_info(service: GenerationService) -> QueueInfo:
    running = service.queue.running
    return QueueInfo(running=running.id if running else None, pending=[job.id for job in service.queue.waiting()])


def _extras_request(body: ExtrasSingleImageBody, upscalers: list[str]) -> ExtrasRequest:
    return ExtrasRequest(
        resize_mode=body.resize_mode, scale=body.upscaling_resize, width=body.upscaling_resize_w,
        height=body.upscaling_resize_h, crop=body.upscaling_crop, upscaler_1=body.upscaler_1 or "None",
        upscaler_2=body.upscaler_2 or "None", upscaler_2_visibility=body.extras_upscaler_2_visibility,
        gfpgan_visibility=body.gfpgan_visibility, codeformer_visibility=body.codeformer_visibility,
    ).validate(upscalers)


def _postprocessed(service: GenerationService, image, request: ExtrasRequest) -> tuple[str, str]:
    """Base64 PNG of the upscaled image, keeping the source's infotext, with its ``postprocessing`` text."""
    source_text, _ = read_infotext(image)
    picture, text = postprocess(image, request, service.upscalers.upscale)
    return encode_png(picture, source_text or None, {"postprocessing": text} if text else None), text


def _html_info(text: str) -> str:
    return f"<p>{html.escape(text)}</p>" if text else ""


# ------------------------------------------------------------------------------ settings and lists

def info_routes(service: GenerationService, flags: argparse.Namespace | None) -> APIRouter:
    routes = Routes()
    models = service.models

    @routes.get("/options")
    def get_options() -> dict[str, Any]:
        options = service.settings.data()
        options["sd_model_checkpoint"] = service.current_checkpoint_title()
        return options

    @routes.post("/options")
    def set_options(values: dict[str, Any] = Body(...)) -> None:
        wanted = values.get("sd_model_checkpoint")
        info = None
        if wanted:
            info = models.find(str(wanted))
            if info is None:
                raise InvalidRequest("sd_model_checkpoint", f"checkpoint {wanted!r} not found; available: "
                                                            f"{', '.join(models.titles()) or 'none'}")
        known = {key: value for key, value in values.items() if key in service.settings.schema and key != "sd_model_checkpoint"}
        ignored = sorted(set(values) - set(known) - {"sd_model_checkpoint"})
        if ignored:
            log.info("POST /options: ignoring unknown settings %s", ", ".join(ignored))
        confine_folders(known, service.settings.schema, service.paths.data, "POST /options",
                        bool(getattr(flags, "hide_ui_dir_config", False)))
        if "sd_vae" in known:
            service.check_vae_name(known["sd_vae"], "sd_vae")
        service.settings.update(known)  # all or nothing: a bad value changes no setting
        if info is not None and info.title != service.current_checkpoint_title():
            service.select_checkpoint(info.title)
        elif info is not None:
            service.settings.set("sd_model_checkpoint", info.title)
        return None

    @routes.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return public_flags(flags)  # never echo credentials

    @routes.get("/samplers", response_model=list[SamplerItem])
    def samplers() -> list[SamplerItem]:
        return [SamplerItem(name=info.name, aliases=list(info.aliases), options=_sampler_options(info)) for info in SAMPLERS]

    @routes.get("/schedulers", response_model=list[SchedulerItem])
    def schedulers() -> list[SchedulerItem]:
        return [SchedulerItem(name=s.name, label=s.label, aliases=list(s.aliases) or None, default_rho=s.default_rho,
                              need_inner_model=s.need_inner_model) for s in SCHEDULERS]

    @routes.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers() -> list[UpscalerItem]:
        items = [UpscalerItem(name=name, model_name=None, model_path=None, model_url=None, scale=4) for name in IMAGE_UPSCALERS]
        for file in service.upscalers.files().values():
            if file.name not in IMAGE_UPSCALERS:
                items.append(UpscalerItem(name=file.name, model_name=file.kind, model_path=str(file.path), model_url=None,
                                          scale=file.scale_hint))
        return items

    @routes.get("/latent-upscale-modes", response_model=list[NameItem])
    def latent_upscale_modes() -> list[NameItem]:
        return [NameItem(name=name) for name in LATENT_UPSCALE_MODES]

    @routes.get("/sd-models", response_model=list[SDModelItem])
    def sd_models() -> list[SDModelItem]:
        return [
            SDModelItem(title=info.title, model_name=info.model_name, hash=info.shorthash, sha256=info.sha256,
                        filename=str(info.path), config=str(info.yaml) if info.yaml else None)
            for info in models.checkpoints
        ]

    @routes.get("/sd-vae", response_model=list[VaeItem])
    def sd_vae() -> list[VaeItem]:
        return [VaeItem(model_name=name, filename=str(path)) for name, path in models.vaes().items()]

    @routes.get("/hypernetworks", response_model=list[HypernetworkItem])
    def hypernetworks() -> list[HypernetworkItem]:
        return [HypernetworkItem(name=name, path=str(path)) for name, path in service.hypernetworks.files().items()]

    @routes.get("/loras", response_model=list[LoraItem])
    def loras() -> list[LoraItem]:
        items = []
        for name, path in service.loras.files().items():
            metadata = service.loras.metadata(path)
            items.append(LoraItem(name=name, alias=metadata.get("ss_output_name") or name, path=str(path), metadata=metadata))
        return items

    @routes.get("/prompt-styles", response_model=list[StyleItem])
    def prompt_styles() -> list[StyleItem]:
        return [StyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
                for s in service.styles.all().values()]

    @routes.get("/face-restorers")
    def face_restorers() -> list:
        return []

    @routes.get("/realesrgan-models")
    def realesrgan_models() -> list:
        return []

    @routes.get("/embeddings", response_model=EmbeddingsResponse)
    def embeddings() -> EmbeddingsResponse:
        return _embeddings(service)

    @routes.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        models.refresh()

    @routes.post("/refresh-vae")
    def refresh_vae() -> None:
        models.vaes()  # read from the folders on every call; nothing is cached

    @routes.post("/refresh-embeddings")
    def refresh_embeddings() -> None:
        _embeddings(service)

    @routes.post("/refresh-loras")
    def refresh_loras() -> None:
        service.loras.files()

    @routes.get("/memory", response_model=MemoryResponse)
    def memory() -> MemoryResponse:
        return MemoryResponse(ram=_ram(), cuda=_cuda())

    @routes.post("/unload-checkpoint")
    def unload_checkpoint() -> dict:
        service.run_exclusive("unload", models.unload)
        return {}

    @routes.post("/reload-checkpoint")
    def reload_checkpoint() -> dict:
        service.select_checkpoint(service.current_checkpoint_title() or (models.titles() or [""])[0])
        return {}

    @routes.get("/scripts", response_model=ScriptsList)
    def scripts() -> ScriptsList:
        return ScriptsList(txt2img=[t.lower() for t in service.scripts.titles(False)],
                           img2img=[t.lower() for t in service.scripts.titles(True)])

    @routes.get("/script-info", response_model=list[ScriptInfo])
    def script_info() -> list[ScriptInfo]:
        found = []
        for is_img2img in (False, True):
            for always, scripts in ((False, service.scripts.selectable(is_img2img)), (True, service.scripts.always_on(is_img2img))):
                for script in scripts:
                    found.append(ScriptInfo(name=script.title().lower(), is_alwayson=always, is_img2img=is_img2img,
                                            args=[_script_arg(control) for control in _controls(script, is_img2img)]))
        return found

    if flags is not None and getattr(flags, "api_server_stop", False):
        @routes.post("/server-stop")
        def server_stop() -> dict:
            """``--api-server-stop``: a graceful stop (the running job finishes its step first)."""
            service.interrupt()
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            return {}

        @routes.post("/server-kill")
        def server_kill() -> dict:
            """``--api-server-stop``: stop at once."""
            threading.Timer(0.5, lambda: os._exit(0)).start()
            return {}

    @routes.get("/extensions", response_model=list[ExtensionItem])
    def extensions() -> list[ExtensionItem]:
        disabled = set(service.settings.get("disabled_extensions"))
        return [ExtensionItem(**item, enabled=item["name"] not in disabled)
                for item in list_extensions(service.paths.extension_dirs)]

    return routes.router


def _sampler_options(info) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if info.default_scheduler:
        options["scheduler"] = info.default_scheduler
    if info.uses_ensd:
        options["uses_ensd"] = True
    if info.second_order:
        options["second_order"] = True
    if info.brownian:
        options["brownian_noise"] = True
    if info.discard_penultimate:
        options["discard_next_to_last_sigma"] = True
    return options


def _controls(script, is_img2img: bool) -> list:
    """A script's control specs; an extension's Gradio controls are described by its defaults."""
    defaults = getattr(script, "default_args", None)
    if callable(defaults):
        return [ScriptArg(value=value) for value in defaults(is_img2img)]
    return script.ui(is_img2img) or []


def _script_arg(control) -> ScriptArg:
    if isinstance(control, ScriptArg):
        return control
    choices = getattr(control, "choices", None)
    return ScriptArg(label=getattr(control, "label", None), value=getattr(control, "value", None),
                     minimum=getattr(control, "minimum", None), maximum=getattr(control, "maximum", None),
                     step=getattr(control, "step", None), choices=[str(c) for c in choices] if choices else None)


def _embeddings(service: GenerationService) -> EmbeddingsResponse:
    loaded = service.models.loaded
    width = loaded.model.text_width if loaded is not None else 768
    checkpoint = loaded.info if loaded is not None else None

    def item(vectors_count: int, shape: int) -> EmbeddingItem:
        return EmbeddingItem(step=None, sd_checkpoint=checkpoint.shorthash if checkpoint else None,
                             sd_checkpoint_name=checkpoint.model_name if checkpoint else None, shape=shape,
                             vectors=vectors_count)

    usable = service.embeddings.for_width(width)
    return EmbeddingsResponse(
        loaded={ti.name: item(ti.length, width) for ti in usable},
        skipped={name: item(0, shape) for name, shape in service.embeddings.skipped.items()},
    )


def _ram() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    process = psutil.Process().memory_info()
    return {"free": memory.available, "used": process.rss, "total": memory.total}


def _cuda() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"error": "unavailable"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(key: str) -> dict[str, int]:
        return {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}

    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"), "allocated": pair("allocated_bytes"), "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }

