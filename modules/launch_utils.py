"""A1111 facade: ``modules.launch_utils`` (and the top-level ``launch`` module, which re-exports it):
what extensions' ``install.py`` files and scripts call to install their requirements.

Importing it has no side effects. pip runs without a shell, and ``install``/``download``/``wheel``
run under the constraints file that holds Hanga's pins (``PIP_CONSTRAINT``, which the extension host
sets for installers; else one written from ``requirements.txt`` now), so an extension cannot
downgrade what Hanga needs. Once the server answers requests, ``run_pip`` is refused when it is
reachable from other machines without ``--enable-insecure-extension-access`` (extension routes have
passed request data to it)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from modules.core.paths import INSTALL_DIR
from modules.service.extensions import context

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
script_path = str(INSTALL_DIR)
PIP_SUBCOMMANDS_WITH_CONSTRAINTS = ("install", "download", "wheel")


def __getattr__(name: str) -> Any:  # PEP 562: the running server's flags, else the installer's
    if name == "args":
        flags = context.current().flags
        return flags if flags is not None else SimpleNamespace(skip_install=os.environ.get("HANGA_SKIP_INSTALL") == "1")
    raise AttributeError(f"module 'modules.launch_utils' has no attribute {name!r}")


def is_installed(package: str) -> bool:
    """By distribution name or import name."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def constraints_file() -> str:
    """The constraints file pip runs under: the host's (``PIP_CONSTRAINT``), else one written now."""
    given = os.environ.get("PIP_CONSTRAINT", "").strip()
    if given:
        return given
    from modules.service.extensions.constraints import write_constraints

    paths = context.current().paths
    folder = paths.tmp if paths is not None else Path(tempfile.gettempdir())
    return str(write_constraints(INSTALL_DIR / "requirements.txt", folder / "hanga-constraints.txt"))


def pip_command(command: str) -> list[str]:
    """``python -m pip <command>`` as an argument list (the string is split like a shell would, but
    no shell runs it), with the constraints where pip takes them."""
    words = shlex.split(command)
    arguments = [python, "-m", "pip", *words, "--prefer-binary"]
    if index_url:
        arguments += ["--index-url", index_url]
    if words and words[0] in PIP_SUBCOMMANDS_WITH_CONSTRAINTS:
        arguments += ["--constraint", constraints_file()]
    return arguments


def _refuse_when_exposed() -> None:
    bound = context.current()
    flags = bound.flags
    if flags is None or not bound.serving:
        return  # an installer, or an extension's own start-up
    exposed = bool(getattr(flags, "share", False) or getattr(flags, "listen", False) or getattr(flags, "ngrok", None)
                   or getattr(flags, "server_name", None))
    if exposed and not getattr(flags, "enable_insecure_extension_access", False):
        raise RuntimeError("Installing packages is refused while the server is reachable from other machines "
                           "(add --enable-insecure-extension-access to allow it)")


def run_pip(command: str, desc: str | None = None, live: bool = False) -> str:
    """``pip <command>``; raises with pip's output when it fails. A no-op under ``--skip-install``."""
    if getattr(__getattr__("args"), "skip_install", False):
        return ""
    _refuse_when_exposed()
    if desc:
        print(f"Installing {desc}")
    done = subprocess.run(pip_command(command), capture_output=not live, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Couldn't install {desc or command}: pip exited with {done.returncode}\n"
                           f"{(done.stdout or '')[-2000:]}{(done.stderr or '')[-2000:]}")
    return done.stdout or ""


def run(command: str, desc: str | None = None, errdesc: str | None = None, custom_env: dict | None = None,
        live: bool = False) -> str:
    """A command (split like a shell would; no shell runs it)."""
    if desc:
        print(desc)
    done = subprocess.run(shlex.split(command), capture_output=not live, text=True, env=custom_env)
    if done.returncode != 0:
        raise RuntimeError(f"{errdesc or 'Error running command'}: {command}\n{(done.stderr or '')[-2000:]}")
    return done.stdout or ""


def git_tag() -> str:
    return "hanga"


def commit_hash() -> str:
    try:
        done = subprocess.run([git, "-C", script_path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "<none>"
    return done.stdout.strip() if done.returncode == 0 else "<none>"
