"""A1111 facade: ``modules.ui_components`` — the small Gradio wrappers extensions build with. They are
built on the Gradio compat classes extension code gets (``_js=``, ``.update`` …) and show in the page
as the Gradio component they extend (``get_block_name``)."""

from __future__ import annotations

from modules.gradio_compat import gradio as gr


class ToolButton(gr.Button):
    """A small square button (🔄, 📋 …)."""

    _hanga_quiet = True

    def __init__(self, value: str = "", *args, **kwargs):
        classes = kwargs.pop("elem_classes", None) or []
        super().__init__(value, *args, elem_classes=["tool", *([classes] if isinstance(classes, str) else classes)],
                         **kwargs)


class FormRow(gr.Row):
    _hanga_quiet = True


class FormColumn(gr.Column):
    _hanga_quiet = True


class FormGroup(gr.Group):
    _hanga_quiet = True


class FormHTML(gr.HTML):
    _hanga_quiet = True


class DropdownMulti(gr.Dropdown):
    _hanga_quiet = True

    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)


class DropdownEditable(gr.Dropdown):
    _hanga_quiet = True

    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)


class ResizeHandleRow(gr.Row):
    _hanga_quiet = True
