"""The Gradio 3/4 → 6 shim for extension code (spec: extension-compat §6.3, §6.4).

How it reaches extension code without patching Gradio: the extension host executes every module
that lives in an extension folder (its ``scripts/*.py``, ``preload.py`` and whatever they import
from the folder: ``scripts.sub``, root packages, ``extensions.<name>…``) with its own
``__builtins__``, whose ``__import__`` answers ``gradio`` (and ``gradio.components``,
``gradio.inputs``, ``gradio.outputs``) with the compat view in ``view.py``. Functions defined there
keep those builtins, so imports inside them resolve the same way. ``sys.modules["gradio"]`` stays
the real Gradio: Hanga's UI, other libraries and ``importlib.import_module("gradio")`` never see the
shim. ``prepare_module`` is what the host calls on each such module before running it."""

from __future__ import annotations

import builtins
from types import ModuleType

from modules.gradio_compat.view import SUBMODULES, gradio

__all__ = ["gradio", "prepare_module", "compat_import"]

_real_import = builtins.__import__


def compat_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - __import__'s signature
    if level == 0 and (name == "gradio" or name.startswith("gradio.")):
        if name not in ("gradio.inputs", "gradio.outputs"):  # gone from Gradio 6: only ours exist
            module = _real_import(name, globals, locals, fromlist, level)
            if fromlist and name not in SUBMODULES:
                return module
        return SUBMODULES[name] if fromlist else gradio  # ``import gradio.x`` binds the top-level name
    return _real_import(name, globals, locals, fromlist, level)


BUILTINS = {**builtins.__dict__, "__import__": compat_import}


def prepare_module(module: ModuleType) -> None:
    """Give a module from an extension folder the compat ``gradio`` (before its code runs)."""
    module.__dict__["__builtins__"] = BUILTINS
