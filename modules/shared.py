"""A1111 facade: ``modules.shared`` for extensions (``opts``, ``cmd_opts``, ``state``,
``OptionInfo`` …). Hanga's own code never imports this module; see README "Extensions"."""

from __future__ import annotations

import logging
from typing import Any, Callable

from modules.service.extensions import context
from modules.service.settings_schema import InvalidSetting, Setting

log = logging.getLogger("hanga")


class OptionInfo:
    """An extension's setting, registered with ``opts.add_option(key, OptionInfo(...))``."""

    def __init__(self, default: Any = None, label: str = "", component: Any = None, component_args: Any = None,
                 onchange: Callable | None = None, section: tuple[str, str] | None = None, refresh: Callable | None = None,
                 comment_before: str = "", comment_after: str = "", infotext: str | None = None,
                 restrict_api: bool = False, category_id: str | None = None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.refresh, self.infotext = onchange, section, refresh, infotext
        self.comment_before, self.comment_after = comment_before, comment_after
        self.restrict_api, self.category_id = restrict_api, category_id
        self.do_not_save = False

    def info(self, text: str) -> "OptionInfo":
        self.comment_after += f" ({text})"
        return self

    def needs_restart(self) -> "OptionInfo":
        self.comment_after += " (requires restart)"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.comment_after += " (requires Reload UI)"
        return self

    def html(self, text: str = "") -> "OptionInfo":
        return self

    def link(self, label: str = "", url: str = "") -> "OptionInfo":
        return self


def options_section(section_identifier: tuple[str, str], options: dict) -> dict:
    for info in options.values():
        info.section = section_identifier
    return options


class Options:
    """``shared.opts``: attribute access to every setting (Hanga's and the extensions')."""

    def _settings(self):
        settings = context.current().settings
        if settings is None:
            raise RuntimeError("shared.opts is used before Hanga has loaded its settings")
        return settings

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._settings().get(key)
        except KeyError:
            raise AttributeError(f"no setting named {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        settings = self._settings()
        if key not in settings.schema:
            return False
        try:
            settings.set(key, value)
        except InvalidSetting as error:
            log.warning("opts.%s: %s", key, error)
            return False
        return True

    @property
    def data(self) -> dict[str, Any]:
        """Every value (defaults filled in). Writes go to the live settings."""
        return _LiveData(self._settings())

    @property
    def data_labels(self) -> dict[str, OptionInfo]:
        return {key: OptionInfo(setting.default, setting.label, section=(setting.section, setting.section))
                for key, setting in self._settings().schema.items()}

    def add_option(self, key: str, info: OptionInfo) -> None:
        section = tuple(info.section or ("extensions", "Extensions"))
        section_id = section[0] or "extensions"
        section_title = section[1] if len(section) > 1 and section[1] else section_id
        args = info.component_args() if callable(info.component_args) else (info.component_args or {})
        choices = args.get("choices") if isinstance(args, dict) else None
        if callable(choices):
            choices = choices()
        typed = info.default is not None and not (choices and not isinstance(info.default, (str, int, float)))
        setting = Setting(key, info.default, info.label or key, section_id,
                          choices=tuple(choices) if choices and typed and info.default in choices else None,
                          minimum=args.get("minimum") if isinstance(args, dict) else None,
                          maximum=args.get("maximum") if isinstance(args, dict) else None,
                          step=args.get("step") if isinstance(args, dict) else None,
                          infotext=info.infotext, typed=typed)
        self._settings().register(setting, section_title)

    def get_default(self, key: str) -> Any:
        setting = self._settings().schema.get(key)
        return setting.default if setting else None

    def save(self, filename: str | None = None) -> None:
        """Settings are saved on every change already."""

    def onchange(self, key: str, func: Callable, call: bool = True) -> None:
        if call:
            func()

    def dumpjson(self) -> str:
        import json

        return json.dumps(self._settings().data())


class _LiveData(dict):
    def __init__(self, settings):
        super().__init__(settings.data())
        self._live = settings

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key in self._live.schema:
            self._live.set(key, value)


class _State:
    """``shared.state``: the running job's flags and counters."""

    def _job_state(self):
        service = context.current().service
        return service.state if service is not None else None

    def __getattr__(self, name: str) -> Any:
        state = self._job_state()
        snapshot = state.snapshot() if state is not None else None
        values = {
            "interrupted": snapshot.interrupted if snapshot else False,
            "skipped": snapshot.skipped if snapshot else False,
            "job": snapshot.job if snapshot else "",
            "job_no": snapshot.job_no if snapshot else 0,
            "job_count": snapshot.job_count if snapshot else 0,
            "sampling_step": snapshot.sampling_step if snapshot else 0,
            "sampling_steps": snapshot.sampling_steps if snapshot else 0,
            "job_timestamp": snapshot.job_timestamp if snapshot else "0",
            "textinfo": None,
            "stopping_generation": False,
        }
        if name in values:
            return values[name]
        raise AttributeError(name)

    def interrupt(self) -> None:
        service = context.current().service
        if service is not None:
            service.interrupt()

    def skip(self) -> None:
        service = context.current().service
        if service is not None:
            service.skip()


opts = Options()
state = _State()
prompt_styles = None


def __getattr__(name: str) -> Any:  # PEP 562: values that exist only once Hanga runs
    bound = context.current()
    if name == "cmd_opts":
        return bound.flags
    if name == "sd_model":
        loaded = bound.service.models.loaded if bound.service is not None else None
        return loaded.model if loaded is not None else None
    if name in ("config_filename", "styles_filename"):
        if bound.paths is None:
            return None
        return str(bound.paths.config_file if name == "config_filename" else bound.paths.styles_file)
    if name == "device":
        service = bound.service
        return service.models.memory.policy.device if service is not None else None
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
