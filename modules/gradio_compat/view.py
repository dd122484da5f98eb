"""The ``gradio`` that extension code imports: a module object over the real Gradio where component
and layout classes are their compat subclasses (``classes.py``), with the names Gradio 6 dropped
(``gr.Box``, ``gr.Variable``, ``gr.inputs``, ``gr.outputs``, ``gr.components.IOComponent``) and
``gr.on(_js=)``. Everything else is the real Gradio's."""

from __future__ import annotations

import types
from typing import Any

import gradio as gr

from modules.gradio_compat.classes import compat_class, listener_accepting_js, warn_once, wraps_class


class _View(types.ModuleType):
    """A module whose missing attributes come from ``real``, wrapped where they are classes."""

    def __init__(self, name: str, real: types.ModuleType, extra: dict[str, Any] | None = None):
        super().__init__(name, real.__doc__)
        self.__dict__["_real"] = real
        self.__dict__.update(extra or {})

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.__dict__["_real"], name)
        if wraps_class(value):
            value = compat_class(value)
        self.__dict__[name] = value
        return value

    def __dir__(self):
        return sorted(set(dir(self.__dict__["_real"])) | set(self.__dict__))


def _legacy_io(kind: str, names: tuple[str, ...]) -> types.SimpleNamespace:
    """``gr.inputs.Slider(default=…)`` and friends (Gradio 2/3): the component with ``value=``."""
    def make(name: str):
        target = compat_class(getattr(gr, name))

        def legacy(*args, **kwargs):
            if "default" in kwargs:
                kwargs.setdefault("value", kwargs.pop("default"))
            kwargs.pop("optional", None)
            warn_once(f"gr.{kind}.{name} is gone from Gradio 6; gr.{name} was used instead")
            return target(*args, **kwargs)

        legacy.__name__ = name
        return legacy

    return types.SimpleNamespace(**{name: make(name) for name in names})


_INPUTS = ("Textbox", "Number", "Slider", "Checkbox", "CheckboxGroup", "Radio", "Dropdown", "Image", "Video",
           "Audio", "File", "Dataframe")
_OUTPUTS = ("Textbox", "Image", "Video", "Audio", "File", "Dataframe", "HTML", "JSON", "Label", "Gallery")


def _on(*args, **kwargs):
    return listener_accepting_js("gr.on", gr.on)(*args, **kwargs)


def build() -> _View:
    components = _View("gradio.components", gr.components, {"IOComponent": gr.components.Component})
    return _View("gradio", gr, {
        "__path__": [],  # ``import gradio.x`` works on it like on a package
        "components": components,
        "Box": compat_class(gr.Group),
        "Variable": compat_class(gr.State),
        "inputs": _legacy_io("inputs", _INPUTS),
        "outputs": _legacy_io("outputs", _OUTPUTS),
        "on": _on,
    })


gradio = build()
SUBMODULES = {"gradio": gradio, "gradio.components": gradio.components, "gradio.inputs": gradio.inputs,
              "gradio.outputs": gradio.outputs}
