"""``ui-config.json`` (A1111's format): component defaults and limits keyed
``"<tab>/<label>/<field>"`` (field: value, visible, minimum, maximum, step), e.g.
``"txt2img/Sampling steps/value": 20``. Read when the page is built; values that do not fit the
component (an unknown choice, a value outside the slider) are ignored with a warning; keys the
file lacks are added with the built defaults, so users find every knob there."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from modules.core.atomic import keep_aside, write_json

log = logging.getLogger("hanga")
FIELDS = ("value", "visible", "minimum", "maximum", "step")


def _components(block) -> Iterator[gr.components.Component]:
    for child in getattr(block, "children", []) or []:
        if isinstance(child, gr.components.Component):
            yield child
        yield from _components(child)


def _fields(component) -> list[str]:
    if isinstance(component, (gr.Slider, gr.Number)):
        return [f for f in FIELDS if f != "step" or isinstance(component, gr.Slider)]
    if isinstance(component, (gr.Checkbox, gr.Textbox, gr.Dropdown, gr.Radio, gr.CheckboxGroup)):
        return ["value", "visible"]
    return []


def _fits(component, field: str, value: Any) -> bool:
    if field == "visible":
        return isinstance(value, bool)
    if isinstance(component, (gr.Slider, gr.Number)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        if field == "value" and isinstance(component, gr.Slider):
            return component.minimum <= value <= component.maximum
        return True
    if isinstance(component, gr.Checkbox):
        return isinstance(value, bool)
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        choices = [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in component.choices or []]
        wanted = value if isinstance(value, list) else [value]
        return all(item in choices for item in wanted) or bool(getattr(component, "allow_custom_value", False))
    if isinstance(component, gr.CheckboxGroup):
        return isinstance(value, list)
    return isinstance(value, str)


def read(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        return stored
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        aside = keep_aside(path)
        log.error("%s could not be read (%s); it was kept as %s and the built defaults are used", path, error, aside.name)
        return {}


def apply(path: Path, tabs: dict[str, Any]) -> dict[str, Any]:
    """Apply ``path`` to the components under each tab block; write back the completed file."""
    stored = read(path)
    complete = dict(stored)
    for tab, block in tabs.items():
        seen: set[str] = set()
        for component in _components(block):
            label = getattr(component, "label", None)
            if not label or label in seen:
                continue
            seen.add(label)
            for field in _fields(component):
                key = f"{tab}/{label}/{field}"
                if key in stored:
                    if _fits(component, field, stored[key]):
                        setattr(component, field, stored[key])
                    else:
                        log.warning("ui-config.json: ignoring %s = %r (does not fit the component)", key, stored[key])
                complete.setdefault(key, getattr(component, field, None))
    if complete != stored:
        write_json(path, complete)
    return complete
