"""Hanga's entry point: parse A1111-style flags, build the service, serve the UI and the API."""

from __future__ import annotations

import logging
import os
from pathlib import Path
import sys
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402  (after the environment above)

from modules import gradio_compat  # noqa: E402  (extension code's Gradio 3/4 shim; see its docstring)
from modules.core.devices import DevicePolicy, MemoryManager  # noqa: E402
from modules.core.flags import build_parser, flags_from_environment, parse_flags  # noqa: E402
from modules.core.hash_cache import HashCache  # noqa: E402
from modules.core.models.attention import choice_from_flags  # noqa: E402
from modules.core.offload import TierFlags  # noqa: E402
from modules.core.paths import Paths  # noqa: E402
from modules.service.extensions import context  # noqa: E402
from modules.service.extensions.host import ExtensionHost  # noqa: E402
from modules.service.generation import GenerationService, ServiceFlags  # noqa: E402
from modules.service.models import ModelLoadError, ModelService  # noqa: E402
from modules.service.scripts.builtin import builtin_scripts  # noqa: E402
from modules.service.settings import Settings  # noqa: E402
from modules.service.upscalers import UpscalerLibrary  # noqa: E402
from modules.ui.server import build_app, serve  # noqa: E402

log = logging.getLogger("hanga")


def paths_from(flags) -> Paths:
    return Paths.create(
        data_dir=flags.data_dir,
        models_dir=flags.models_dir,
        ckpt_dirs=(flags.ckpt_dir,) if flags.ckpt_dir else (),
        ckpt_files=(flags.ckpt,) if flags.ckpt else (),
        hypernetwork_dir=flags.hypernetwork_dir,
        embeddings_dir=flags.embeddings_dir,
        lora_dir=flags.lora_dir,
        upscaler_dirs={"ESRGAN": flags.esrgan_models_path, "RealESRGAN": flags.realesrgan_models_path,
                       "SwinIR": flags.swinir_models_path},
    )


def extension_host(flags, paths: Paths, settings: Settings) -> ExtensionHost:
    """The extension folders, with the Extensions tab's choices and the --disable-*-extensions flags."""
    mode = "all" if flags.disable_all_extensions else "extra" if flags.disable_extra_extensions else \
        settings.get("disable_all_extensions")
    return ExtensionHost(paths, disabled=set(settings.get("disabled_extensions")), disable_all=mode,
                         prepare_module=gradio_compat.prepare_module)


def prepare(argv: list[str]):
    """Before the flags are parsed for good: find the extensions, run their ``install.py`` and let
    their ``preload.py`` add flags. Returns the flags, the settings and the extension host."""
    early, _ = build_parser().parse_known_args(argv)  # quietly: extensions' own flags are not known yet
    paths = paths_from(early)
    settings = Settings(paths.config_file)
    host = extension_host(early, paths, settings)
    if not early.skip_install:
        host.run_installers()
    parser = build_parser()
    host.preload(parser)
    return parse_flags(argv, parser), settings, host


def create_service(flags, settings: Settings | None = None, host: ExtensionHost | None = None) -> GenerationService:
    paths = paths_from(flags)
    for folder in paths.model_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    # torch.compile's kernels survive restarts here (the fast path)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(paths.data / "cache" / "torchinductor"))
    policy = DevicePolicy.choose(
        use_cpu=flags.use_cpu, no_half=flags.no_half, no_half_vae=flags.no_half_vae,
        precision=flags.precision, device_id=flags.device_id,
    )
    if policy.device.type == "cpu" and not flags.skip_torch_cuda_test and "all" not in flags.use_cpu:
        log.warning("No CUDA GPU is usable by torch %s; generating on the CPU (slow). "
                    "Add --skip-torch-cuda-test to silence this.", torch.__version__)
    tiers = TierFlags(medvram=flags.medvram, medvram_sdxl=flags.medvram_sdxl, lowvram=flags.lowvram)
    models = ModelService(
        paths, MemoryManager(policy, tiers), HashCache(paths.cache_file),
        hashing=not flags.no_hashing, allow_unsafe=flags.disable_safe_unpickle,
        vae_path=Path(flags.vae_path).expanduser().resolve() if flags.vae_path else None,
        vae_dirs=(Path(flags.vae_dir).expanduser().resolve(),) if flags.vae_dir else (),
    )
    settings = settings or Settings(paths.config_file)
    host = host or extension_host(flags, paths, settings)
    context.bind(settings=settings, flags=flags, paths=paths)
    upscalers = UpscalerLibrary(paths, models.memory, settings.get, models.allow_unsafe)
    scripts = builtin_scripts(models.titles, lambda: list(models.vaes()), upscalers)
    scripts.scripts.extend(host.load_scripts())
    scripts.component_listeners.append(host.after_component)
    service = GenerationService(paths, settings, models, ServiceFlags(
        nan_check=not flags.disable_nan_check,
        prompt_history=not flags.no_prompt_history,
        console_progress=not flags.disable_console_progressbars,
        attention=choice_from_flags(flags),
        compile=flags.compile,
    ), scripts=scripts, callbacks=host.callbacks, upscalers=upscalers)
    service.extensions = host
    context.bind(service=service)
    host.callbacks.call("ui_settings")  # extensions add their options before anything reads them
    if flags.ckpt:
        wanted = os.path.realpath(flags.ckpt)
        chosen = next((c for c in models.checkpoints if os.path.realpath(c.path) == wanted), None)
        if chosen:
            settings.set("sd_model_checkpoint", chosen.title, persist=False)
    return service


def preload_model(service: GenerationService) -> None:
    """Load the selected checkpoint in the background so the first Generate does not wait."""
    if not service.models.checkpoints:
        log.warning("No checkpoint found. %s", service.models.folder_hint())
        return

    def load() -> None:
        try:
            service.select_checkpoint(service.settings.get("sd_model_checkpoint") or service.models.titles()[0])
        except ModelLoadError as error:
            log.error("%s", error)

    threading.Thread(target=load, name="model-preload", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    arguments = flags_from_environment(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    flags, settings, host = prepare(arguments)
    logging.getLogger().setLevel(getattr(logging, (flags.loglevel or "INFO").upper(), logging.INFO))
    service = create_service(flags, settings, host)
    if not flags.ui_debug_mode and not flags.skip_load_model_at_start:
        preload_model(service)
    serve(build_app(service, flags), flags)


if __name__ == "__main__":
    main()
