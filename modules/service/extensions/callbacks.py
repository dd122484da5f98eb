"""``script_callbacks`` registrations: callbacks by event name, each remembered with the
extension that registered it, called in order with errors isolated per callback."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from modules.core.sampling.denoiser import AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams

__all__ = ["AfterCFGCallbackParams", "CFGDenoisedParams", "CFGDenoiserParams", "FIRED", "Callbacks", "ImageSaveParams"]

log = logging.getLogger("hanga")

# The events Hanga fires, and where (others are accepted and never called; see README).
FIRED = ("app_started", "model_loaded", "ui_tabs", "ui_settings", "before_image_saved", "image_saved",
         "infotext_pasted", "before_ui", "after_component", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg",
         "before_reload", "script_unloaded")


@dataclass
class ImageSaveParams:
    """What ``on_before_image_saved`` / ``on_image_saved`` callbacks get (A1111's fields)."""

    image: Any
    p: Any
    filename: str
    pnginfo: dict


@dataclass
class PostprocessImageArgs:
    """What an always-on script's ``postprocess_image(p, pp, *args)`` gets: ``pp.image`` may be replaced."""

    image: Any


class PostprocessBatchListArgs:
    """What ``postprocess_batch_list(p, pp, *args, batch_number=)`` gets: ``pp.images``, the batch's
    pictures as (3, H, W) float tensors in [0, 1], which a script may change or replace."""

    def __init__(self, images):
        self.images = images


@dataclass
class Registered:
    callback: Callable
    extension: str
    name: str | None = None


@dataclass
class Callbacks:
    by_event: dict[str, list[Registered]] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (extension, event, traceback)
    # Extensions' paste buttons (A1111's infotext_utils.register_paste_params_button): ParamBinding
    # objects, wired to the tab they name once the page is built.
    paste_buttons: list = field(default_factory=list)

    def add(self, event: str, callback: Callable, extension: str, name: str | None = None) -> None:
        if not callable(callback):
            raise TypeError(f"script_callbacks.on_{event} needs a callable; got {callback!r}")
        self.by_event.setdefault(event, []).append(Registered(callback, extension, name))

    def remove_extension(self, extension: str) -> None:
        for event in self.by_event:
            self.by_event[event] = [r for r in self.by_event[event] if r.extension != extension]

    def call(self, event: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Each callback's result (errors logged with the extension's name, and skipped)."""
        results = []
        for registered in list(self.by_event.get(event, ())):
            try:
                results.append(registered.callback(*args, **kwargs))
            except Exception:  # noqa: BLE001 - one extension's bug must not stop the others
                trace = traceback.format_exc()
                self.errors.append((registered.extension, event, trace))
                log.error("Extension %s failed in on_%s:\n%s", registered.extension, event, trace)
        return results

    def count(self, event: str) -> int:
        return len(self.by_event.get(event, ()))
