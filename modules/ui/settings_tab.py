"""Settings: one component per setting of the schema, grouped by section; "Apply settings"
validates and saves the changed ones (the same ``Settings.set`` the API's /options uses)."""

from __future__ import annotations

import html

import gradio as gr

from modules.service.settings import Settings
from modules.service.settings_schema import SECTIONS, InvalidSetting, Setting

HIDDEN = {"sd_model_checkpoint"}  # shown in the quicksettings bar instead


def _component(setting: Setting, value) -> gr.components.Component:
    common = {"label": setting.label, "elem_id": f"setting_{setting.key}", "value": value}
    if isinstance(setting.default, bool):
        return gr.Checkbox(**common)
    if setting.choices is not None:
        return gr.Dropdown(choices=list(setting.choices), **common)
    if isinstance(setting.default, list):
        return gr.Dropdown(choices=list(value), multiselect=True, allow_custom_value=True, **common)
    if isinstance(setting.default, (int, float)):
        integer = isinstance(setting.default, int)
        if setting.minimum is not None and setting.maximum is not None and setting.maximum - setting.minimum <= 1000:
            step = setting.step or (1 if integer else 0.01)
            return gr.Slider(setting.minimum, setting.maximum, step=step, precision=0 if integer else None, **common)
        return gr.Number(precision=0 if integer else None, minimum=setting.minimum, maximum=setting.maximum, **common)
    return gr.Textbox(**common)


def build(settings: Settings) -> None:
    shown = [s for s in settings.schema.values() if s.key not in HIDDEN]
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    result = gr.HTML(elem_id="settings_result")
    components = []
    with gr.Tabs(elem_id="settings_sections"):
        for section, title in SECTIONS.items():
            members = [s for s in shown if s.section == section]
            if not members:
                continue
            with gr.Tab(title, elem_id=f"settings_{section}"):
                for setting in members:
                    components.append(_component(setting, settings.get(setting.key)))

    def save(*values):
        changed, errors = [], []
        for setting, value in zip(shown, values):
            if isinstance(setting.default, int) and not isinstance(setting.default, bool) and isinstance(value, float) and value.is_integer():
                value = int(value)
            if value == settings.get(setting.key):
                continue
            try:
                settings.set(setting.key, value)
                changed.append(setting.label)
            except InvalidSetting as error:
                errors.append(str(error))
        parts = [f"{len(changed)} settings changed" + (f": {', '.join(changed)}." if changed else ".")]
        parts += [f"<span class='error'>{html.escape(e)}</span>" for e in errors]
        return "<br>".join(parts)

    apply.click(save, components, result)
