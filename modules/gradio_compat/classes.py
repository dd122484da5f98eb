"""Gradio 3/4-era calls on Gradio 6 classes, for extension code only (Forge's shim, without patching
Gradio): each component or layout class an extension names is a subclass of the real one that

* renames ``source=x`` to ``sources=[x]`` and drops ``tooltip=`` and keywords Gradio 6 no longer has
  (``tool=``, ``brush_radius=``, ``show_share_button=`` …), logging each once;
* renders ``visible=False`` as ``visible="hidden"`` (in the DOM, hidden), as Gradio 3 did: A1111 code
  reads hidden inputs from the page;
* accepts ``_js=`` on its event listeners and on the ``.then/.success/.failure`` they return;
* has ``.update(**kw)`` (``gr.update``) and a no-op ``.style()``;
* is named like the real class in the page (``get_block_name``), and ``isinstance(x, gr.Textbox)``
  holds for Hanga's own (real) textboxes.

Real Gradio classes are never changed; Hanga's own UI never sees these subclasses."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from typing import Any, Callable

import gradio as gr
from gradio.blocks import Block
from gradio.component_meta import ComponentMeta, updateable
from gradio.events import Dependency, EventListener

log = logging.getLogger("hanga")

_WARNED: set[str] = set()
_META: dict[type, type] = {}
_CLASSES: dict[type, type] = {}
LEGACY_EVENT_KEYWORDS = {"_js": "js"}


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("Extension code: %s", message)


@functools.lru_cache(maxsize=None)
def _accepted(function: Callable) -> tuple[frozenset[str], bool]:
    """The keyword names ``function`` takes, and whether it takes any (``**kwargs``)."""
    parameters = inspect.signature(function).parameters.values()
    return (frozenset(p.name for p in parameters if p.kind is not p.VAR_KEYWORD),
            any(p.kind is p.VAR_KEYWORD for p in parameters))


def _drop_unknown(owner: str, function: Callable, kwargs: dict) -> dict:
    names, open_ended = _accepted(function)
    if open_ended:
        return kwargs
    for key in [key for key in kwargs if key not in names]:
        warn_once(f"{owner}({key}=…) is not known to Gradio 6 and was ignored")
        del kwargs[key]
    return kwargs


def component_kwargs(real: type, kwargs: dict) -> dict:
    """A Gradio 3/4 constructor's keywords as Gradio 6 takes them."""
    kwargs = dict(kwargs)
    names, _ = _accepted(real.__init__)
    if "source" in kwargs and "source" not in names and "sources" in names:
        source = kwargs.pop("source")
        if source == "canvas":  # Gradio 3's sketch source: gr.ImageEditor/gr.Sketchpad now; a plain upload here
            warn_once(f"{real.__name__}(source='canvas') is gr.ImageEditor in Gradio 6; an upload box was made")
        else:
            kwargs["sources"] = [source] if isinstance(source, str) else source
    if "tooltip" in kwargs and "tooltip" not in names:
        kwargs.pop("tooltip")  # A1111 strips it before Gradio sees it
    if kwargs.get("visible") is False and "hidden" in str(inspect.signature(real.__init__).parameters.get("visible", "")):
        kwargs["visible"] = "hidden"
    return _drop_unknown(real.__name__, real.__init__, kwargs)


def event_kwargs(owner: str, listener: Callable, kwargs: dict) -> dict:
    """An event listener's keywords: ``_js`` is ``js``; keywords Gradio 6 dropped are ignored."""
    kwargs = dict(kwargs)
    for old, new in LEGACY_EVENT_KEYWORDS.items():
        if old in kwargs:
            value = kwargs.pop(old)
            kwargs.setdefault(new, value)
    return _drop_unknown(owner, listener, kwargs)


def dependency(result: Any) -> Any:
    """An event's ``Dependency`` whose ``.then/.success/.failure`` accept ``_js=`` too."""
    if isinstance(result, Dependency):
        for name in ("then", "success", "failure"):
            chained = getattr(result, name, None)
            if chained is not None and not getattr(chained, "_hanga_compat", False):
                setattr(result, name, listener_accepting_js(f"Dependency.{name}", chained))
    return result


def listener_accepting_js(owner: str, listener: Callable) -> Callable:
    target = listener.func if isinstance(listener, functools.partial) else listener

    def compat_listener(*args, **kwargs):
        return dependency(listener(*args, **event_kwargs(owner, target, kwargs)))

    compat_listener._hanga_compat = True
    return compat_listener


def _real_name(self: Block) -> str:
    real = type(self)._hanga_real
    if real.get_block_name is not Block.get_block_name:
        return real.get_block_name(self)
    return real.__base__.__name__.lower() if hasattr(real, "is_template") else real.__name__.lower()


def _extension_init(init: Callable, base_init: Callable) -> Callable:
    """An extension's ``__init__(self, *args, **kwargs)`` (A1111's ToolButton): Gradio's constructor
    bookkeeping drops positional arguments it has no names for, and builds the page props from the
    parameters ``__init__`` lists, so both come from the component it extends."""
    wrapped = updateable(init)
    parameters = inspect.signature(init).parameters.values()
    if not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return wrapped
    own = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    names = own if not any(p.kind is p.VAR_POSITIONAL for p in parameters) else \
        [p.name for p in inspect.signature(base_init).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):  # noqa: N807
        kwargs.update(zip(names, args))
        return wrapped(self, **kwargs)

    __init__.__signature__ = inspect.signature(base_init)
    return __init__


def _component_attrs(name: str, bases: tuple, attrs: dict) -> dict:
    """What Gradio's ComponentMeta does to a new component class, except writing a ``.pyi`` file
    beside its source: that fails for an extension script (A1111 does not list script modules in
    ``sys.modules``, so Gradio cannot find the source) and would litter extension folders."""
    attrs = dict(attrs)
    if "__init__" in attrs:
        attrs["__init__"] = _extension_init(attrs["__init__"], bases[0].__init__)
    if "EVENTS" in attrs:
        triggers = []
        for event in attrs["EVENTS"]:
            trigger = (event if isinstance(event, EventListener) else EventListener(event_name=event)).copy()
            trigger.set_doc(component=name)
            attrs[trigger.event_name] = trigger.listener
            triggers.append(trigger)
        attrs["EVENTS"] = triggers
    return attrs


@classmethod
def _component_class_id(cls) -> str:
    """Gradio's id of a component class, also for a class from an extension script (whose module
    is not in ``sys.modules``, where Gradio's own lookup raises)."""
    try:
        return Block.get_component_class_id.__func__(cls)
    except TypeError:
        return hashlib.sha256(f"{cls.__name__}_{cls.__module__}".encode()).hexdigest()


def _meta_for(real_meta: type) -> type:
    """A metaclass like the real one, minus its class-creation side effects (Gradio's
    ComponentMeta writes ``.pyi`` files next to a subclass's source)."""
    if real_meta not in _META:
        plain = next(m for m in real_meta.__mro__ if not m.__module__.startswith("gradio"))

        def __new__(mcls, name, bases, attrs):  # noqa: N807
            if attrs.get("_hanga_generated") or attrs.get("_hanga_quiet"):  # ours: no event rewiring
                return plain.__new__(mcls, name, bases, attrs)
            if issubclass(real_meta, ComponentMeta):  # an extension's own subclass (ToolButton, InputAccordion)
                return plain.__new__(mcls, name, bases, _component_attrs(name, bases, attrs))
            return real_meta.__new__(mcls, name, bases, attrs)

        def __instancecheck__(cls, instance):  # noqa: N807
            if cls.__dict__.get("_hanga_generated"):
                return isinstance(instance, cls._hanga_real)
            return real_meta.__instancecheck__(cls, instance)

        _META[real_meta] = type(f"Compat{real_meta.__name__}", (real_meta,),
                                {"__new__": __new__, "__instancecheck__": __instancecheck__})
    return _META[real_meta]


def compat_class(real: type) -> type:
    """The extension-facing subclass of a Gradio component or layout class."""
    if real in _CLASSES:
        return _CLASSES[real]

    def __init__(self, *args, **kwargs):  # noqa: N807
        real.__init__(self, *args, **component_kwargs(real, kwargs))

    __init__.__signature__ = inspect.signature(real.__init__)  # Gradio's get_config reads the page props from it

    def style(self, *args, **kwargs):
        return self

    def update(*args, **kwargs):
        if args and isinstance(args[0], Block):  # called on an instance
            args = args[1:]
        if args:
            kwargs.setdefault("value", args[0])
        return gr.update(**kwargs)

    attrs: dict[str, Any] = {
        "__module__": __name__, "__qualname__": real.__name__, "__doc__": real.__doc__,
        "_hanga_generated": True, "_hanga_real": real, "__init__": __init__, "style": style,
        "update": update, "get_block_name": _real_name, "get_block_class": _real_name,
        "get_component_class_id": _component_class_id,
    }
    for event in getattr(real, "EVENTS", ()):
        name = event if isinstance(event, str) else event.event_name
        attrs[name] = _event_method(real, name)
    if issubclass(real, gr.Blocks):
        for name in ("load", "unload"):
            attrs[name] = _event_method(real, name)
    _CLASSES[real] = _meta_for(type(real))(real.__name__, (real,), attrs)
    return _CLASSES[real]


def _event_method(real: type, name: str) -> Callable:
    original = getattr(real, name)

    @functools.wraps(original)  # keeps event_name / has_trigger: ``gr.on([button.click], …)`` reads them
    def method(self, *args, **kwargs):
        return dependency(original(self, *args, **event_kwargs(f"{real.__name__}.{name}", original, kwargs)))

    return method


def wraps_class(value: Any) -> bool:
    """Whether ``gr.<name>`` should be given to extensions as a compat subclass."""
    return (isinstance(value, type) and issubclass(value, Block) and type(value) is not type
            and value is not gr.components.Component and not issubclass(value, (gr.Interface, gr.ChatInterface,
                                                                                  gr.TabbedInterface))
            and type(value).__name__ in ("ComponentMeta", "BlocksMeta"))
