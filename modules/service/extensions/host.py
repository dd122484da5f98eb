"""Loading extensions: ``install.py`` in a subprocess, ``preload.py`` before flag parsing,
``scripts/*.py`` imported with the extension folder on ``sys.path``. A failing extension is
reported (console and Extensions tab) and everything else keeps working."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path
from types import ModuleType

from modules.core.paths import Paths
from modules.service.extensions import context, importer
from modules.service.extensions.callbacks import Callbacks
from modules.service.extensions.constraints import write_constraints
from modules.service.extensions.discovery import Extension, discover
from modules.service.scripts.api import Script

log = logging.getLogger("hanga")

INSTALL_TIMEOUT = 600


class OnComponent:
    """What an ``on_after_component(callback, elem_id=…)`` callback gets (A1111's name)."""

    def __init__(self, component):
        self.component = component


class ExtensionHost:
    """``prepare_module`` is called on every module from an extension folder before it runs (the
    entry point gives the Gradio compat layer's; see ``importer``)."""

    def __init__(self, paths: Paths, disabled: set[str] | None = None, disable_all: str = "none",
                 prepare_module: importer.Prepare | None = None):
        self.paths = paths
        self.callbacks = Callbacks()
        builtin, user = paths.extension_dirs[1], paths.extension_dirs[0]
        self.extensions: list[Extension] = discover(builtin, user, set(disabled or ()), disable_all)
        self.scripts: list[Script] = []
        self.script_classes: list[tuple[type, str, str, ModuleType]] = []  # A1111's scripts_data
        self.prepare_module = prepare_module
        importer.watch([extension.path for extension in self.extensions], user, prepare_module)

    @property
    def active(self) -> list[Extension]:
        return [extension for extension in self.extensions if extension.enabled]

    def find(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    # -- before the flags are parsed --------------------------------------------------------------
    def run_installers(self) -> None:
        """Each enabled user extension's ``install.py``, as A1111's launcher runs it (``import
        launch`` works: the install folder is on PYTHONPATH). A failure disables the extension."""
        wanted = [e for e in self.active if not e.is_builtin and (e.path / "install.py").is_file()]
        if wanted:
            constraints = self.constraints_file()
            for extension in wanted:
                self.run_installer(extension, constraints)

    def constraints_file(self) -> Path:
        """Hanga's pins for pip (``constraints``): every pip an installer runs honours them."""
        return write_constraints(self.paths.install / "requirements.txt", self.paths.tmp / "hanga-constraints.txt")

    def run_installer(self, extension: Extension, constraints: Path | None = None) -> bool:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.paths.install), os.environ.get("PYTHONPATH")])),
               "PIP_CONSTRAINT": str(constraints or self.constraints_file())}
        try:
            done = subprocess.run([sys.executable, str(extension.path / "install.py")], cwd=extension.path, env=env,
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            output, failed = (done.stdout + done.stderr).strip(), done.returncode != 0
        except (OSError, subprocess.TimeoutExpired) as error:
            output, failed = str(error), True
        if failed:
            extension.errors.append(f"install.py failed:\n{output[-4000:]}")
            extension.enabled = False
            log.error("Extension %s: install.py failed; the extension is off for this run.\n%s", extension.name, output[-4000:])
        elif output:
            log.info("Extension %s install.py: %s", extension.name, output[-1000:])
        return not failed

    def preload(self, parser: argparse.ArgumentParser) -> None:
        """``preload(parser)`` of each enabled extension's ``preload.py``: its own flags."""
        context.bind(callbacks=self.callbacks, host=self)
        for extension in self.active:
            path = extension.path / "preload.py"
            if path.is_file():
                module = self._import(extension, path, f"preload_{extension.name}")
                preload = getattr(module, "preload", None) if module else None
                if callable(preload):
                    self._guarded(extension, "preload.py", preload, parser)

    # -- after -----------------------------------------------------------------------------------------
    def load_scripts(self) -> list[Script]:
        """Import every active extension's ``scripts/*.py`` (sorted, then ordered by metadata.ini
        Before/After); each ``Script`` subclass gets one instance per tab."""
        context.bind(callbacks=self.callbacks, host=self, serving=False)
        for extension, path in self._script_files():
            module = self._import(extension, path, path.name)
            if module is None:
                continue
            for cls in _script_classes(module):
                self.script_classes.append((cls, str(path), str(extension.path), module))
                for is_img2img in (False, True):
                    script = self._instance(extension, cls, path, is_img2img)
                    if script is not None:
                        self.scripts.append(script)
                        if script.title() not in extension.scripts:
                            extension.scripts.append(script.title())
        return self.scripts

    def after_component(self, component, **kwargs) -> None:
        """A1111's ``after_component``: each extension script's hook and its
        ``on_after_component(callback, elem_id=…)`` registrations, then the ``on_after_component``
        callbacks; errors are reported per extension."""
        elem_id = kwargs.get("elem_id")
        for script in self.scripts:
            extension = self._owner(script)
            for wanted, callback in getattr(script, "on_after_component_elem_id", None) or ():
                if wanted == elem_id:
                    self._guarded(extension, f"{script.title()}: on_after_component", callback, OnComponent(component))
            hook = getattr(script, "after_component", None)
            if hook is not None:
                self._guarded(extension, f"{script.title()}: after_component", lambda: hook(component, **kwargs))
        self.callbacks.call("after_component", component, **kwargs)

    def _owner(self, script: Script) -> Extension:
        folder = Path(getattr(script, "filename", "") or ".").parent.parent
        return next((e for e in self.extensions if e.path == folder), self.extensions[0])

    def _script_files(self) -> list[tuple[Extension, Path]]:
        files = [(e, path) for e in self.active if (e.path / "scripts").is_dir()
                 for path in sorted((e.path / "scripts").glob("*.py"))]
        return _ordered(files)

    def _instance(self, extension: Extension, cls: type, path: Path, is_img2img: bool) -> Script | None:
        try:
            script = cls()
            script.filename = str(path)
            script.tab_is_img2img = is_img2img
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            if not script.show(is_img2img):
                return None
            script.title()
            return script
        except Exception:  # noqa: BLE001 - a broken script is reported, the rest load
            self._report(extension, f"{path.name}: {cls.__name__}", traceback.format_exc())
            return None

    def _import(self, extension: Extension, path: Path, name: str) -> ModuleType | None:
        """Run one file as a module with the extension folder first on ``sys.path``."""
        saved_path = list(sys.path)
        context.bind(current_extension=extension.name, current_basedir=extension.path)
        sys.path.insert(0, str(extension.path))
        try:
            return importer.load_file(name, path, self.prepare_module)
        except BaseException as error:  # noqa: BLE001 - SystemExit too: an extension must not end start-up
            if isinstance(error, KeyboardInterrupt):
                raise
            self._report(extension, path.relative_to(extension.path).as_posix(), traceback.format_exc())
            return None
        finally:
            sys.path[:] = saved_path
            context.bind(current_extension="", current_basedir=None)

    def _guarded(self, extension: Extension, what: str, function, *args) -> None:
        try:
            function(*args)
        except Exception:  # noqa: BLE001
            self._report(extension, what, traceback.format_exc())

    def _report(self, extension: Extension, what: str, trace: str) -> None:
        extension.errors.append(f"{what}:\n{trace}")
        log.error("Extension %s: error in %s\n%s", extension.name, what, trace)


def _script_classes(module: ModuleType) -> list[type]:
    """``Script`` subclasses an extension defines (or re-exports), not Hanga's own classes."""
    return [value for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, Script) and not value.__module__.startswith("modules.")
            and value.__module__ != "modules"]


def _ordered(files: list[tuple[Extension, Path]]) -> list[tuple[Extension, Path]]:
    """Stable topological order: a script listed as ``Before``/``After`` another extension (or
    script file) in its ``[scripts/x.py]`` section of metadata.ini moves accordingly."""
    def keys(extension: Extension, path: Path) -> set[str]:
        return {extension.canonical_name, f"{extension.canonical_name}/{path.stem.lower()}", path.stem.lower()}

    after: dict[int, set[int]] = {i: set() for i in range(len(files))}
    for i, (extension, path) in enumerate(files):
        order = extension.script_order.get(f"scripts/{path.name}", {})
        for j, (other, other_path) in enumerate(files):
            if i == j or other is extension and not order:
                continue
            if keys(other, other_path) & set(order.get("After", ()) + order.get("Requires", ())):
                after[i].add(j)
            if keys(other, other_path) & set(order.get("Before", ())):
                after[j].add(i)
    done: list[int] = []
    pending = list(range(len(files)))
    while pending:
        ready = next((i for i in pending if after[i] <= set(done)), pending[0])  # a cycle keeps file order
        pending.remove(ready)
        done.append(ready)
    return [files[i] for i in done]
