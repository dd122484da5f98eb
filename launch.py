"""A1111 facade: the ``launch`` module extensions' ``install.py`` files import (``is_installed``,
``run_pip`` …). Importing it has no side effects; Hanga starts from ``webui.py``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys
from types import SimpleNamespace

python = sys.executable
args = SimpleNamespace(skip_install=os.environ.get("HANGA_SKIP_INSTALL") == "1")


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


def run_pip(command: str, desc: str | None = None, live: bool = False) -> str:
    """``pip <command>`` without a shell (the command string is split like a shell would)."""
    if args.skip_install:
        return ""
    if desc:
        print(f"Installing {desc}")
    done = subprocess.run([python, "-m", "pip", *shlex.split(command), "--prefer-binary"], capture_output=not live,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Couldn't install {desc or command}: pip exited with {done.returncode}\n"
                           f"{(done.stdout or '')[-2000:]}{(done.stderr or '')[-2000:]}")
    return done.stdout or ""


def run(command: str, desc: str | None = None, errdesc: str | None = None, live: bool = False) -> str:
    done = subprocess.run(shlex.split(command), capture_output=not live, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{errdesc or 'Error running command'}: {command}")
    return done.stdout or ""


def git_tag() -> str:
    return "hanga"


def commit_hash() -> str:
    return "<none>"
