"""A1111 facade: ``modules.shared`` for extensions (``opts``, ``cmd_opts``, ``state``,
``OptionInfo``, ``prompt_styles`` …). Hanga's own code never imports this module; see README "Extensions"."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Callable

from modules.service.extensions import context
from modules.service.settings_schema import ComponentHint, InvalidSetting, Setting

log = logging.getLogger("hanga")


class OptionInfo:
    """An extension's setting, registered with ``opts.add_option(key, OptionInfo(...))``. Every
    method returns the option, so calls chain (``OptionInfo(...).info("…").needs_reload_ui()``)."""

    def __init__(self, default: Any = None, label: str = "", component: Any = None, component_args: Any = None,
                 onchange: Callable | None = None, section: tuple[str, str] | None = None, refresh: Callable | None = None,
                 comment_before: str = "", comment_after: str = "", infotext: str | None = None,
                 restrict_api: bool = False, category_id: str | None = None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.refresh, self.infotext = onchange, section, refresh, infotext
        self.comment_before, self.comment_after = comment_before, comment_after
        self.restrict_api, self.category_id = restrict_api, category_id
        self.do_not_save = False

    def link(self, label: str, url: str) -> "OptionInfo":
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> "OptionInfo":
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> "OptionInfo":
        self.comment_after += html
        return self

    def needs_restart(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    """A note among the settings (A1111's ``OptionHTML``): shown, never saved."""

    def __init__(self, text: str):
        import gradio as gr

        super().__init__(str(text).strip(), label="", component=lambda **kwargs: gr.HTML(elem_classes="settings-info",
                                                                                        **kwargs))
        self.do_not_save = True


def options_section(section_identifier: tuple, options: dict) -> dict:
    for info in options.values():
        info.section = section_identifier
    return options


def _setting_for(key: str, info: OptionInfo) -> Setting:
    section = tuple(info.section or ("extensions", "Extensions"))
    hint = ComponentHint(info.component, info.component_args, info.refresh, info.comment_before, info.comment_after)
    args = hint.component_args()
    choices = args.get("choices")
    if callable(choices):
        choices = choices()
    # A free-form component (a dropdown that takes new values, a setting whose default says nothing
    # of its type) is stored as given; otherwise the default's type and the choices are checked.
    free = info.default is None or args.get("allow_custom_value") or args.get("multiselect") or info.refresh is not None
    fixed_choices = tuple(choices) if choices and not free and info.default in choices else None
    return Setting(key, info.default, info.label or key, section[0] or "extensions", choices=fixed_choices,
                   minimum=args.get("minimum"), maximum=args.get("maximum"), step=args.get("step"),
                   infotext=info.infotext, typed=not free, hint=hint)


class Options:
    """``shared.opts``: attribute access to every setting (Hanga's and the extensions'). Keys may
    hold dots (``getattr(opts, "tac_activeIn.txt2img")``)."""

    _infos: dict[str, OptionInfo] = {}

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
        labels = {key: OptionInfo(setting.default, setting.label, section=(setting.section, setting.section))
                  for key, setting in self._settings().schema.items()}
        labels.update({key: info for key, info in self._infos.items() if key in labels})
        return labels

    def add_option(self, key: str, info: OptionInfo) -> None:
        settings = self._settings()
        section = tuple(info.section or ("extensions", "Extensions"))
        settings.register(_setting_for(key, info), section[1] if len(section) > 1 and section[1] else section[0])
        self._infos[key] = info
        if info.onchange is not None:
            settings.watch(key, info.onchange)

    def get_default(self, key: str) -> Any:
        setting = self._settings().schema.get(key)
        return setting.default if setting else None

    def save(self, filename: str | None = None) -> None:
        """Settings are saved on every change already."""

    def onchange(self, key: str, func: Callable, call: bool = True) -> None:
        """``func()`` after ``key`` changes (from the Settings page, the API or ``opts.set``)."""
        self._settings().watch(key, func)
        if call:
            func()

    def dumpjson(self) -> str:
        return json.dumps(self._settings().data(), default=str)

    def same_type(self, x: Any, y: Any) -> bool:
        return x is None or y is None or type(x) is type(y)


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


class _PromptStyles:
    """``shared.prompt_styles``: ``.styles`` (name → style with ``prompt`` and ``negative_prompt``)."""

    @property
    def styles(self) -> dict:
        service = context.current().service
        return service.styles.all() if service is not None else {}

    def reload(self) -> None:
        """Styles are read from styles.csv each time."""


def _cmd_opts() -> argparse.Namespace | None:
    """The flags with A1111's default folders where a flag was not given (extensions read
    ``cmd_opts.embeddings_dir`` and friends without checking for None). A copy: an extension's
    writes never reach Hanga's flags."""
    bound = context.current()
    if bound.flags is None:
        return None
    cached = _CMD_OPTS.get(id(bound.flags))
    if cached is not None and cached[0] is bound.flags:
        return cached[1]
    values = vars(bound.flags).copy()
    paths = bound.paths
    if paths is not None:
        defaults = {"data_dir": paths.data, "models_dir": paths.models, "embeddings_dir": paths.embeddings,
                    "hypernetwork_dir": paths.hypernetworks, "lora_dir": paths.lora_dirs[0],
                    "lyco_dir_backcompat": paths.models / "LyCORIS", "lyco_dir": paths.models / "LyCORIS",
                    "ckpt_dir": paths.checkpoints, "vae_dir": paths.vae, "codeformer_models_path": paths.models / "Codeformer",
                    "gfpgan_models_path": paths.models / "GFPGAN", "esrgan_models_path": paths.upscaler_dirs["ESRGAN"],
                    "realesrgan_models_path": paths.upscaler_dirs["RealESRGAN"], "swinir_models_path": paths.upscaler_dirs["SwinIR"],
                    "ui_config_file": paths.data / "ui-config.json", "ui_settings_file": paths.config_file,
                    "styles_file": [str(paths.styles_file)]}
        for key, folder in defaults.items():
            if not values.get(key):
                values[key] = folder if isinstance(folder, list) else str(folder)
    namespace = argparse.Namespace(**values)
    _CMD_OPTS.clear()
    _CMD_OPTS[id(bound.flags)] = (bound.flags, namespace)
    return namespace


_CMD_OPTS: dict[int, tuple[Any, argparse.Namespace]] = {}
opts = Options()
state = _State()
prompt_styles = _PromptStyles()


def __getattr__(name: str) -> Any:  # PEP 562: values that exist only once Hanga runs
    bound = context.current()
    if name == "cmd_opts":
        return _cmd_opts()
    if name == "sd_model":
        loaded = bound.service.models.loaded if bound.service is not None else None
        return loaded.model if loaded is not None else None
    if name in ("config_filename", "styles_filename"):
        if bound.paths is None:
            return None
        return str(bound.paths.config_file if name == "config_filename" else bound.paths.styles_file)
    if name in ("data_path", "models_path", "script_path"):
        if bound.paths is None:
            return None
        return str({"data_path": bound.paths.data, "models_path": bound.paths.models,
                    "script_path": bound.paths.install}[name])
    if name == "device":
        service = bound.service
        return service.models.memory.policy.device if service is not None else None
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")


__all__ = ["OptionHTML", "OptionInfo", "Options", "log", "opts", "options_section", "prompt_styles", "state"]
