"""A1111 facade: ``modules.script_callbacks``. Registrations go to the running extension host,
remembered with the extension that made them; a failing callback is reported and skipped. Hanga
fires the events listed in ``modules.service.extensions.callbacks.FIRED``; the others are
accepted and never called (README "Extensions")."""

from __future__ import annotations

from typing import Callable

from modules.service.extensions import context
from modules.service.extensions.callbacks import ImageSaveParams  # noqa: F401 - A1111's name
from modules.service.extensions.callbacks import (  # noqa: F401 - A1111's names
    AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams,
)

__all__ = ["ImageSaveParams", "CFGDenoiserParams", "CFGDenoisedParams", "AfterCFGCallbackParams"]


def _register(event: str, callback: Callable, name: str | None = None) -> None:
    bound = context.current()
    bound.callbacks.add(event, callback, bound.current_extension or "(unknown)", name)


def _on(event: str):
    def register(callback: Callable, *, name: str | None = None) -> None:
        _register(event, callback, name)
    register.__name__ = f"on_{event}"
    register.__doc__ = f"Register ``callback`` for the {event!r} event."
    return register


on_app_started = _on("app_started")
on_before_reload = _on("before_reload")
on_model_loaded = _on("model_loaded")
on_ui_tabs = _on("ui_tabs")
on_ui_train_tabs = _on("ui_train_tabs")
on_ui_settings = _on("ui_settings")
on_before_image_saved = _on("before_image_saved")
on_image_saved = _on("image_saved")
on_extra_noise = _on("extra_noise")
on_cfg_denoiser = _on("cfg_denoiser")
on_cfg_denoised = _on("cfg_denoised")
on_cfg_after_cfg = _on("cfg_after_cfg")
on_before_component = _on("before_component")
on_after_component = _on("after_component")
on_image_grid = _on("image_grid")
on_infotext_pasted = _on("infotext_pasted")
on_script_unloaded = _on("script_unloaded")
on_before_ui = _on("before_ui")
on_list_optimizers = _on("list_optimizers")
on_list_unets = _on("list_unets")
on_before_token_counter = _on("before_token_counter")


def remove_current_script_callbacks() -> None:
    bound = context.current()
    bound.callbacks.remove_extension(bound.current_extension)


def remove_callbacks_for_function(callback: Callable) -> None:
    for registered in context.current().callbacks.by_event.values():
        registered[:] = [r for r in registered if r.callback is not callback]
