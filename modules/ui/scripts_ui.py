"""The Script dropdown of a generation tab: "None" and the registry's scripts for that tab, each
with its controls in a group shown while it is chosen. The chosen script's control values reach
the service as ``script=(title, [values in order])``, as A1111's ``script_args``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import logging

import gradio as gr

from modules.service.scripts import api
from modules.ui.extension_components import announce_new

log = logging.getLogger("hanga")

NONE = "None"


def component_for(spec) -> gr.components.Component:
    """The Gradio component for a plain control spec; an extension's Gradio component as it is. A
    bare ``Control`` is a note (A1111's ``gr.HTML``), whose text is passed on like any value."""
    if isinstance(spec, gr.components.Component):
        if not spec.is_rendered:
            spec.render()
        return spec
    if not isinstance(spec, api.Control):
        raise TypeError(f"a script control must be a control spec or a Gradio component; got {spec!r}")
    value = list(spec.value) if isinstance(spec.value, tuple) else spec.value  # Gradio takes lists of choices
    common = {"label": spec.label, "value": value, "elem_id": spec.elem_id, "visible": spec.visible}
    if isinstance(spec, api.Slider):
        precision = 0 if float(spec.step).is_integer() else None
        return gr.Slider(spec.minimum, spec.maximum, step=spec.step, precision=precision, **common)
    if isinstance(spec, api.Number):
        return gr.Number(precision=spec.precision, **common)
    if isinstance(spec, api.Checkbox):
        return gr.Checkbox(**common)
    if isinstance(spec, api.Textbox):
        return gr.Textbox(lines=spec.lines, placeholder=spec.placeholder or None, **common)
    if isinstance(spec, api.Dropdown):
        return gr.Dropdown(list(spec.choices), multiselect=spec.multiselect, allow_custom_value=spec.allow_custom_value,
                           type=spec.type, **common)
    if isinstance(spec, api.Radio):
        return gr.Radio(list(spec.choices), type=spec.type, **common)
    if isinstance(spec, api.CheckboxGroup):
        return gr.CheckboxGroup(list(spec.choices), **common)
    if isinstance(spec, api.File):
        return gr.File(file_types=list(spec.file_types) or None, type="binary", **common)
    if type(spec) is api.Control:
        return gr.HTML(spec.value or "", label=spec.label or None, elem_id=spec.elem_id, visible=spec.visible)
    raise TypeError(f"a script control must be a control spec or a Gradio component; got {spec!r} "
                    f"({type(spec).__name__} is not rendered yet)")


@dataclass
class ScriptControls:
    dropdown: gr.Dropdown
    titles: list[str]
    groups: list[gr.Group]
    controls: list[list[gr.components.Component]]  # per title, in the script's order
    always_titles: list[str] = field(default_factory=list)  # the always-on scripts
    always_controls: list[list[gr.components.Component]] = field(default_factory=list)

    def inputs(self) -> list:
        """The dropdown, every selectable script's controls, then the always-on scripts' controls:
        the handler's trailing inputs."""
        return [self.dropdown, *(c for group in self.controls for c in group),
                *(c for group in self.always_controls for c in group)]

    def alwayson_arg(self, values: Sequence) -> dict[str, list]:
        """Each always-on script's control values (from the values of ``inputs()``), by title."""
        start = 1 + sum(len(group) for group in self.controls)
        chosen = {}
        for title, group in zip(self.always_titles, self.always_controls):
            chosen[title] = list(values[start:start + len(group)])
            start += len(group)
        return chosen

    def script_arg(self, values: Sequence) -> tuple[str, list] | None:
        """``(title, args)`` for the service from the values of ``inputs()``; None for "None"."""
        title, *rest = values
        if not title or title == NONE or title not in self.titles:
            return None
        index = self.titles.index(title)
        start = sum(len(group) for group in self.controls[:index])
        return title, list(rest[start:start + len(self.controls[index])])


def build(registry: api.ScriptRegistry, is_img2img: bool) -> ScriptControls:
    """Inside ``<tab>_script_container``: the always-on scripts' sections, then the Script dropdown
    with each selectable script's controls (A1111's layout)."""
    tab = "img2img" if is_img2img else "txt2img"
    announce_new(registry)  # extensions' after_component sees the tab's components before their ui()
    with gr.Column(elem_id=f"{tab}_script_container"):
        always = registry.always_on(is_img2img)
        always_controls = []
        for script in list(always):
            with gr.Group(elem_id=f"{tab}_script_{_slug(script.title())}"):
                controls = _controls(script, is_img2img)
            if controls is None:
                always.remove(script)
            else:
                always_controls.append(controls)
        dropdown = gr.Dropdown([NONE], value=NONE, label="Script", elem_id="script_list")
        titles, groups, controls = [], [], []
        for script in registry.selectable(is_img2img):
            with gr.Group(visible=False) as group:
                made = _controls(script, is_img2img)
            if made is not None:
                titles.append(script.title())
                groups.append(group)
                controls.append(made)
        dropdown.choices = [(title, title) for title in [NONE, *titles]]

    def choose(title: str):
        return [gr.Group(visible=title == name) for name in titles]

    if groups:
        dropdown.change(choose, dropdown, groups, queue=False, show_progress="hidden")
    return ScriptControls(dropdown, titles, groups, controls, [script.title() for script in always], always_controls)


def _controls(script: api.Script, is_img2img: bool) -> list | None:
    """A script's controls; None when its ``ui()`` fails (an extension's bug is logged and that
    script left out of the tab, the page still comes up)."""
    try:
        return [component_for(spec) for spec in script.ui(is_img2img) or []]
    except Exception:  # noqa: BLE001
        log.exception("Script %r left out of the %s tab: its ui() failed", script.title(),
                      "img2img" if is_img2img else "txt2img")
        return None


def _slug(title: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in title.lower()).strip("_")
