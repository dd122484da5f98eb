"""The Settings page's "Download system info": what a bug report needs (versions, device, flags
with secrets hidden, extensions, settings that differ from their defaults)."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata
from typing import Any

import psutil
import torch

from modules.core.version import infotext_version

PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "accelerate", "gradio", "fastapi", "pydantic",
            "pillow", "numpy", "xformers")
SECRET_FLAGS = ("api_auth", "gradio_auth")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def public_flags(flags) -> dict[str, Any]:
    """The parsed flags with credentials replaced by "(set)" (API cmd-flags, system info)."""
    shown = dict(vars(flags)) if flags is not None else {}
    for key in SECRET_FLAGS:
        if shown.get(key):
            shown[key] = "(set)"
    return shown


def sysinfo(service, flags=None) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    shown_flags = public_flags(flags)
    settings = service.settings
    changed = {key: value for key, value in settings.data().items()
               if key not in settings.schema or settings.schema[key].default != value}
    host = getattr(service, "extensions", None)
    return {
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "hanga": infotext_version(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": psutil.cpu_count(),
        "ram_total": memory.total,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": str(service.models.memory.policy.device),
        "packages": {name: _version(name) for name in PACKAGES},
        "flags": shown_flags,
        "extensions": [{"name": e.name, "enabled": e.enabled, "status": e.status, "remote": e.remote,
                        "commit": e.commit_hash} for e in (host.extensions if host else [])],
        "settings_changed": changed,
        "checkpoint": service.current_checkpoint_title(),
    }
