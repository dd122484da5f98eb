"""Typed settings under A1111's keys: declared once with defaults and validation, stored in
``config.json`` (a flat JSON object, A1111's format), written atomically.

A corrupt ``config.json`` is moved aside (never overwritten) and defaults are used; a stored value
of the wrong type is ignored with a warning.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from modules.core.atomic import keep_aside, write_json
from modules.core.generation.request import InvalidRequest

log = logging.getLogger("hanga")


class InvalidSetting(InvalidRequest):
    """A setting value outside its type or range; ``field`` is the setting's key."""


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    label: str
    section: str
    choices: tuple | Callable[[], Iterable[str]] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def validate(self, value: Any) -> Any:
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise InvalidSetting(self.key, f"must be {expected.__name__}; got {value!r}")
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise InvalidSetting(self.key, f"must be between {self.minimum:g} and {self.maximum:g}; got {value!r}")
        if isinstance(self.choices, tuple) and value not in self.choices:
            raise InvalidSetting(self.key, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value


SCHEMA: tuple[Setting, ...] = (
    Setting("sd_model_checkpoint", "", "Stable Diffusion checkpoint", "sd"),
    Setting("CLIP_stop_at_last_layers", 1, "Clip skip", "sd", minimum=1, maximum=12),
    Setting("emphasis", "Original", "Emphasis mode", "sd", choices=("None", "Ignore", "Original", "No norm")),
    Setting("comma_padding_backtrack", 20, "Prompt word wrap length limit", "sd", minimum=0, maximum=74),
    Setting("randn_source", "GPU", "Random number generator source", "sd", choices=("GPU", "CPU")),
    Setting("eta_noise_seed_delta", 0, "Eta noise seed delta", "sampler-params", minimum=0, maximum=2**31),
    Setting("eta_ancestral", 1.0, "Eta for k-diffusion samplers", "sampler-params", minimum=0, maximum=1),
    Setting("eta_ddim", 0.0, "Eta for DDIM", "sampler-params", minimum=0, maximum=1),
    Setting("s_churn", 0.0, "sigma churn", "sampler-params", minimum=0, maximum=100),
    Setting("s_tmin", 0.0, "sigma tmin", "sampler-params", minimum=0, maximum=10),
    Setting("s_tmax", 0.0, "sigma tmax", "sampler-params", minimum=0, maximum=999),
    Setting("s_noise", 1.0, "sigma noise", "sampler-params", minimum=0, maximum=1.1),
    Setting("sigma_min", 0.0, "sigma min (0 = default)", "sampler-params", minimum=0),
    Setting("sigma_max", 0.0, "sigma max (0 = default)", "sampler-params", minimum=0),
    Setting("rho", 0.0, "rho (0 = default)", "sampler-params", minimum=0),
    Setting("samples_save", True, "Always save all generated images", "saving-images"),
    Setting("samples_format", "png", "File format for images", "saving-images", choices=("png",)),
    Setting("samples_filename_pattern", "", "Images filename pattern", "saving-images"),
    Setting("save_to_dirs", True, "Save images to a subdirectory", "saving-to-dirs"),
    Setting("directories_filename_pattern", "[date]", "Directory name pattern", "saving-to-dirs"),
    Setting("outdir_samples", "", "Output directory for images; if empty, per-tab directories", "saving-paths"),
    Setting("outdir_txt2img_samples", "outputs/txt2img-images", "Output directory for txt2img images", "saving-paths"),
    Setting("enable_pnginfo", True, "Save text information about generation parameters as chunks to png files", "infotext"),
    Setting("add_model_hash_to_info", True, "Add model hash to infotext", "infotext"),
    Setting("add_model_name_to_info", True, "Add model name to infotext", "infotext"),
    Setting("add_version_to_infotext", True, "Add program version to infotext", "infotext"),
    Setting("quicksettings_list", ["sd_model_checkpoint"], "Quicksettings list", "ui"),
)


class Settings:
    """Thread-safe settings values; ``set`` validates and persists."""

    def __init__(self, path: Path | None, schema: Iterable[Setting] = SCHEMA):
        self.path = path
        self.schema = {setting.key: setting for setting in schema}
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        if path is not None:
            self._values = self._load(path)

    def _load(self, path: Path) -> dict[str, Any]:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            aside = keep_aside(path)
            log.error("%s could not be read (%s); it was kept as %s and defaults are used", path, error, aside.name)
            return {}
        values = {}
        for key, value in stored.items():
            setting = self.schema.get(key)
            if setting is None:
                values[key] = value  # kept verbatim: extensions and later versions own these keys
                continue
            try:
                values[key] = setting.validate(value)
            except InvalidSetting as error:
                log.warning("config.json: ignoring %s", error)
        return values

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
        setting = self.schema.get(key)
        if setting is None:
            raise KeyError(key)
        return setting.default

    def data(self) -> dict[str, Any]:
        """All settings with defaults filled in (the API's GET /options)."""
        with self._lock:
            merged = {key: setting.default for key, setting in self.schema.items()}
            merged.update(self._values)
            return merged

    def set(self, key: str, value: Any, persist: bool = True) -> None:
        setting = self.schema.get(key)
        value = setting.validate(value) if setting else value
        with self._lock:
            self._values[key] = value
            if persist and self.path is not None:
                write_json(self.path, self._values)

    def with_overrides(self, overrides: dict[str, Any] | None) -> "SettingsView":
        """A read-only view where ``overrides`` (validated; unknown keys ignored) win for one job."""
        checked: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            setting = self.schema.get(key)
            if setting is None:
                log.info("override_settings: ignoring unknown setting %r", key)
                continue
            checked[key] = setting.validate(value)
        return SettingsView(self, checked)


class SettingsView:
    def __init__(self, base: Settings, overrides: dict[str, Any]):
        self.base = base
        self.overrides = overrides

    def get(self, key: str) -> Any:
        return self.overrides[key] if key in self.overrides else self.base.get(key)
