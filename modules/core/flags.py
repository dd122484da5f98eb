"""Command-line flags, compatible with AUTOMATIC1111's web UI v1.10.1.

Every A1111 flag is declared with A1111's type, ``nargs``, choices and default, so a
user's existing ``COMMANDLINE_ARGS`` never stops Hanga from starting. Flags fall in
three sets:

* ``IMPLEMENTED`` -- Hanga acts on them;
* ``NOP`` -- A1111 itself documents them as doing nothing; accepted silently;
* everything else -- accepted, and named once in a "not supported yet" warning.

Path defaults are ``None`` here: "the A1111 location under the data/models dir", which
the code that owns the folder layout resolves, because those locations depend on
``--data-dir`` and ``--models-dir`` themselves.

Extensions add their own flags (A1111's ``preload.py`` convention) by calling
``add_argument`` on the parser from ``build_parser()`` before ``parse_flags`` runs.

``python -m modules.core.flags --markdown`` prints the unsupported flags for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_PORT = 7860
DEFAULT_API_ONLY_PORT = 7861
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


def _path(text: str) -> str:
    """A file or folder flag: absolute, resolved against the directory Hanga was started in."""
    return str(Path(text).expanduser().absolute())


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text!r}") from None


def _switch(help: str) -> dict[str, Any]:
    return {"action": "store_true", "help": help}


def _text(help: str, default: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": str, "default": default, "help": help, **extra}


def _dir(help: str) -> dict[str, Any]:
    return {"type": _path, "default": None, "help": help}


def _int(help: str, default: int | None = None) -> dict[str, Any]:
    return {"type": int, "default": default, "help": help}


# (group title, ((option string, add_argument keywords), ...)), in A1111's meaning.
_FLAG_TABLE: tuple[tuple[str, tuple[tuple[str, dict[str, Any]], ...]], ...] = (
    ("launcher and start-up", (
        ("-f", _switch("allow running as root (checked by webui.sh)")),
        ("--update-all-extensions", _switch("git-pull every extension at start-up")),
        ("--skip-python-version-check", _switch("do not check the Python version")),
        ("--skip-torch-cuda-test", _switch("do not require a working CUDA device (CPU/MPS runs)")),
        ("--reinstall-xformers", _switch("force reinstalling xformers")),
        ("--reinstall-torch", _switch("force reinstalling torch")),
        ("--update-check", _switch("check for a newer version at start-up")),
        ("--test-server", _switch("configure for tests: --api, --skip-torch-cuda-test, "
                                  "--disable-nan-check and no checkpoint")),
        ("--log-startup", _switch("log the timing of each start-up step")),
        ("--skip-prepare-environment", _switch("skip every install and environment check")),
        ("--skip-install", _switch("skip package installs and extensions' install.py")),
        ("--dump-sysinfo", _switch("write a system-information JSON file and exit")),
        ("--loglevel", _text("log level: CRITICAL, ERROR, WARNING, INFO or DEBUG")),
        ("--do-not-download-clip", _switch("do not download CLIP weights a checkpoint lacks")),
        ("--skip-version-check", _switch("do not check torch and xformers versions")),
        ("--no-download-sd-model", _switch("do not download a model when no checkpoint exists")),
    )),
    ("folders and files", (
        ("--data-dir", _dir("base folder for all user data (default: the install folder)")),
        ("--models-dir", _dir("base folder for models (default: <data-dir>/models)")),
        ("--config", _dir("model config to use instead of detecting it")),
        ("--ckpt", _dir("checkpoint to add to the list and load at start-up")),
        ("--ckpt-dir", _dir("extra folder of checkpoints")),
        ("--vae-dir", _dir("extra folder of VAE files")),
        ("--vae-path", _dir("always use this VAE; disables the VAE settings")),
        ("--embeddings-dir", _dir("textual-inversion folder (default: <data-dir>/embeddings)")),
        ("--textual-inversion-templates-dir", _dir("textual-inversion training prompt templates")),
        ("--hypernetwork-dir", _dir("hypernetwork folder (default: models/hypernetworks)")),
        ("--localizations-dir", _dir("folder of localization JSON files")),
        ("--gfpgan-dir", _dir("GFPGAN folder")),
        ("--gfpgan-model", _text("GFPGAN model file name")),
        ("--codeformer-models-path", _dir("CodeFormer models (default: models/Codeformer)")),
        ("--gfpgan-models-path", _dir("GFPGAN models (default: models/GFPGAN)")),
        ("--esrgan-models-path", _dir("ESRGAN models (default: models/ESRGAN)")),
        ("--bsrgan-models-path", _dir("BSRGAN models (default: models/BSRGAN)")),
        ("--realesrgan-models-path", _dir("Real-ESRGAN models (default: models/RealESRGAN)")),
        ("--dat-models-path", _dir("DAT models (default: models/DAT)")),
        ("--clip-models-path", _dir("CLIP models for the interrogator")),
        ("--ui-config-file", _text("UI defaults file (default: <data-dir>/ui-config.json)")),
        ("--ui-settings-file", _text("settings file (default: <data-dir>/config.json)")),
        ("--styles-file", _text("styles file or wildcard, repeatable (default: "
                                "<data-dir>/styles.csv)", default=[], action="append")),
        # Declared by A1111's built-in extensions (preload.py).
        ("--lora-dir", _dir("LoRA folder (default: models/Lora)")),
        ("--lyco-dir-backcompat", _dir("legacy LyCORIS folder (default: models/LyCORIS)")),
        ("--ldsr-models-path", _dir("LDSR models (default: models/LDSR)")),
        ("--scunet-models-path", _dir("SCUNet models (default: models/ScuNET)")),
        ("--swinir-models-path", _dir("SwinIR models (default: models/SwinIR)")),
    )),
    ("precision, memory and devices", (
        ("--no-half", _switch("keep the whole model in fp32")),
        ("--no-half-vae", _switch("keep the VAE in fp32")),
        ("--precision", _text("inference precision", default="autocast",
                              choices=["full", "half", "autocast"])),
        ("--upcast-sampling", _switch("fp16 weights, but sampling upcasts the U-Net inputs")),
        ("--medvram", _switch("low-VRAM mode: text encoder, U-Net and VAE take turns on the GPU")),
        ("--medvram-sdxl", _switch("--medvram only for SDXL models")),
        ("--lowvram", _switch("like --medvram, and the U-Net moves to the GPU block by block")),
        ("--lowram", _switch("load checkpoint weights straight to VRAM")),
        ("--use-cpu", _text("modules to run on the CPU: all, sd, interrogate, gfpgan, esrgan, "
                            "codeformer", default=[], nargs="+")),
        ("--use-ipex", _switch("use an Intel XPU")),
        ("--device-id", _text("CUDA device to use")),
        ("--disable-model-loading-ram-optimization", _switch("turn off the RAM-saving model load")),
        ("--opt-channelslast", _switch("use the channels_last memory format")),
        ("--disable-nan-check", _switch("do not check images and latents for NaNs")),
        ("--no-hashing", _switch("do not sha256-hash checkpoints (no Model hash in infotext)")),
        ("--disable-safe-unpickle", _switch("load pickled files without the restricted unpickler")),
    )),
    ("attention optimizations", (
        ("--xformers", _switch("install xformers and prefer it for attention")),
        ("--force-enable-xformers", _switch("use xformers without the capability check")),
        ("--xformers-flash-attention", _switch("xformers with flash attention (SD2)")),
        ("--opt-split-attention", _switch("prefer Doggettx split attention")),
        ("--opt-sub-quad-attention", _switch("prefer sub-quadratic attention")),
        ("--sub-quad-q-chunk-size", _int("sub-quadratic attention query chunk size", 1024)),
        ("--sub-quad-kv-chunk-size", _int("sub-quadratic attention key/value chunk size")),
        ("--sub-quad-chunk-threshold", _int("VRAM percentage above which sub-quadratic "
                                            "attention chunks")),
        ("--opt-split-attention-invokeai", _switch("prefer InvokeAI split attention")),
        ("--opt-split-attention-v1", _switch("prefer the original v1 split attention")),
        ("--opt-sdp-attention", _switch("prefer torch scaled_dot_product_attention")),
        ("--opt-sdp-no-mem-attention", _switch("SDP attention without the memory-efficient "
                                               "kernel (deterministic)")),
        ("--disable-opt-split-attention", _switch("'Automatic' selects no optimization")),
    )),
    ("server and network", (
        ("--listen", _switch("listen on 0.0.0.0 (all interfaces)")),
        ("--port", _int("server port (default 7860; 7861 with --nowebui)")),
        ("--server-name", _text("host name or address to listen on")),
        ("--share", _switch("open a public Gradio share link")),
        ("--ngrok", _text("ngrok auth token: open an ngrok tunnel")),
        ("--ngrok-options", {"type": _json, "default": None,
                             "help": "ngrok options as a JSON object"}),
        ("--subpath", _text("root path when served behind a reverse proxy")),
        ("--tls-keyfile", _text("TLS key file (HTTPS)")),
        ("--tls-certfile", _text("TLS certificate file (HTTPS)")),
        ("--disable-tls-verify", {"action": "store_false",
                                  "help": "accept a self-signed TLS certificate"}),
        ("--cors-allow-origins", _text("comma-separated origins allowed by CORS")),
        ("--cors-allow-origins-regex", _text("regular expression of origins allowed by CORS")),
        ("--timeout-keep-alive", _int("HTTP keep-alive timeout in seconds", 30)),
        ("--gradio-auth", _text("UI login, user:password[,user2:password2]")),
        ("--gradio-auth-path", _dir("file of UI logins, comma- or line-separated")),
        ("--gradio-allowed-path", _text("extra folder the UI may serve files from, repeatable",
                                        default=[], action="append")),
        ("--gradio-debug", _switch("run Gradio in debug mode")),
        ("--no-gradio-queue", _switch("turn the Gradio queue off (plain HTTP requests)")),
        ("--autolaunch", _switch("open the UI in the browser at start-up")),
    )),
    ("API", (
        ("--api", _switch("also serve the REST API (/sdapi/v1) on the UI server")),
        ("--api-auth", _text("HTTP Basic logins for the API, user:password[,user2:password2]")),
        ("--api-log", _switch("log every API request")),
        ("--nowebui", _switch("serve only the API, without the UI (port 7861)")),
        ("--api-server-stop", _switch("enable /sdapi/v1/server-kill, -restart and -stop")),
        ("--skip-load-model-at-start", _switch("with --nowebui: load no model at start-up")),
    )),
    ("user interface", (
        ("--theme", _text("UI theme: light or dark")),
        ("--ui-debug-mode", _switch("start the UI without loading a model")),
        ("--hide-ui-dir-config", _switch("hide and lock the folder settings")),
        ("--freeze-settings", _switch("lock all settings")),
        ("--freeze-settings-in-sections", _text("comma-separated settings sections to lock")),
        ("--freeze-specific-settings", _text("comma-separated settings to lock")),
        ("--use-textbox-seed", _switch("enter the seed in a textbox")),
        ("--no-progressbar-hiding", _switch("do not hide the Gradio progress bar")),
        ("--disable-console-progressbars", _switch("no progress bars in the console")),
        ("--no-prompt-history", _switch("do not write the last prompt to params.txt")),
        ("--unix-filenames-sanitization", _switch("sanitize output file names for Unix only")),
        ("--filenames-max-length", _int("longest output file name", 128)),
    )),
    ("extensions and security", (
        ("--enable-insecure-extension-access", _switch("allow the Extensions tab even when the "
                                                       "server is reachable from the network")),
        ("--disable-all-extensions", _switch("load no extensions at all")),
        ("--disable-extra-extensions", _switch("load only the built-in extensions")),
        ("--allow-code", _switch("enable the 'Custom code' script")),
        ("--administrator", _switch("administrator rights")),
    )),
    ("historic: accepted, do nothing", (
        ("--max-batch-count", _int("does nothing", 16)),
        ("--always-batch-cond-uncond", _switch("does nothing (now the batch_cond_uncond setting)")),
        ("--unload-gfpgan", _switch("does nothing")),
        ("--deepdanbooru", _switch("does nothing (DeepBooru is always available)")),
        ("--show-negative-prompt", _switch("does nothing")),
        ("--gradio-img2img-tool", _text("does nothing")),
        ("--gradio-inpaint-tool", _text("does nothing")),
        ("--ngrok-region", _text("does nothing", default="")),
        ("--enable-console-prompts", _switch("does nothing (now a setting)")),
        ("--gradio-queue", _switch("does nothing (the queue is on by default)")),
        ("--add-stop-route", _switch("does nothing (see --api-server-stop)")),
    )),
    ("Hanga's own", (
        ("--compile", _switch("compile the U-Net with torch.compile (the fast path; setting compile_unet)")),
    )),
)

# Flags A1111 does not have; everything else is A1111 v1.10.1's list.
HANGA_ONLY: frozenset[str] = frozenset({"--compile"})

IMPLEMENTED: frozenset[str] = frozenset({
    "port", "listen", "server_name", "data_dir", "models_dir", "ckpt", "ckpt_dir",
    "use_cpu", "skip_torch_cuda_test", "no_half", "precision", "api", "nowebui",
    "no_download_sd_model", "skip_prepare_environment", "skip_install",
    "skip_python_version_check", "skip_version_check", "no_hashing", "disable_safe_unpickle",
    "loglevel", "f", "ui_debug_mode", "no_half_vae", "disable_console_progressbars",
    "test_server", "device_id", "api_auth", "gradio_auth", "gradio_auth_path", "disable_nan_check",
    "no_prompt_history", "timeout_keep_alive", "vae_dir", "vae_path",
    "hypernetwork_dir", "embeddings_dir", "lora_dir", "medvram", "medvram_sdxl", "lowvram",
    "xformers", "force_enable_xformers", "opt_split_attention", "opt_sub_quad_attention",
    "opt_split_attention_invokeai", "opt_split_attention_v1", "opt_sdp_attention", "opt_sdp_no_mem_attention",
    "disable_opt_split_attention", "compile", "api_log", "cors_allow_origins", "cors_allow_origins_regex",
    "skip_load_model_at_start", "api_server_stop", "disable_all_extensions", "disable_extra_extensions",
    "enable_insecure_extension_access",
})

NOP: frozenset[str] = frozenset({
    "max_batch_count", "always_batch_cond_uncond", "unload_gfpgan", "deepdanbooru",
    "show_negative_prompt", "gradio_img2img_tool", "gradio_inpaint_tool", "ngrok_region",
    "enable_console_prompts", "gradio_queue", "add_stop_route",
})


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


# Dest -> option string of every flag Hanga declares (extension flags are not ours to judge).
_DECLARED: dict[str, str] = {
    _dest(option): option for _, flags in _FLAG_TABLE for option, _ in flags
}


def build_parser() -> argparse.ArgumentParser:
    """A parser with every A1111 flag; extensions may add theirs before ``parse_flags``."""
    parser = argparse.ArgumentParser(
        prog="webui.py",
        description="Hanga: a local Stable-Diffusion web UI (accepts A1111 v1.10.1 flags).",
        allow_abbrev=False,  # prefixes would turn extension flags into ambiguity errors
    )
    for title, flags in _FLAG_TABLE:
        group = parser.add_argument_group(title)
        for option, keywords in flags:
            group.add_argument(option, **keywords)
    return parser


def flags_from_environment(argv: Sequence[str],
                           env: Mapping[str, str] = os.environ) -> list[str]:
    """``argv`` followed by ``COMMANDLINE_ARGS``, split like a POSIX shell, as A1111 does."""
    return [*argv, *shlex.split(env.get("COMMANDLINE_ARGS", ""))]


def parse_flags(argv: Sequence[str], parser: argparse.ArgumentParser | None = None,
                log: logging.Logger = logging.getLogger("hanga")) -> argparse.Namespace:
    """Parse ``argv`` (without the program name). Bad values of known flags still exit."""
    parser = parser or build_parser()
    ns, unknown = parser.parse_known_args(list(argv))
    if unknown:
        log.warning("ignoring unknown command-line arguments: %s", shlex.join(unknown))
    unsupported = [_DECLARED[dest] for dest in _user_set(parser, ns)
                   if dest in _DECLARED and dest not in IMPLEMENTED and dest not in NOP]
    if unsupported:
        log.warning("not supported yet: %s", ", ".join(sorted(unsupported)))
    if ns.test_server:
        _configure_for_tests(ns)
    return ns


def _user_set(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> list[str]:
    """Dests whose parsed value differs from the parser's default."""
    return [dest for dest, value in vars(ns).items() if value != parser.get_default(dest)]


def _configure_for_tests(ns: argparse.Namespace) -> None:
    ns.api = True
    ns.skip_torch_cuda_test = True
    ns.disable_nan_check = True
    if ns.ckpt is None:
        ns.ckpt = ""  # empty: load no checkpoint at start-up


def unsupported_flags() -> list[str]:
    """Option strings of every declared flag that is neither implemented nor a nop."""
    return sorted(option for dest, option in _DECLARED.items()
                  if dest not in IMPLEMENTED and dest not in NOP)


def server_name(ns: argparse.Namespace) -> str:
    """Address to bind: --server-name, else 0.0.0.0 with --listen, else loopback only."""
    if ns.server_name:
        return ns.server_name
    return ALL_INTERFACES if ns.listen else LOOPBACK


def server_port(ns: argparse.Namespace) -> int:
    return ns.port or (DEFAULT_API_ONLY_PORT if ns.nowebui else DEFAULT_PORT)


def is_non_local(ns: argparse.Namespace) -> bool:
    """Whether others on the network can reach the server (gates the Extensions tab)."""
    return bool(ns.share or ns.listen or ns.ngrok or ns.server_name)


def unsupported_flags_markdown() -> str:
    helps = {option: keywords["help"] for _, flags in _FLAG_TABLE for option, keywords in flags}
    return "\n".join(f"- `{option}`: {helps[option]}" for option in unsupported_flags())


def _main(argv: Sequence[str]) -> int:
    cli = argparse.ArgumentParser(prog="python -m modules.core.flags", allow_abbrev=False)
    cli.add_argument("--markdown", action="store_true",
                     help="print the flags Hanga accepts but does not support yet")
    if not cli.parse_args(argv).markdown:
        cli.print_help()
        return 2
    print(unsupported_flags_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
