"""Every setting Hanga knows, declared once: A1111 key, default, label, section, allowed values,
and the infotext key that carries it (for paste and override-settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from modules.core.generation.request import InvalidRequest


class InvalidSetting(InvalidRequest):
    """A setting value outside its type or range; ``field`` is the setting's key."""


@dataclass(frozen=True)
class ComponentHint:
    """How an extension asked for its setting to be shown (A1111's ``OptionInfo``): a Gradio component
    class (None: by the default's type), its keyword arguments (a dict, or a function returning one
    that the refresh button calls again), a ``refresh`` function (a 🔄 button ``refresh_<key>``) and
    notes around the label."""

    component: Any = None
    args: Any = None
    refresh: Callable[[], Any] | None = None
    comment_before: str = ""
    comment_after: str = ""

    def component_args(self) -> dict:
        args = self.args() if callable(self.args) else self.args
        return dict(args) if isinstance(args, dict) else {}


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    label: str
    section: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    infotext: str | None = None  # the infotext key that carries this setting ("Clip skip")
    typed: bool = True  # False for an extension's option whose default says nothing of its type
    per_job: bool = True  # False: a request's override_settings may not change it (limits, security)
    folder: bool = False  # a folder path: the API may only point it inside the data folder
    hint: ComponentHint | None = None  # an extension's own component for it (Settings page)

    def validate(self, value: Any) -> Any:
        if not self.typed:
            return value
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise InvalidSetting(self.key, f"must be {expected.__name__}; got {value!r}")
        too_low = self.minimum is not None and value < self.minimum
        too_high = self.maximum is not None and value > self.maximum
        if too_low or too_high:
            raise InvalidSetting(self.key, f"must be {self.range_text()}; got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InvalidSetting(self.key, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value

    def range_text(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"between {self.minimum:g} and {self.maximum:g}"
        return f"at least {self.minimum:g}" if self.minimum is not None else f"at most {self.maximum:g}"


SECTIONS: dict[str, str] = {
    "sd": "Stable Diffusion",
    "img2img": "img2img",
    "sampler-params": "Sampler parameters",
    "saving-images": "Saving images",
    "saving-to-dirs": "Saving to a directory",
    "saving-paths": "Paths for saving",
    "infotext": "Infotext",
    "compatibility": "Compatibility",
    "ui": "User interface",
    "ui-gallery": "Gallery",
    "ui-alternatives": "UI alternatives",
    "live-previews": "Live previews",
    "api": "API",
    "extensions": "Extensions",
    "security": "Security and limits",
    "upscaling": "Upscaling",
    "interrogate": "Interrogate",
}

_S = Setting
SCHEMA: tuple[Setting, ...] = (
    _S("sd_model_checkpoint", "", "Stable Diffusion checkpoint", "sd", infotext="Model hash"),
    # A1111's hidden option: the current checkpoint's full sha256, kept by Hanga (page element
    # #sd_checkpoint_hash; tag autocomplete watches it).
    _S("sd_checkpoint_hash", "", "SHA256 hash of the current checkpoint", "sd", per_job=False),
    _S("sd_vae", "Automatic", "SD VAE (Automatic: a VAE named like the checkpoint, else its own; None: its own)", "sd",
       infotext="VAE"),
    _S("sd_vae_overrides_per_model_preferences", True, "Selected VAE overrides per-model preferences", "sd"),
    _S("sd_vae_as_default", True, "Ignore selected VAE for checkpoints that have their own .vae file next to them",
       "sd"),
    _S("auto_vae_precision", True, "Automatically revert VAE to 32-bit floats (when a half-precision decode gives NaNs)",
       "sd"),
    _S("cross_attention_optimization", "Automatic", "Cross attention optimization", "sd",
       choices=("Automatic", "None", "xformers", "Doggettx", "sub-quadratic", "V1", "InvokeAI", "sdp", "sdp-no-mem")),
    _S("compile_unet", False, "Compile the U-Net with torch.compile (fast path; the first image at each new size "
       "compiles)", "sd"),
    _S("sd_checkpoints_limit", 1, "Maximum number of checkpoints loaded at the same time", "sd", minimum=1, maximum=10,
       step=1),
    _S("sd_checkpoints_keep_in_cpu", True, "Only keep one model on device (the others wait in RAM)", "sd"),
    _S("sd_checkpoint_cache", 0, "Checkpoints to cache in RAM (state dicts, for fast switching back)", "sd", minimum=0,
       maximum=10, step=1),
    _S("sdxl_crop_top", 0, "SDXL top coordinate of the crop (crop-conditioning)", "sd", minimum=0, maximum=4096, step=1),
    _S("sdxl_crop_left", 0, "SDXL left coordinate of the crop (crop-conditioning)", "sd", minimum=0, maximum=4096,
       step=1),
    _S("sdxl_refiner_low_aesthetic_score", 2.5, "SDXL low aesthetic score (negative prompt, refiner)", "sd", minimum=0,
       maximum=10, step=0.1),
    _S("sdxl_refiner_high_aesthetic_score", 6.0, "SDXL high aesthetic score (prompt, refiner)", "sd", minimum=0,
       maximum=10, step=0.1),
    _S("sdxl_clip_l_skip", False, "Clip skip for SDXL's CLIP-L encoder (instead of ignoring it)", "sd"),
    _S("hires_fix_refiner_pass", "second pass", "Hires fix: which pass the refiner acts in", "sd",
       choices=("first pass", "second pass", "both passes")),
    _S("sd_hypernetwork", "None", "Add hypernetwork to prompt", "sd"),
    _S("extra_networks_default_multiplier", 1.0, "Default multiplier for extra networks", "sd", minimum=0.0,
       maximum=2.0, step=0.01),
    _S("CLIP_stop_at_last_layers", 1, "Clip skip", "sd", minimum=1, maximum=12, step=1, infotext="Clip skip"),
    _S("emphasis", "Original", "Emphasis mode", "sd", choices=("None", "Ignore", "Original", "No norm"), infotext="Emphasis"),
    _S("comma_padding_backtrack", 20, "Prompt word wrap length limit (tokens after a comma moved to the next chunk)",
       "sd", minimum=0, maximum=74, step=1),
    _S("enable_prompt_comments", True, "Enable comments (# to the end of a line is removed from prompts)", "sd"),
    _S("randn_source", "GPU", "Random number generator source", "sd", choices=("GPU", "CPU", "NV"), infotext="RNG"),
    _S("eta_noise_seed_delta", 0, "Eta noise seed delta (ENSD)", "sampler-params", minimum=0, maximum=2**31, step=1,
       infotext="ENSD"),
    _S("eta_ancestral", 1.0, "Eta for k-diffusion samplers", "sampler-params", minimum=0, maximum=1, step=0.01, infotext="Eta"),
    _S("eta_ddim", 0.0, "Eta for DDIM", "sampler-params", minimum=0, maximum=1, step=0.01, infotext="Eta DDIM"),
    _S("s_churn", 0.0, "sigma churn", "sampler-params", minimum=0, maximum=100, step=0.01, infotext="Sigma churn"),
    _S("s_tmin", 0.0, "sigma tmin", "sampler-params", minimum=0, maximum=10, step=0.01, infotext="Sigma tmin"),
    _S("s_tmax", 0.0, "sigma tmax (0 = infinity)", "sampler-params", minimum=0, maximum=999, step=0.01, infotext="Sigma tmax"),
    _S("s_noise", 1.0, "sigma noise", "sampler-params", minimum=0, maximum=1.1, step=0.001, infotext="Sigma noise"),
    _S("sigma_min", 0.0, "Schedule min sigma (0 = the model's)", "sampler-params", minimum=0, infotext="Schedule min sigma"),
    _S("sigma_max", 0.0, "Schedule max sigma (0 = the model's)", "sampler-params", minimum=0, infotext="Schedule max sigma"),
    _S("rho", 0.0, "Schedule rho (0 = the scheduler's)", "sampler-params", minimum=0, infotext="Schedule rho"),
    _S("always_discard_next_to_last_sigma", False, "Always discard next-to-last sigma", "sampler-params",
       infotext="Discard penultimate sigma"),
    _S("beta_dist_alpha", 0.6, "Beta scheduler - alpha", "sampler-params", minimum=0.01, maximum=1.0, step=0.01,
       infotext="Beta schedule alpha"),
    _S("beta_dist_beta", 0.6, "Beta scheduler - beta", "sampler-params", minimum=0.01, maximum=1.0, step=0.01,
       infotext="Beta schedule beta"),
    _S("uni_pc_variant", "bh1", "UniPC variant", "sampler-params", choices=("bh1", "bh2", "vary_coeff"),
       infotext="UniPC variant"),
    _S("uni_pc_skip_type", "time_uniform", "UniPC skip type", "sampler-params",
       choices=("time_uniform", "time_quadratic", "logSNR"), infotext="UniPC skip type"),
    _S("uni_pc_order", 3, "UniPC order", "sampler-params", minimum=1, maximum=50, step=1, infotext="UniPC order"),
    _S("uni_pc_lower_order_final", True, "UniPC lower order final", "sampler-params",
       infotext="UniPC lower order final"),
    _S("samples_save", True, "Always save all generated images", "saving-images"),
    _S("samples_format", "png", "File format for images", "saving-images", choices=("png", "jpg", "jpeg", "webp")),
    _S("jpeg_quality", 80, "Quality for saved jpeg images", "saving-images", minimum=1, maximum=100, step=1),
    _S("webp_lossless", False, "Use lossless compression for webp images", "saving-images"),
    _S("save_txt", False, "Create a text file next to every image with generation parameters.", "saving-images"),
    _S("samples_filename_pattern", "", "Images filename pattern (empty: [seed]-[prompt_spaces])", "saving-images"),
    _S("save_to_dirs", True, "Save images to a subdirectory", "saving-to-dirs"),
    _S("directories_filename_pattern", "[date]", "Directory name pattern", "saving-to-dirs"),
    _S("directories_max_prompt_words", 8, "Max prompt words for [prompt_words] pattern", "saving-to-dirs", minimum=1,
       maximum=20, step=1),
    _S("outdir_samples", "", "Output directory for images; if empty, per-tab directories", "saving-paths", folder=True),
    _S("outdir_txt2img_samples", "outputs/txt2img-images", "Output directory for txt2img images", "saving-paths", folder=True),
    _S("outdir_img2img_samples", "outputs/img2img-images", "Output directory for img2img images", "saving-paths", folder=True),
    _S("outdir_extras_samples", "outputs/extras-images", "Output directory for images from extras tab", "saving-paths",
       folder=True),
    _S("outdir_grids", "", "Output directory for grids; if empty, per-tab directories", "saving-paths", folder=True),
    _S("outdir_txt2img_grids", "outputs/txt2img-grids", "Output directory for txt2img grids", "saving-paths", folder=True),
    _S("outdir_img2img_grids", "outputs/img2img-grids", "Output directory for img2img grids", "saving-paths", folder=True),
    _S("grid_save", True, "Always save all generated image grids", "saving-images"),
    _S("grid_format", "png", "File format for grids", "saving-images", choices=("png", "jpg", "jpeg", "webp")),
    _S("return_grid", True, "Show grid in gallery", "ui-gallery"),
    _S("grid_only_if_multiple", True, "Do not save grids consisting of one picture", "saving-images"),
    _S("grid_prevent_empty_spots", False, "Prevent empty spots in grid (when set to autodetect)", "saving-images"),
    _S("n_rows", -1, "Grid row count; -1 for autodetect and 0 for it to be same as batch size", "saving-images",
       minimum=-1, maximum=16, step=1),
    _S("img2img_fix_steps", False, "With img2img, do exactly the amount of steps the slider specifies", "img2img"),
    _S("img2img_background_color", "#ffffff", "With img2img, fill transparent parts of the input image with this colour",
       "img2img"),
    _S("inpainting_mask_weight", 1.0, "Inpainting conditioning mask strength", "img2img", minimum=0.0, maximum=1.0,
       step=0.01, infotext="Conditional mask weight"),
    _S("initial_noise_multiplier", 1.0, "Noise multiplier for img2img", "img2img", minimum=0.0, maximum=1.5, step=0.001),
    _S("hires_fix_show_sampler", False, "Hires fix: show hires checkpoint and sampler selection", "ui-alternatives"),
    _S("hires_fix_show_prompts", False, "Hires fix: show hires prompt and negative prompt", "ui-alternatives"),
    _S("enable_pnginfo", True, "Save generation parameters as a text chunk in PNG files", "infotext"),
    _S("add_model_hash_to_info", True, "Add model hash to infotext", "infotext"),
    _S("add_model_name_to_info", True, "Add model name to infotext", "infotext"),
    _S("add_vae_hash_to_info", True, "Add VAE hash to infotext", "infotext"),
    _S("add_vae_name_to_info", True, "Add VAE name to infotext", "infotext"),
    _S("add_version_to_infotext", True, "Add program version to infotext", "infotext"),
    _S("auto_backcompat", True, "Automatic backward compatibility (pasted infotexts of older A1111 versions turn on "
       "the options that reproduce them)", "compatibility"),
    _S("use_old_scheduling", False, "Use old prompt editing timelines (before A1111 1.6)", "compatibility",
       infotext="Old prompt editing timelines"),
    _S("quicksettings_list", ["sd_model_checkpoint"], "Quicksettings list", "ui"),
    _S("localization", "None", "Localization (the name of a localizations/*.json file; None: English)", "ui"),
    _S("live_previews_enable", True, "Show live previews of the created image", "live-previews"),
    _S("show_progress_every_n_steps", 10, "Live preview display period (in sampling steps; 0 or -1 turns previews off)",
       "live-previews", minimum=-1, maximum=32, step=1),
    _S("show_progress_type", "Approx cheap", "Live preview method (Approx cheap: a colour map of the latent, free; "
       "Full: the VAE, slower)", "live-previews", choices=("Approx cheap", "Full")),
    _S("queue_limit", 100, "Most jobs that may wait in the queue (UI and API together); more are refused", "api",
       minimum=1, maximum=10000, step=1, per_job=False),
    _S("disabled_extensions", [], "Disabled extensions (by folder name)", "extensions"),
    _S("disable_all_extensions", "none", "Disable all extensions (keeps the list of enabled ones)", "extensions",
       choices=("none", "extra", "all")),
    _S("api_enable_requests", False, "Allow http:// and https:// URLs for input images in the API", "api",
       per_job=False),
    _S("api_forbid_local_requests", True, "Forbid URLs to local and private addresses", "api", per_job=False),
    _S("ESRGAN_tile", 192, "Tile size for ESRGAN upscalers (0 = no tiling)", "upscaling", minimum=0, maximum=512,
       step=16),
    _S("ESRGAN_tile_overlap", 8, "Tile overlap for ESRGAN upscalers (pixels)", "upscaling", minimum=0, maximum=48, step=1),
    _S("SWIN_tile", 192, "Tile size for SwinIR upscalers (0 = no tiling)", "upscaling", minimum=0, maximum=512, step=16),
    _S("SWIN_tile_overlap", 8, "Tile overlap for SwinIR upscalers (pixels)", "upscaling", minimum=0, maximum=48, step=1),
    _S("interrogate_keep_models_in_memory", False, "Keep the interrogate models in memory", "interrogate"),
    _S("interrogate_return_ranks", False, "Include ranks of model tags matches in results", "interrogate"),
    _S("interrogate_clip_num_beams", 1, "BLIP: num_beams", "interrogate", minimum=1, maximum=16, step=1),
    _S("interrogate_clip_min_length", 24, "BLIP: minimum description length", "interrogate", minimum=1, maximum=128,
       step=1),
    _S("interrogate_clip_max_length", 48, "BLIP: maximum description length", "interrogate", minimum=1, maximum=256,
       step=1),
    _S("interrogate_clip_dict_limit", 1500, "CLIP: maximum number of lines in a category file (0 = no limit)",
       "interrogate", minimum=0, maximum=100000, step=1),
    _S("interrogate_clip_skip_categories", [], "CLIP: skip these categories", "interrogate"),
    _S("interrogate_deepbooru_score_threshold", 0.5, "DeepBooru: score threshold", "interrogate", minimum=0.0,
       maximum=1.0, step=0.01),
    _S("deepbooru_sort_alpha", True, "DeepBooru: sort tags alphabetically", "interrogate"),
    _S("deepbooru_use_spaces", True, "DeepBooru: use spaces in tags", "interrogate"),
    _S("deepbooru_escape", True, "DeepBooru: escape (\\) brackets", "interrogate"),
    _S("deepbooru_filter_tags", "", "DeepBooru: filter out those tags (comma-separated)", "interrogate"),
    # What one job may ask for. RANGES in core/generation/request.py are the hard bounds.
    _S("limit_max_side", 4096, "Largest width or height of a picture (hires fix result included)", "security",
       minimum=64, maximum=8192, step=8, per_job=False),
    _S("limit_max_steps", 150, "Most sampling steps", "security", minimum=1, maximum=500, step=1, per_job=False),
    _S("limit_max_batch_size", 16, "Largest batch size", "security", minimum=1, maximum=64, step=1, per_job=False),
    _S("limit_max_batch_count", 100, "Most batches (batch count) per job", "security", minimum=1, maximum=1000, step=1,
       per_job=False),
    _S("limit_max_prompt_length", 20000, "Longest prompt (characters)", "security", minimum=100, maximum=1000000,
       step=100, per_job=False),
    _S("limit_max_upload_mb", 50, "Largest request body or uploaded file (MB)", "security", minimum=1, maximum=4096,
       step=1, per_job=False),
    _S("limit_max_image_megapixels", 64, "Largest image read from a request, an upload or a folder (megapixels; "
       "bigger ones are refused as decompression bombs)", "security", minimum=1, maximum=170, step=1, per_job=False),
)
