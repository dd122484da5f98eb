"""Request and response bodies of /sdapi/v1, written out by hand with A1111's field names and
defaults (never reflected from internal classes). Unknown fields are ignored and ``null`` is
accepted for optional ones, because published clients send both."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class Txt2ImgBody(Lenient):
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Img2ImgBody(Txt2ImgBody):
    """A1111's StableDiffusionImg2ImgProcessingAPI: the txt2img fields plus these (its defaults:
    note that the API, unlike the UI, defaults to "fill" and "Only masked" with no padding)."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(default=None, description="base64 PNGs carrying the infotext")
    parameters: dict[str, Any]
    info: str  # a JSON string, as A1111 returns it


class PngInfoBody(Lenient):
    image: str = Field(description="base64 image, raw or as a data: URI")


class InterrogateBody(Lenient):
    image: str = Field(description="base64 image, raw or as a data: URI")
    model: str = Field("clip", description="clip or deepdanbooru")


class InterrogateResponse(BaseModel):
    caption: str


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class ImageToImageResponse(TextToImageResponse):
    pass


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class QueueInfo(BaseModel):
    running: str | None = Field(default=None, description="id of the running job")
    pending: list[str] = Field(default_factory=list, description="ids of the waiting jobs, first to run first")


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None
    queue: QueueInfo = Field(default_factory=QueueInfo, description="Hanga: the job queue")


class TaskProgressBody(Lenient):
    id_task: str
    id_live_preview: int = -1
    live_preview: bool = True


class TaskProgressResponse(BaseModel):
    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None
    id_live_preview: int | None = None
    textinfo: str | None = None
    queue_position: int | None = Field(default=None, description="Hanga: 1-based place in the queue while waiting")
    queue_size: int | None = Field(default=None, description="Hanga: jobs running or waiting")


class JobItem(BaseModel):
    id: str
    kind: str
    state: str
    number: int
    position: int


class ExtrasSingleImageBody(Lenient):
    image: str = ""
    resize_mode: int = Field(default=0, description="0: scale by upscaling_resize; 1: to upscaling_resize_w × _h")
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasImageResponse(BaseModel):
    image: str | None = None
    html_info: str


class FileData(Lenient):
    data: str
    name: str = ""


class ExtrasBatchBody(ExtrasSingleImageBody):
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 - A1111's name


class ExtrasBatchResponse(BaseModel):
    images: list[str]
    html_info: str


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


class NameItem(BaseModel):
    name: str


class VaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: str


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class StyleItem(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class EmbeddingItem(BaseModel):
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class ScriptsList(BaseModel):
    txt2img: list[str]
    img2img: list[str]


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list[ScriptArg]


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: int | str
    enabled: bool


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]
