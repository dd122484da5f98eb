"""A1111 facade: ``modules.ui_components`` — the small Gradio wrappers extensions build with."""

from __future__ import annotations

import gradio as gr


class ToolButton(gr.Button):
    """A small square button (🔄, 📋 …)."""

    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)


class FormRow(gr.Row):
    pass


class FormColumn(gr.Column):
    pass


class FormGroup(gr.Group):
    pass


class FormHTML(gr.HTML):
    pass


class DropdownMulti(gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)


class DropdownEditable(gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)


class ResizeHandleRow(gr.Row):
    pass
