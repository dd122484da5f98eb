"""Settings: one component per setting of the schema, grouped by section; "Apply settings"
validates and saves the changed ones (the same ``Settings.set`` the API's /options uses)."""

from __future__ import annotations

import html
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

import gradio as gr

from modules.service.settings import Settings
from modules.service.settings_schema import InvalidSetting, Setting

log = logging.getLogger("hanga")

HIDDEN = {"sd_model_checkpoint", "sd_checkpoint_hash"}  # the bar shows them; the hash is set on load


def quick_keys(settings: Settings) -> list[str]:
    """The ``quicksettings_list`` keys shown in the bar above the tabs (the checkpoint has its own)."""
    return [key for key in settings.get("quicksettings_list") if key in settings.schema and key not in HIDDEN]


def as_stored(setting: Setting, value):
    """A component's value in the setting's type (sliders give floats for integer settings)."""
    if isinstance(setting.default, int) and not isinstance(setting.default, bool) and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


def component_for(setting: Setting, value) -> gr.components.Component:
    common = {"label": setting.label, "elem_id": f"setting_{setting.key}", "value": value}
    if setting.hint is not None and (setting.hint.component is not None or setting.hint.args):
        return _extension_component(setting, common)
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


def _extension_component(setting: Setting, common: dict) -> gr.components.Component:
    """The component an extension's ``OptionInfo`` names, with its ``component_args``; a component
    that cannot be made is reported and shown as a textbox (the page must come up)."""
    hint = setting.hint
    try:
        args = hint.component_args()
        if hint.component is None:  # by the default's type, as A1111 chooses
            default = setting.default
            kind = gr.Checkbox if isinstance(default, bool) else gr.Number if isinstance(default, (int, float)) \
                else gr.Textbox
            return kind(**{**args, **common})
        return hint.component(**{**args, **common})
    except Exception as error:  # noqa: BLE001 - an extension's component must not stop the page
        log.error("Setting %s: its component could not be made (%s); shown as a textbox", setting.key, error)
        return gr.Textbox(**{**common, "value": str(common["value"])})


def refresh_button(setting: Setting, component: gr.components.Component) -> None:
    """A1111's 🔄 beside a setting with ``refresh=``: runs it, then re-reads ``component_args``."""
    hint = setting.hint

    def refresh():
        hint.refresh()
        return gr.update(**hint.component_args())

    button = gr.Button("🔄", elem_id=f"refresh_{setting.key}", elem_classes=["tool", "refresh"], scale=0, min_width=40)
    button.click(refresh, None, component, queue=False, show_progress="hidden")


def defaults_html(settings: Settings) -> str:
    """The Defaults view: each setting whose value differs from its default."""
    rows = [f"<tr><td>{html.escape(s.label)}</td><td><code>{html.escape(s.key)}</code></td>"
            f"<td>{html.escape(repr(s.default))}</td><td>{html.escape(repr(settings.get(s.key)))}</td></tr>"
            for s in settings.schema.values() if settings.get(s.key) != s.default]
    if not rows:
        return "<p>Every setting has its default value.</p>"
    return ("<table id='settings_defaults_table'><tr><th>Setting</th><th>Key</th><th>Default</th><th>Now</th></tr>"
            + "".join(rows) + "</table>")


def build(settings: Settings, sysinfo: Callable[[], dict] | None = None,
          reload_ui: Callable[[], None] | None = None, lock_folders: bool = False) -> None:
    """``lock_folders`` (--hide-ui-dir-config): the folder settings are neither shown nor changed."""
    quick = set(quick_keys(settings))
    shown = [s for s in settings.schema.values()
             if s.key not in HIDDEN and s.key not in quick and not (lock_folders and s.folder)]
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload UI", elem_id="settings_restart_gradio", visible=reload_ui is not None)
        download = gr.DownloadButton("Download system info", elem_id="settings_sysinfo", visible=sysinfo is not None)
    result = gr.HTML(elem_id="settings_result")
    with gr.Accordion("Defaults: settings that differ from their default", open=False, elem_id="settings_defaults"):
        defaults = gr.HTML(defaults_html(settings), elem_id="settings_defaults_view")
    components, rendered = [], []
    with gr.Tabs(elem_id="settings_sections"):
        for section, title in settings.sections.items():  # Hanga's sections, then the extensions'
            members = [s for s in shown if s.section == section]
            if not members:
                continue
            with gr.Tab(title, elem_id=f"settings_{section}"):
                for setting in members:
                    if setting.hint is not None and setting.hint.refresh is not None:
                        with gr.Row(elem_id=f"setting_row_{setting.key}"):
                            components.append(component_for(setting, settings.get(setting.key)))
                            refresh_button(setting, components[-1])
                    else:
                        components.append(component_for(setting, settings.get(setting.key)))
                    rendered.append(setting)

    def save(*values):
        changed, errors = [], []
        for setting, value in zip(rendered, values):
            value = as_stored(setting, value)
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

    apply.click(save, components, result).then(lambda: defaults_html(settings), None, defaults, queue=False).then(
        None, None, None, js="() => { if (window.hangaRefreshOptions) hangaRefreshOptions(); }")  # the page's opts

    if sysinfo is not None:
        def write_sysinfo() -> str:
            folder = Path(tempfile.mkdtemp(prefix="hanga-sysinfo-"))
            path = folder / f"sysinfo-{time.strftime('%Y-%m-%d-%H-%M')}.json"
            path.write_text(json.dumps(sysinfo(), indent=2, default=str), encoding="utf-8")
            return str(path)

        download.click(write_sysinfo, None, download)
    if reload_ui is not None:
        def restart() -> str:
            reload_ui()
            return "Reloading… this page comes back in a few seconds."

        reload.click(restart, None, result).then(None, None, None, js="() => setTimeout(() => location.reload(), 8000)")
