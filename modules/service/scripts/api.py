"""The Script API: a script has a title, says on which tabs it shows, declares its controls, and runs.

``ui(is_img2img)`` returns the script's controls in order; the values the user set arrive as the
positional ``*args`` of ``run(p, *args)`` in the same order (as A1111's ``script_args``, which the
HTTP API passes too). Built-in scripts declare controls with the plain specs below, which the UI
layer renders; extension scripts may return Gradio components instead.

``run`` edits copies of ``p`` and calls ``process_images`` as often as it needs, returning one
``Processed`` with the images to show (grids first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modules.core.generation.request import InvalidRequest
from modules.service.processing import Processed, Processing


@dataclass(frozen=True)
class Control:
    label: str
    value: Any = None
    elem_id: str | None = None
    visible: bool = True


@dataclass(frozen=True)
class Slider(Control):
    minimum: float = 0
    maximum: float = 100
    step: float = 1


@dataclass(frozen=True)
class Number(Control):
    precision: int | None = None


@dataclass(frozen=True)
class Checkbox(Control):
    pass


@dataclass(frozen=True)
class Textbox(Control):
    lines: int = 1
    placeholder: str = ""


@dataclass(frozen=True)
class Dropdown(Control):
    choices: tuple = ()
    multiselect: bool = False
    allow_custom_value: bool = False
    type: str = "value"  # "index": the chosen position reaches run(), as Gradio's type="index"


@dataclass(frozen=True)
class Radio(Control):
    choices: tuple = ()
    type: str = "value"  # "index": the chosen position reaches run(), as Gradio's type="index"


@dataclass(frozen=True)
class CheckboxGroup(Control):
    choices: tuple = ()


@dataclass(frozen=True)
class File(Control):
    file_types: tuple = ()


class _AlwaysVisible:
    """What ``show`` returns for an always-on script: its controls always show, and its hooks run
    in every job of the tab (A1111's ``scripts.AlwaysVisible``)."""

    def __repr__(self) -> str:
        return "AlwaysVisible"


ALWAYS_VISIBLE = _AlwaysVisible()


class Script:
    """Subclass and override; the defaults mirror A1111's. A selectable script (``show`` True)
    implements ``run``; an always-on one (``show`` returns ``ALWAYS_VISIBLE``) implements hooks
    called around every job with its own control values: ``before_process``, ``process``
    (before sampling) and ``postprocess`` (after, with the ``Processed``)."""

    # A1111's scripts get one instance per tab; None here means "one instance serves both".
    tab_is_img2img: bool | None = None
    filename: str | None = None  # the file it came from (extensions' scripts)
    # Its slice of ``p.script_args`` in the job running now (A1111's layout, set per job).
    args_from: int | None = None
    args_to: int | None = None

    def title(self) -> str:
        raise NotImplementedError

    def show(self, is_img2img: bool) -> bool | _AlwaysVisible:
        return True

    def ui(self, is_img2img: bool) -> list:
        return []

    def run(self, p: Processing, *args) -> Processed | None:
        return None

    def before_process(self, p: Processing, *args) -> None:
        pass

    def process(self, p: Processing, *args) -> None:
        pass

    def postprocess(self, p: Processing, processed: Processed, *args) -> None:
        pass


@dataclass
class ScriptRegistry:
    """The selectable scripts, in dropdown order; ``select`` resolves a title (case-insensitive, as
    the API's ``script_name``)."""

    scripts: list[Script] = field(default_factory=list)
    # Told of each page component once it exists (the extension host: A1111's after_component).
    component_listeners: list = field(default_factory=list)

    def announce(self, component: Any, **kwargs: Any) -> None:
        for listener in self.component_listeners:
            listener(component, **kwargs)

    def selectable(self, is_img2img: bool) -> list[Script]:
        """The Script dropdown's scripts for a tab."""
        return [script for script in self._of_tab(is_img2img) if script.show(is_img2img) is True]

    def always_on(self, is_img2img: bool) -> list[Script]:
        return [script for script in self._of_tab(is_img2img) if script.show(is_img2img) is ALWAYS_VISIBLE]

    def _of_tab(self, is_img2img: bool) -> list[Script]:
        return [script for script in self.scripts if script.tab_is_img2img in (None, is_img2img)]

    def titles(self, is_img2img: bool) -> list[str]:
        return [script.title() for script in self.selectable(is_img2img)]

    def select(self, title: str, is_img2img: bool) -> Script:
        for script in self.selectable(is_img2img):
            if script.title().lower() == title.strip().lower():
                return script
        raise InvalidRequest("script_name", f"script {title!r} does not exist; available: "
                                            f"{', '.join(self.titles(is_img2img)) or 'none'}")
