"""Typed settings under A1111's keys: declared once with defaults and validation, stored in
``config.json`` (a flat JSON object, A1111's format), written atomically.

A corrupt ``config.json`` is moved aside (never overwritten) and defaults are used; a stored value
of the wrong type is ignored with a warning.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from modules.core.atomic import keep_aside, write_json
from modules.service.settings_schema import SCHEMA, SECTIONS, InvalidSetting, Setting

log = logging.getLogger("hanga")


class Settings:
    """Thread-safe settings values; ``set`` validates and persists."""

    def __init__(self, path: Path | None, schema: Iterable[Setting] | None = None):
        self.path = path
        self.schema = {setting.key: setting for setting in (SCHEMA if schema is None else schema)}
        self.sections: dict[str, str] = dict(SECTIONS)  # section id → title, in page order
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._watchers: dict[str, list[Callable[[], Any]]] = {}
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

    def register(self, setting: Setting, section_title: str | None = None) -> None:
        """Add a setting at run time (an extension's option); a stored value of it is checked now."""
        if section_title and setting.section not in self.sections:
            self.sections[setting.section] = section_title
        with self._lock:
            self.schema[setting.key] = setting
            if setting.key in self._values:
                try:
                    self._values[setting.key] = setting.validate(self._values[setting.key])
                except InvalidSetting as error:
                    log.warning("config.json: ignoring %s", error)
                    del self._values[setting.key]

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
        before = self.get(key) if key in self.schema or key in self._values else None
        with self._lock:
            self._values[key] = value
            if persist and self.path is not None:
                write_json(self.path, self._values)
        if value != before:
            self._changed([key])

    def watch(self, key: str, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` after ``key`` changes (A1111's ``opts.onchange``); its errors are logged."""
        self._watchers.setdefault(key, []).append(callback)

    def _changed(self, keys: Iterable[str]) -> None:
        for key in keys:
            for callback in list(self._watchers.get(key, ())):
                try:
                    callback()
                except Exception:  # noqa: BLE001 - an extension's callback must not fail the change
                    log.exception("The change callback of setting %r failed", key)

    def update(self, values: dict[str, Any]) -> None:
        """Set several settings at once: all are validated first, so a bad one changes nothing."""
        checked = {}
        for key, value in values.items():
            setting = self.schema.get(key)
            checked[key] = setting.validate(value) if setting else value
        before = self.data()
        with self._lock:
            self._values.update(checked)
            if self.path is not None:
                write_json(self.path, self._values)
        self._changed(key for key, value in checked.items() if before.get(key) != value)

    def with_overrides(self, overrides: dict[str, Any] | None) -> "SettingsView":
        """A read-only view where ``overrides`` (validated; unknown keys ignored) win for one job."""
        checked: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            setting = self.schema.get(key)
            if setting is None:
                log.info("override_settings: ignoring unknown setting %r", key)
                continue
            if not setting.per_job:
                raise InvalidSetting(key, "cannot be changed by a job's override_settings; change it in Settings")
            checked[key] = setting.validate(value)
        return SettingsView(self, checked)


class SettingsView:
    def __init__(self, base: Settings, overrides: dict[str, Any]):
        self.base = base
        self.overrides = overrides

    def get(self, key: str) -> Any:
        return self.overrides[key] if key in self.overrides else self.base.get(key)


def confine_folders(values: dict[str, Any] | None, schema: dict[str, Setting], data_dir: Path, source: str,
                    locked: bool = False) -> None:
    """Folder settings that arrive over the network (``POST /options``, ``override_settings``) must
    name a folder inside the data folder, relative to it: no absolute path, no ``..``, no symlink
    leading out. (The Settings page and config.json may name any folder: that is the user's own.)
    ``locked`` (--hide-ui-dir-config): they cannot be changed at all."""
    root = data_dir.resolve()
    for key, value in (values or {}).items():
        setting = schema.get(key)
        if setting is None or not setting.folder:
            continue
        if locked:
            raise InvalidSetting(key, f"folder settings are locked (--hide-ui-dir-config); {source} cannot change them")
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        inside = not path.is_absolute() and ".." not in path.parts
        try:
            inside = inside and (root / path).resolve().is_relative_to(root)
        except (OSError, ValueError):
            inside = False
        if not inside:
            raise InvalidSetting(key, f"{source} may only name a folder inside the data folder, relative to it "
                                      f"(like 'outputs/mine'), without '..'; got {value!r}. Other folders can be "
                                      "set on the Settings page")
