"""A1111 facade: ``modules.scripts`` for extensions — the ``Script`` base with A1111's attributes
and hooks, ``AlwaysVisible``, ``basedir()``. Which hooks Hanga calls is listed in README
"Extensions". Hanga's own code never imports this module."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from modules.core.paths import INSTALL_DIR
from modules.service.extensions import context
from modules.service.extensions.callbacks import PostprocessBatchListArgs, PostprocessImageArgs
from modules.service.scripts import api

__all__ = ["AlwaysVisible", "PostprocessBatchListArgs", "PostprocessImageArgs", "Script", "ScriptClassData",
           "ScriptFile", "ScriptRunner", "basedir", "list_scripts", "scripts_img2img", "scripts_txt2img"]

AlwaysVisible = api.ALWAYS_VISIBLE


@dataclass(frozen=True)
class ScriptFile:
    basedir: str
    filename: str
    path: str


class Script(api.Script):
    name: str | None = None
    section: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    group = None
    create_group = True
    infotext_fields: list | None = None
    paste_field_names: list | None = None
    api_info = None
    controls = None
    sorting_priority = 0
    on_before_component_elem_id: list | None = None
    on_after_component_elem_id: list | None = None

    def title(self) -> str:
        raise NotImplementedError()

    def ui(self, is_img2img: bool):
        return []

    def show(self, is_img2img: bool):
        return True

    def run(self, p, *args):
        return None

    def setup(self, p, *args) -> None:
        pass

    def before_process_batch(self, p, *args, **kwargs) -> None:
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs) -> None:
        pass

    def process_batch(self, p, *args, **kwargs) -> None:
        pass

    def postprocess_batch(self, p, *args, **kwargs) -> None:
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs) -> None:
        pass

    def postprocess_image(self, p, pp, *args) -> None:
        pass

    def before_hr(self, p, *args) -> None:
        pass

    def before_component(self, component, **kwargs) -> None:
        pass

    def after_component(self, component, **kwargs) -> None:
        pass

    def on_before_component(self, callback, *, elem_id) -> None:
        self.on_before_component_elem_id = [*(self.on_before_component_elem_id or []), (elem_id, callback)]

    def on_after_component(self, callback, *, elem_id) -> None:
        self.on_after_component_elem_id = [*(self.on_after_component_elem_id or []), (elem_id, callback)]

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's id for a control of this script: ``script_[<tab>_]<title>_<item_id>``."""
        need_tab = self.show(True) == self.show(False)
        tab = ("img2img_" if self.is_img2img else "txt2img_") if need_tab else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"

    def default_args(self, is_img2img: bool) -> list:
        """The values of the script's controls as first shown: what an API call gets when it
        sends no ``args`` for an always-on script (A1111 does the same)."""
        cached = getattr(self, "_hanga_defaults", None)
        if cached is None:
            import gradio as gr

            with gr.Blocks():
                controls = self.ui(is_img2img) or []
            cached = [getattr(control, "value", None) for control in controls]
            self._hanga_defaults = cached
        return list(cached)


def basedir() -> str:
    """The folder of the extension whose scripts are being imported (else Hanga's own)."""
    current = context.current().current_basedir
    return str(current or INSTALL_DIR)


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """Files ending in ``extension`` under Hanga's ``<scriptdirname>`` and each extension's."""
    bound = context.current()
    folders = [Path(INSTALL_DIR)]
    if include_extensions and bound.paths is not None:
        for parent in bound.paths.extension_dirs:
            if parent.is_dir():
                folders += sorted(p for p in parent.iterdir() if p.is_dir())
    found = []
    for folder in folders:
        directory = folder / scriptdirname
        if directory.is_dir():
            found += [ScriptFile(str(folder), path.name, str(path)) for path in sorted(directory.iterdir())
                      if path.is_file() and path.suffix.lower() == extension.lower()]
    return found


class ScriptClassData(NamedTuple):
    script_class: type
    path: str
    basedir: str
    module: ModuleType


class ScriptRunner:
    """``scripts.scripts_txt2img`` / ``scripts_img2img``: the scripts of one tab."""

    def __init__(self, is_img2img: bool):
        self.is_img2img = is_img2img

    def _registry(self):
        service = context.current().service
        return service.scripts if service is not None else api.ScriptRegistry()

    @property
    def scripts(self) -> list:
        return [s for s in self._registry().scripts if s.tab_is_img2img in (None, self.is_img2img)]

    @property
    def alwayson_scripts(self) -> list:
        return self._registry().always_on(self.is_img2img)

    @property
    def selectable_scripts(self) -> list:
        return self._registry().selectable(self.is_img2img)

    @property
    def titles(self) -> list[str]:
        return self._registry().titles(self.is_img2img)


scripts_txt2img = ScriptRunner(False)
scripts_img2img = ScriptRunner(True)


def __getattr__(name: str) -> Any:  # PEP 562
    if name == "current_basedir":
        return basedir()
    if name == "scripts_data":  # every extension script class loaded so far, in load order
        host = context.current().host
        return [ScriptClassData(*entry) for entry in (host.script_classes if host is not None else ())]
    raise AttributeError(f"module 'modules.scripts' has no attribute {name!r}")
