"""A1111 facade: ``modules.ui_components`` — the small Gradio wrappers extensions build with. They are
built on the Gradio compat classes extension code gets (``_js=``, ``.update`` …) and show in the page
as the Gradio component they extend (``get_block_name``)."""

from __future__ import annotations

import inspect

from modules.gradio_compat import gradio as gr


def _page_props_from_base(cls: type) -> type:
    """Gradio builds a component's page props (``elem_id``, ``value`` …) from the parameters its
    ``__init__`` lists: a wrapper taking ``**kwargs`` lists the ones of the class it extends."""
    cls.__init__.__signature__ = inspect.signature(cls.__mro__[1].__init__)
    return cls


@_page_props_from_base
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


@_page_props_from_base
class DropdownMulti(gr.Dropdown):
    _hanga_quiet = True

    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)


@_page_props_from_base
class DropdownEditable(gr.Dropdown):
    _hanga_quiet = True

    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)


class ResizeHandleRow(gr.Row):
    _hanga_quiet = True


@_page_props_from_base
class InputAccordion(gr.Checkbox):
    """A1111's accordion whose value is an "enabled" checkbox: ``with InputAccordion(False,
    label="My feature") as enabled:`` builds an accordion (``elem_id``, class ``input-accordion``,
    open when the value is True) holding the checkbox (``<elem_id>-checkbox``) first, then the
    block's controls; ``enabled`` is the checkbox, an input of events and scripts like any other.
    ``extra()`` is a column for small controls beside the checkbox. The page's
    ``inputAccordionChecked(id, checked)`` sets it from JS."""

    _hanga_quiet = True

    def __init__(self, value: bool = False, **kwargs):
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{id(self):x}"
        label = kwargs.get("label") or "Accordion"
        checkbox = {key: item for key, item in kwargs.items() if key not in ("elem_id", "label", "open", "elem_classes")}
        super().__init__(value, label=f"Enable {label}" if not label.lower().startswith("enable") else label,
                         elem_id=f"{self.accordion_id}-checkbox", render=False, **checkbox)
        classes = kwargs.get("elem_classes") or []
        self.accordion = gr.Accordion(label=label, open=bool(value), elem_id=self.accordion_id,
                                      elem_classes=["input-accordion", *([classes] if isinstance(classes, str) else classes)],
                                      visible=kwargs.get("visible", True))
        with self.accordion:
            with gr.Row(elem_classes=["input-accordion-head"]):
                self.render()
                self._extra = gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes=["input-accordion-extra"],
                                        min_width=0)

    def extra(self):
        """Controls built under ``with accordion.extra():`` go beside the checkbox."""
        return self._extra

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc):
        return self.accordion.__exit__(*exc)
