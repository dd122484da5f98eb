"""Importing extension code as A1111 does, plus one hook of Hanga's own.

A1111's rules: a script file runs as a module named after its file, with its extension folder first
on ``sys.path`` while it runs, so ``from scripts.sub import x`` (``scripts`` is a namespace package
made of every extension's ``scripts/`` folder) and root packages of the folder resolve. ``extensions``
is a namespace package over the user's extensions folder (``extensions.<folder>.scripts.x``).

Hanga's hook: every module whose file lies in an extension folder, however it is imported, is
handed to ``prepare`` before its code runs (the entry point passes the Gradio compat layer's
``prepare_module``, which gives extension code its own ``gradio``; this layer knows nothing of
Gradio). Modules elsewhere load exactly as without the hook."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

Prepare = Callable[[ModuleType], None]


class _PreparingLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, prepare: Prepare | None):
        super().__init__(fullname, path)
        self._prepare = prepare

    def exec_module(self, module: ModuleType) -> None:
        if self._prepare is not None:
            self._prepare(module)
        super().exec_module(module)


class ExtensionFinder(importlib.abc.MetaPathFinder):
    """On ``sys.meta_path`` just before the path finder: finds what it would, and hands modules
    from extension folders a loader that calls ``prepare`` first."""

    def __init__(self) -> None:
        self.roots: tuple[str, ...] = ()
        self.user_dir: Path | None = None
        self.prepare: Prepare | None = None

    def find_spec(self, fullname, path=None, target=None):
        if not self.roots:
            return None
        if fullname == "extensions" and self.user_dir is not None:
            spec = importlib.machinery.ModuleSpec("extensions", None, is_package=True)
            spec.submodule_search_locations = [str(self.user_dir)]
            return spec
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader or not self.owns(spec.origin):
            return None  # the normal finders take it from here
        spec.loader = _PreparingLoader(fullname, spec.origin, self.prepare)
        return spec

    def owns(self, filename: str | None) -> bool:
        if not filename:
            return False
        normalized = os.path.normcase(os.path.abspath(filename))
        return any(normalized.startswith(root) for root in self.roots)


FINDER = ExtensionFinder()


def watch(folders: list[Path], user_dir: Path | None, prepare: Prepare | None) -> None:
    """Route modules from ``folders`` through ``prepare`` (the latest call wins; one finder per process)."""
    FINDER.roots = tuple(os.path.normcase(os.path.abspath(folder)) + os.sep for folder in folders)
    if user_dir != FINDER.user_dir:  # ``extensions`` is a package over another folder now
        for name in [name for name in sys.modules if name == "extensions" or name.startswith("extensions.")]:
            del sys.modules[name]
    FINDER.user_dir, FINDER.prepare = user_dir, prepare
    if FINDER not in sys.meta_path:
        position = next((i for i, finder in enumerate(sys.meta_path) if finder is importlib.machinery.PathFinder),
                        len(sys.meta_path))
        sys.meta_path.insert(position, FINDER)


def load_file(name: str, path: Path, prepare: Prepare | None) -> ModuleType:
    """Run ``path`` as a module called ``name`` (A1111 names script modules after their file)."""
    loader = _PreparingLoader(name, str(path), prepare)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
